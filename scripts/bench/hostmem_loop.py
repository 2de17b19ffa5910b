"""A GPU-bound loop that knows nothing of gpusleep, for measuring what host-mirror preparation
costs the program around it. It allocates --gib GiB of tensors (as a model's weights would be),
prints "READY", then at once runs steps for --seconds: each step launches --small tiny kernels (the
host thread's launch path, which slows when the CPUs are busy) and one large matmul, and waits
for them. Prints "STEPS n=N seconds=S per_second=R" and one "SECOND i steps=N" line per second.
"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--matmul", type=int, default=4096)
    args = ap.parse_args()
    hold = []
    left = int(args.gib * (1 << 30))
    while left > 0:
        n = min(left, 1 << 30)
        hold.append(torch.ones(n // 2, dtype=torch.bfloat16, device="cuda"))
        left -= n
    a = torch.randn(args.matmul, args.matmul, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(args.matmul, args.matmul, device="cuda", dtype=torch.bfloat16)
    x = torch.zeros(256, device="cuda")
    torch.cuda.synchronize()
    print("READY", flush=True)
    start = time.perf_counter()
    steps = 0
    second = 0
    in_second = 0
    while True:
        for _ in range(args.small):
            x.add_(1.0)
        c = a @ b
        torch.cuda.synchronize()
        steps += 1
        in_second += 1
        t = time.perf_counter() - start
        if t >= second + 1:
            print(f"SECOND {second} steps={in_second}", flush=True)
            second += 1
            in_second = 0
        if t >= args.seconds:
            break
    del c
    print(f"STEPS n={steps} seconds={t:.3f} per_second={steps / t:.3f}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
