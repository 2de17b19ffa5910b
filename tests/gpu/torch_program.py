"""A PyTorch program that knows nothing of gpusleep: weights, a large KV-like buffer and a
decode step captured in a CUDA graph. The GPU test drives it over stdin and tags its phases
from outside (phase tagging): it prints a line and waits before each phase.

  stdout "PHASE weights|kv|graph"  then waits for any line on stdin
  stdout "READY bytes=..."         then answers commands:
    verify     replay the graph; compare its output and the weights with the references
    refill_kv  rewrite the KV buffer the way the program first wrote it (after a discard)
    exit
"""
import argparse
import sys

import torch
from cuda_graph import capture


def phase(name):
    print(f"PHASE {name}", flush=True)
    sys.stdin.readline()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--kv-gib", type=float, default=4.0)
    args = ap.parse_args()
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False

    phase("weights")
    gen = torch.Generator(device=dev).manual_seed(1234)
    weights = [torch.randn(args.dim, args.dim, device=dev, generator=gen) / args.dim**0.5
               for _ in range(args.layers)]
    weights_ref = [w.cpu() for w in weights]

    phase("kv")
    kv_elems = int(args.kv_gib * (1 << 30)) // 4
    kv = torch.empty(kv_elems, device=dev)

    def fill_kv():
        g = torch.Generator(device=dev).manual_seed(99)
        kv.normal_(generator=g)

    fill_kv()
    rows = 4096
    keys = kv[: rows * args.dim].view(rows, args.dim)
    vals = kv[rows * args.dim: 2 * rows * args.dim].view(rows, args.dim)

    phase("graph")
    static_x = torch.randn(16, args.dim, device=dev, generator=gen)

    def step(x):
        h = x
        for w in weights:
            h = torch.tanh(h @ w)
        att = torch.softmax(h @ keys.T / args.dim**0.5, dim=-1) @ vals
        return h + att

    graph, static_out = capture(step, static_x, warmup=3)
    out_ref = static_out.cpu()
    total = sum(w.numel() * 4 for w in weights) + kv.numel() * 4
    print(f"READY bytes={total}", flush=True)

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        if cmd == "refill_kv":
            fill_kv()
            torch.cuda.synchronize()
            print("OK refill_kv", flush=True)
        elif cmd == "verify":
            static_out.zero_()
            graph.replay()
            torch.cuda.synchronize()
            out_ok = torch.equal(static_out.cpu(), out_ref)
            w_ok = all(torch.equal(w.cpu(), r) for w, r in zip(weights, weights_ref))
            print(f"OK verify weights={'match' if w_ok else 'differs'} "
                  f"output={'match' if out_ok else 'differs'}", flush=True)
        else:
            print("ERR unknown command", flush=True)


if __name__ == "__main__":
    main()
