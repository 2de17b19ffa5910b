#!/usr/bin/env python3
"""Multi-GPU sleep and wake, on a machine with two GPUs (scripts/multigpu.sh builds and runs it):

1. Tensor parallel: one process per GPU (tests/gpu/tp_program.py: a weight shard, a KV buffer and
   a CUDA graph ending in an NCCL all-reduce), started with `gpusleep run --preset nccl`. Each
   cycle sleeps one rank alone, then every rank with `gpusleep sleep --all`; checks from outside
   that each GPU's memory was released; wakes; replays the graphs: the all-reduced outputs must
   be identical. Reports the time to sleep all GPUs in parallel against one (target: 1.2x or less).
2. Peer access: one process on both GPUs (tests/gpu/peer_program.py, CuPy) whose kernel on GPU 0
   reads a buffer on GPU 1; after sleep and wake it still reads the same bytes.

With one GPU, part 1 runs a single rank (the all-reduce still goes through NCCL) and part 2 is
skipped; the report says so.

  python3 scripts/multigpu.py --build BUILD --out DIR [--cycles 3] [--kv-gib 4]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Host, gpu_count, nvidia_free_bytes, only_result, run_cli  # noqa: E402

TP_PROGRAM = os.path.join(ROOT, "tests", "gpu", "tp_program.py")
PEER_PROGRAM = os.path.join(ROOT, "tests", "gpu", "peer_program.py")
GiB = 1 << 30
# NVLink multicast stays off: a program using it can take a shared host's GPUs out of service.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}


class Run:
    def __init__(self, args):
        self.args = args
        self.cli_path = os.path.join(args.build, "bin", "gpusleep")
        self.tmp = tempfile.mkdtemp(prefix="gpusleep-multigpu-")
        self.env = dict(os.environ, **NO_MULTICAST)
        self.env["GPUSLEEP_RUNTIME_DIR"] = os.path.join(self.tmp, "run")
        self.failures = []

    def cli(self, *args):
        rc, out, err = run_cli(self.cli_path, args, self.env)
        if rc != 0:
            raise SystemExit(f"gpusleep {' '.join(args)} failed: {err} {out}")
        return out

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
            print(f"  FAILED: {what}", flush=True)

    def verify(self, hosts, label):
        for h in hosts:
            h.send("verify", expect=None)
        for rank, h in enumerate(hosts):
            answer = h.expect("OK verify", timeout=120)
            self.check(" match" in answer, f"{label}: rank {rank} says {answer!r}")

    def tensor_parallel(self, world):
        store = os.path.join(self.tmp, "store")
        hosts = []
        for rank in range(world):
            hosts.append(Host(self.cli_path,
                              [sys.executable, TP_PROGRAM, "--rank", str(rank), "--world",
                               str(world), "--store", store, "--kv-gib", str(self.args.kv_gib)],
                              self.env, tag="weights", extra=["--preset", "nccl"]))
        try:
            for h in hosts:
                h.expect("READY", timeout=600)
            self.verify(hosts, "before any sleep")
            unsleepable = {}
            for rank, h in enumerate(hosts):
                status = only_result(self.cli("status", "--pid", str(h.pid)))
                unsleepable[rank] = {u["kind"]: u["bytes"] for u in status["unsleepable"]
                                     if u["bytes"]}
            cycles = []
            for cycle in range(1, self.args.cycles + 1):
                free = [nvidia_free_bytes(d) for d in range(world)]
                one = only_result(self.cli("sleep", "--pid", str(hosts[0].pid)))
                freed_one = nvidia_free_bytes(0) - free[0]
                self.check(freed_one >= 0.99 * one["bytes"] - (2 << 20),
                           f"cycle {cycle}: rank 0 alone freed {freed_one} of {one['bytes']}")
                self.cli("wake", "--pid", str(hosts[0].pid))
                self.verify(hosts, f"cycle {cycle}, after rank 0 alone")

                t = time.time()
                slept = self.cli("sleep", "--all")
                all_wall = time.time() - t
                freed = [nvidia_free_bytes(d) - free[d] for d in range(world)]
                by_pid = {e["pid"]: e for e in slept["processes"]}
                results = [by_pid[h.pid]["result"] for h in hosts]
                for rank in range(world):
                    self.check(freed[rank] >= 0.99 * results[rank]["bytes"] - (2 << 20),
                               f"cycle {cycle}: GPU {rank} freed {freed[rank]} of "
                               f"{results[rank]['bytes']}")
                t = time.time()
                woke = self.cli("wake", "--all")
                wake_wall = time.time() - t
                self.verify(hosts, f"cycle {cycle}, after sleep --all")
                row = {
                    "cycle": cycle,
                    "one_sleep_ms": one["duration_ms"],
                    "all_sleep_ms": max(r["duration_ms"] for r in results),
                    "all_sleep_wall_s": all_wall,
                    "all_wake_ms": max(e["result"]["duration_ms"] for e in woke["processes"]),
                    "all_wake_wall_s": wake_wall,
                    "bytes_per_gpu": [r["bytes"] for r in results],
                    "freed_per_gpu": freed,
                }
                cycles.append(row)
                print(f"  cycle {cycle}: one GPU slept in {row['one_sleep_ms']:.0f} ms; all "
                      f"{world} in {row['all_sleep_ms']:.0f} ms (the slowest process; "
                      f"{all_wall:.2f} s for the command); woke all in {row['all_wake_ms']:.0f} "
                      f"ms; freed " + ", ".join(f"GPU {d} {f / GiB:.2f} GiB"
                                                for d, f in enumerate(freed))
                      + "; all-reduce outputs identical", flush=True)
            one = statistics.median(c["one_sleep_ms"] for c in cycles)
            both = statistics.median(c["all_sleep_ms"] for c in cycles)
            ratio = both / one
            if world >= 2:
                self.check(ratio <= 1.2, f"sleeping {world} GPUs took {ratio:.2f}x one")
            return {"world": world, "cycles": cycles, "parallel_ratio": ratio,
                    "unsleepable_bytes": unsleepable}
        finally:
            for h in hosts:
                h.close()

    def peer_access(self):
        h = Host(self.cli_path, [sys.executable, PEER_PROGRAM], self.env, tag="weights")
        try:
            ready = h.expect("READY", timeout=300)
            self.verify([h], "peer read before any sleep")
            status = only_result(self.cli("status", "--pid", str(h.pid)))
            self.check(status["peers"] == [{"accessor": 0, "owner": 1}],
                       f"peer access seen as {status['peers']}")
            free1 = nvidia_free_bytes(1)
            slept = only_result(self.cli("sleep", "--pid", str(h.pid)))
            freed = nvidia_free_bytes(1) - free1
            self.check(freed >= 0.99 * int(ready.split("=")[1]) - (2 << 20),
                       f"GPU 1 freed {freed} bytes")
            self.cli("wake", "--pid", str(h.pid))
            answer = h.send("verify")
            self.check(" match" in answer, f"peer read after wake: {answer!r}")
            print(f"  peer access: slept {slept['bytes'] / GiB:.2f} GiB (GPU 1 freed "
                  f"{freed / GiB:.2f} GiB); after wake GPU 0's kernel reads GPU 1's buffer: "
                  f"{answer}", flush=True)
            return {"slept_bytes": slept["bytes"], "freed_bytes": freed, "after_wake": answer}
        finally:
            h.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build-gpu")
    ap.add_argument("--out", default="multigpu-results")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--kv-gib", type=float, default=4.0)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    os.makedirs(args.out, exist_ok=True)
    run = Run(args)
    gpus = gpu_count()
    world = min(gpus, 2)
    print(f"{gpus} GPUs; tensor parallel over {world}", flush=True)
    report = {"gpus": gpus, "tensor_parallel": run.tensor_parallel(world)}
    if gpus >= 2:
        report["peer_access"] = run.peer_access()
    else:
        print("  peer access: skipped (needs two GPUs)", flush=True)
        report["peer_access"] = None
    report["failures"] = run.failures
    with open(os.path.join(args.out, "multigpu.json"), "w") as f:
        json.dump(report, f, indent=1)
    tp = report["tensor_parallel"]
    print(f"MULTIGPU {'PASSED' if not run.failures else 'FAILED'}: {world} ranks, sleeping all "
          f"took {tp['parallel_ratio']:.2f}x one (median of {len(tp['cycles'])} cycles); "
          f"not sleepable per rank: {tp['unsleepable_bytes']}"
          + ("" if gpus >= 2 else "; one GPU: the two-GPU parts were not run"), flush=True)
    return 0 if not run.failures else 1


if __name__ == "__main__":
    sys.exit(main())
