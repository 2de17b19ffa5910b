#!/usr/bin/env python3
"""Soak: sleep and wake a running PyTorch workload (tests/gpu/busy_program.py) N times while it
computes, checking every cycle that the driver saw the memory freed, that the workload made
progress between cycles with every result bit-identical, and that GPU and host memory stay flat.

    python3 scripts/soak.py --build build-gpu --cycles 1000 --out soak.json

Prints one line per 100 cycles and a summary; writes the per-cycle figures as JSON. Exits 1 on a
mismatch, a failed operation, memory not freed, or memory growth.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "control", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import gpusleep as gs  # noqa: E402
from harness import read_progress, rss_bytes, wait_progress  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


class Nvml:
    """Device memory used, from outside the process (NVML, as nvidia-smi reads it)."""

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]

    def __init__(self, index=0):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise RuntimeError("nvmlInit failed")
        self.handle = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self.handle)) != 0:
            raise RuntimeError("no device")

    def free(self):
        m = Nvml.Memory()
        if self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) != 0:
            raise RuntimeError("nvmlDeviceGetMemoryInfo failed")
        return m.free


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-gpu")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--buffer-gib", type=float, default=0.5)
    ap.add_argument("--out", default="soak.json")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="gpusleep-soak-")
    env = dict(os.environ)
    env["GPUSLEEP_RUNTIME_DIR"] = os.path.join(tmp, "run")
    os.environ["GPUSLEEP_RUNTIME_DIR"] = env["GPUSLEEP_RUNTIME_DIR"]
    progress = os.path.join(tmp, "progress")
    cli = os.path.join(args.build, "bin", "gpusleep")
    nvml = Nvml()
    host = subprocess.Popen(
        [cli, "run", "--tag", "weights", "--", sys.executable,
         os.path.join(ROOT, "tests", "gpu", "busy_program.py"), "--progress", progress,
         "--buffer-gib", str(args.buffer_gib)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = host.stdout.readline().strip()
    if not ready.startswith("READY"):
        print(f"the workload did not start: {ready!r}")
        return 1
    proc = gs.attach(pid=host.pid, timeout=120)
    it, _ = wait_progress(progress, 5)

    cycles = []
    failures = []
    t_start = time.time()
    for cycle in range(1, args.cycles + 1):
        before_it, _ = read_progress(progress)
        free_awake = nvml.free()
        try:
            slept = proc.sleep()
            free_asleep = nvml.free()
            woke = proc.wake()
        except gs.GpusleepError as e:
            failures.append(f"cycle {cycle}: {e}")
            break
        freed = free_asleep - free_awake
        if freed < 0.99 * slept["bytes"] - 2 * MiB:
            failures.append(f"cycle {cycle}: freed {freed} of {slept['bytes']} bytes")
        it, bad = wait_progress(progress, before_it)  # it computed again, results checked
        if bad:
            failures.append(f"cycle {cycle}: {bad} mismatches")
        cycles.append({
            "cycle": cycle, "iterations": it, "mismatches": bad,
            "sleep_ms": slept["duration_ms"], "wake_ms": woke["duration_ms"],
            "bytes": slept["bytes"], "freed_bytes": freed,
            "gpu_free_awake": free_awake, "host_rss": rss_bytes(host.pid),
        })
        if cycle % 100 == 0 or cycle == 1:
            c = cycles[-1]
            print(f"cycle {cycle}: sleep {c['sleep_ms']:.1f} ms, wake {c['wake_ms']:.1f} ms, "
                  f"{it} iterations, {bad} mismatches, GPU free {free_awake / GiB:.3f} GiB, "
                  f"host RSS {c['host_rss'] / GiB:.3f} GiB", flush=True)
        if failures:
            break
    elapsed = time.time() - t_start
    status = proc.status()
    host.stdin.write("exit\n")
    host.stdin.flush()
    done = host.stdout.readline().strip()
    host.wait(timeout=120)

    # Flat: after the first ten cycles (allocator and mirrors settled), GPU free memory and host
    # RSS move by less than 64 MiB.
    settled = cycles[10:] if len(cycles) > 20 else cycles
    gpu_drift = max(c["gpu_free_awake"] for c in settled) - min(c["gpu_free_awake"] for c in settled)
    rss_drift = max(c["host_rss"] for c in settled) - min(c["host_rss"] for c in settled)
    if gpu_drift > 64 * MiB:
        failures.append(f"GPU free memory moved by {gpu_drift / MiB:.1f} MiB")
    if rss_drift > 64 * MiB:
        failures.append(f"host RSS moved by {rss_drift / MiB:.1f} MiB")
    if done != f"DONE iterations={read_progress(progress)[0]} mismatches=0":
        failures.append(f"workload ended with {done!r}")
    sleeps = sorted(c["sleep_ms"] for c in cycles)
    wakes = sorted(c["wake_ms"] for c in cycles)
    result = {
        "cycles": len(cycles), "seconds": elapsed, "bytes_per_cycle": cycles[0]["bytes"],
        "iterations": read_progress(progress)[0], "mismatches": read_progress(progress)[1],
        "sleep_ms_median": sleeps[len(sleeps) // 2], "sleep_ms_max": sleeps[-1],
        "wake_ms_median": wakes[len(wakes) // 2], "wake_ms_max": wakes[-1],
        "gpu_free_drift_bytes": gpu_drift, "host_rss_drift_bytes": rss_drift,
        "host_rss_first": cycles[0]["host_rss"], "host_rss_last": cycles[-1]["host_rss"],
        "gate": status.get("gate"), "failures": failures, "per_cycle": cycles,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"SOAK {'PASSED' if not failures else 'FAILED'}: {len(cycles)} cycles of "
          f"{result['bytes_per_cycle'] / GiB:.2f} GiB in {elapsed:.0f} s while the workload ran "
          f"{result['iterations']} checked iterations, {result['mismatches']} mismatches; sleep "
          f"median {result['sleep_ms_median']:.1f} ms (max {result['sleep_ms_max']:.1f}), wake "
          f"median {result['wake_ms_median']:.1f} ms (max {result['wake_ms_max']:.1f}); GPU free "
          f"memory drift {gpu_drift / MiB:.1f} MiB, host RSS drift {rss_drift / MiB:.1f} MiB "
          f"({result['host_rss_first'] / GiB:.3f} -> {result['host_rss_last'] / GiB:.3f} GiB)")
    for f in failures[:10]:
        print("  " + f)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
