"""One rank of a tensor-parallel server, written without gpusleep in mind: a shard of the weights,
a KV-like buffer and a decoding step captured in a CUDA graph that ends in an NCCL all-reduce. Run
once per GPU:

  python3 tp_program.py --rank R --world N --store FILE [--kv-gib G]

stdout "READY bytes=N" once set up, then one line per command on stdin:
  verify   replay the graph (every rank must be sent it: the all-reduce is collective) and
           compare the all-reduced output with the one taken at start: "OK verify match"
  exit
"""
import argparse
import sys

import torch
import torch.distributed as dist
from cuda_graph import capture


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--kv-gib", type=float, default=4.0)
    args = ap.parse_args()
    torch.cuda.set_device(args.rank)
    dev = torch.device("cuda", args.rank)
    torch.backends.cuda.matmul.allow_tf32 = False
    dist.init_process_group("nccl", init_method=f"file://{args.store}", rank=args.rank,
                            world_size=args.world, device_id=dev)

    gen = torch.Generator(device=dev).manual_seed(100 + args.rank)
    shard = args.dim // args.world
    # Column-parallel then row-parallel, as a transformer MLP is split across GPUs.
    up = [torch.randn(args.dim, shard, device=dev, generator=gen) / args.dim**0.5
          for _ in range(args.layers)]
    down = [torch.randn(shard, args.dim, device=dev, generator=gen) / shard**0.5
            for _ in range(args.layers)]
    kv = torch.randn(int(args.kv_gib * (1 << 30)) // 4, device=dev, generator=gen)
    x = torch.randn(32, args.dim, device=dev,
                    generator=torch.Generator(device=dev).manual_seed(7))
    context = kv[: 32 * args.dim].view(32, args.dim)

    def step(h):
        for u, d in zip(up, down):
            partial = torch.tanh(h @ u) @ d
            dist.all_reduce(partial)
            h = torch.tanh(partial + context)
        return h

    static_x = x.clone()
    graph, static_out = capture(step, static_x)
    reference = static_out.clone()
    total = sum(t.numel() * 4 for t in up + down + [kv, x])
    print(f"READY bytes={total}", flush=True)

    for line in sys.stdin:
        command = line.strip()
        if command == "verify":
            graph.replay()
            torch.cuda.synchronize()
            same = torch.equal(static_out, reference)
            print(f"OK verify {'match' if same else 'differs'}", flush=True)
        elif command == "exit":
            break
        elif command:
            print(f"ERR unknown command {command}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
