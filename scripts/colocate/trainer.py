"""The trainer of the co-location benchmark, knowing nothing of gpusleep: an MLP with its
gradients and Adam state, a replay buffer the steps sample from, and real training steps.

One shot (the default): takes at least --gib GiB of the GPU (the replay buffer fills what the
model leaves), runs --steps steps, prints "DONE peak_bytes=N steps=K seconds=S loss=L" and exits
0, or exits 1 when the memory is not there.

Long-lived (--serve), for a trainer that takes turns with the server: builds the model, its
gradients and Adam state (build_weights) and a --replay-gib replay buffer (build_replay), prints
"READY weights_bytes=N replay_bytes=M", then answers commands on stdin:
  train  run --steps steps (activations in the step, freed when it ends):
         "DONE checksum=HASH losses=L1,L2,... peak_bytes=N seconds=S"; HASH covers every
         parameter's bits, so the same sequence of trains gives the same HASHes exactly when
         model, optimizer state and replay buffer came through intact
  exit
scripts/colocate/trainer_rules.json tags build_weights' allocations `weights` and
build_replay's `replay`; the steps' allocations stay `default`.
"""
import argparse
import hashlib
import os
import sys
import time

# Bit-identical steps from run to run: deterministic cuBLAS needs this before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

WIDTH, DEPTH, BATCH = 8192, 8, 8192


def build_weights():
    """The model, its gradients and Adam's state, all allocated here (Adam's state eagerly, as
    it would otherwise appear at the first step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)]).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
        opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                        "exp_avg_sq": torch.zeros_like(p)}
    return model, opt


def build_replay(elems):
    """The replay buffer: experience the steps sample from, kept across turns."""
    g = torch.Generator(device="cuda").manual_seed(1)
    return torch.randn(elems, device="cuda", generator=g)


def train_step(model, opt, replay, i):
    start = (i * BATCH * WIDTH) % (replay.numel() - BATCH * WIDTH)
    x = replay[start:start + BATCH * WIDTH].view(BATCH, WIDTH)
    loss = model(x).square().mean()
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    return loss


@torch.no_grad()
def checksum(model):
    """A hash of every parameter's bits."""
    h = hashlib.sha256()
    for p in model.parameters():
        bits = p.detach().view(torch.int32).to(torch.int64)
        h.update(int(bits.sum()).to_bytes(16, "little", signed=True))
        h.update(int((bits * torch.arange(1, bits.numel() + 1, device=bits.device).view(
            bits.shape) % 1000003).sum()).to_bytes(16, "little", signed=True))
    return h.hexdigest()[:16]


def serve(args):
    torch.use_deterministic_algorithms(True)
    model, opt = build_weights()
    replay = build_replay(max(int(args.replay_gib * (1 << 30)) // 4, 2 * BATCH * WIDTH))
    torch.cuda.synchronize()
    weights = sum(t.numel() * t.element_size() for p in model.parameters()
                  for t in (p, p.grad, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]))
    print(f"READY weights_bytes={weights} replay_bytes={replay.numel() * 4}", flush=True)
    done = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "exit":
            print("OK exit", flush=True)
            return
        if cmd != "train":
            print("ERR unknown command", flush=True)
            continue
        t = time.perf_counter()
        losses = []
        for _ in range(args.steps):
            losses.append(train_step(model, opt, replay, done))
            done += 1
        torch.cuda.synchronize()
        text = ",".join(f"{float(v):.9g}" for v in losses)
        print(f"DONE checksum={checksum(model)} losses={text} "
              f"peak_bytes={torch.cuda.max_memory_reserved()} "
              f"seconds={time.perf_counter() - t:.3f}", flush=True)


def one_shot(args):
    t0 = time.time()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)]).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    try:
        # The rest of the budget as a replay buffer the steps sample from.
        fixed = sum(p.numel() for p in model.parameters()) * 4 * 4 + DEPTH * BATCH * WIDTH * 4 * 2
        buffer_elems = max(int(args.gib * (1 << 30)) - fixed, 1 << 30) // 4
        replay = torch.randn(buffer_elems, device="cuda")
        for i in range(args.steps):
            loss = train_step(model, opt, replay, i)
        torch.cuda.synchronize()
    except torch.OutOfMemoryError as e:
        print(f"OOM {e}", flush=True)
        sys.exit(1)
    peak = torch.cuda.max_memory_reserved()
    print(f"DONE peak_bytes={peak} steps={args.steps} seconds={time.time() - t0:.2f} "
          f"loss={loss.item():.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=62.0, help="one shot: GiB of the GPU to take")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per run (one shot, default 6) or per train (--serve, default 3)")
    ap.add_argument("--serve", action="store_true", help="long-lived: commands on stdin")
    ap.add_argument("--replay-gib", type=float, default=20.0, help="--serve: the replay buffer")
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 3 if args.serve else 6
    if args.serve:
        serve(args)
    else:
        one_shot(args)


if __name__ == "__main__":
    main()
