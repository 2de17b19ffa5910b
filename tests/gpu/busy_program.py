"""A PyTorch program that never stops computing and knows nothing of gpusleep: a chain of matmuls
(cuBLAS) and tanh over its weights, alternately run eagerly and replayed from a CUDA graph, a
memset and a device-to-device copy of the result, a read over a large buffer, and a comparison
with references taken at start (a kernel and a device-to-host copy). Every iteration checks its
results bit for bit.

It publishes its progress in a file of two little-endian 64-bit counters, iterations and
mismatches, that another process reads without disturbing it. stdout: "READY bytes=N" once set
up; "DONE iterations=N mismatches=M" after "exit" on stdin.
"""
import argparse
import mmap
import os
import struct
import sys
import threading

import torch
from cuda_graph import capture


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--buffer-gib", type=float, default=2.0)
    ap.add_argument("--progress", required=True)
    args = ap.parse_args()
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True)

    gen = torch.Generator(device=dev).manual_seed(7)
    weights = [torch.randn(args.dim, args.dim, device=dev, generator=gen) / args.dim**0.5
               for _ in range(args.layers)]
    x = torch.randn(64, args.dim, device=dev, generator=gen)
    buffer = torch.randn(int(args.buffer_gib * (1 << 30)) // 4, device=dev, generator=gen)
    scratch = torch.empty(64, args.dim, device=dev)

    def step(inp):
        h = inp
        for w in weights:
            h = torch.tanh(h @ w)
        return h

    ref = step(x).clone()
    buffer_ref = buffer.sum()

    static_in = x.clone()
    graph, static_out = capture(step, static_in)
    if not torch.equal(static_out, ref):
        print("ERR graph result differs from eager", flush=True)
        return 1

    fd = os.open(args.progress, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, 16)
    progress = mmap.mmap(fd, 16)
    stop = threading.Event()

    def read_stdin():
        for line in sys.stdin:
            if line.strip() == "exit":
                break
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    total = sum(t.numel() * 4 for t in weights + [x, buffer, scratch])
    print(f"READY bytes={total}", flush=True)

    iterations = 0
    mismatches = 0
    while not stop.is_set():
        if iterations % 2:
            graph.replay()
            out = static_out
        else:
            out = step(x)
        scratch.zero_()
        scratch.copy_(out)
        same = torch.equal(scratch, ref) and torch.equal(buffer.sum(), buffer_ref)
        iterations += 1
        mismatches += 0 if same else 1
        progress[:16] = struct.pack("<QQ", iterations, mismatches)
    print(f"DONE iterations={iterations} mismatches={mismatches}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
