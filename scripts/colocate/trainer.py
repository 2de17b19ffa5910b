"""The trainer of the co-location benchmark: takes at least --gib GiB of the GPU (a replay buffer
plus a model, its gradients and Adam state) and runs real training steps. Prints
"DONE peak_bytes=N steps=K seconds=S" and exits 0, or exits 1 when the memory is not there."""
import argparse
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=62.0)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(0)
    width, depth, batch = 8192, 8, 8192
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)]).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    try:
        # The rest of the budget as a replay buffer the steps sample from.
        fixed = sum(p.numel() for p in model.parameters()) * 4 * 4 + depth * batch * width * 4 * 2
        buffer_elems = max(int(args.gib * (1 << 30)) - fixed, 1 << 30) // 4
        replay = torch.randn(buffer_elems, device="cuda")
        for i in range(args.steps):
            start = (i * batch * width) % (buffer_elems - batch * width)
            x = replay[start:start + batch * width].view(batch, width)
            loss = model(x).square().mean()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
    except torch.OutOfMemoryError as e:
        print(f"OOM {e}", flush=True)
        sys.exit(1)
    peak = torch.cuda.max_memory_reserved()
    print(f"DONE peak_bytes={peak} steps={args.steps} seconds={time.time() - t0:.2f} "
          f"loss={loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
