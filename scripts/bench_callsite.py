#!/usr/bin/env python3
"""What reading an allocation's call site costs: a Python program recurses 50 frames deep and
allocates through the CUDA runtime, with the GIL held (frames read on the allocating thread) and
released (read by the library's helper thread, as for PyTorch), with GPUSLEEP_PYTHON_STACKS on
and off. The difference per allocation is the cost. Runs over the emulated driver (the cost is
CPU work; no GPU needed) unless --real is given.

With --rules FILE (a preset such as control/presets/vllm.json), every allocation is also
matched against those rules, so the difference includes what the rules cost.

  scripts/bench_callsite.py [--build BUILD] [--depth 50] [--count 2000] [--rules FILE]
                            [--out FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

PROGRAM = r'''
import ctypes, sys, time
rt = (ctypes.PyDLL if sys.argv[1] == "gil" else ctypes.CDLL)("libcudart.so.13")
depth, count = int(sys.argv[2]), int(sys.argv[3])
ptr = ctypes.c_void_p()
def allocate_at(level):
    if level > 0:
        return allocate_at(level - 1)
    # warm up, then time pairs of cudaMalloc (region, call site read) and cudaFree
    for _ in range(50):
        rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(2 << 20)); rt.cudaFree(ptr)
    t = time.perf_counter()
    for _ in range(count):
        rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(2 << 20)); rt.cudaFree(ptr)
    return (time.perf_counter() - t) / count
print(allocate_at(depth - 2))  # main and allocate_at's first frame count too
'''


def run(args, gil, stacks):
    env = dict(os.environ)
    if not args.real:
        env["LD_LIBRARY_PATH"] = os.path.join(args.build, "fake")
        env["FAKECUDA_STATE"] = os.path.join(args.tmp, "state")
    env["LD_PRELOAD"] = os.path.join(args.build, "lib", "libgpusleep.so")
    env["GPUSLEEP_PYTHON_STACKS"] = "1" if stacks else "0"
    env["GPUSLEEP_CONTROL"] = "0"
    env["GPUSLEEP_EAGER_MIRRORS"] = "0"
    if args.rules and stacks:
        env["GPUSLEEP_RULES"] = args.rules
    best = None
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", PROGRAM, "gil" if gil else "nogil",
                              str(args.depth), str(args.count)], env=env, check=True,
                             capture_output=True, text=True).stdout
        v = float(out.strip().splitlines()[-1])
        best = v if best is None else min(best, v)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="use the machine's CUDA driver")
    ap.add_argument("--rules", help="a rules file matched at every allocation (with stacks)")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        report = {"depth": args.depth, "count": args.count, "rules": args.rules,
                  "driver": "real" if args.real else "emulated"}
        for gil in (True, False):
            off = run(args, gil, False)
            on = run(args, gil, True)
            key = "gil_held" if gil else "gil_released"
            report[key] = {"us_per_alloc_without_stacks": off * 1e6,
                           "us_per_alloc_with_stacks": on * 1e6,
                           "call_site_us": (on - off) * 1e6}
            print(f"{key:12s}: {args.depth}-frame stack read in {(on - off) * 1e6:6.1f} us per "
                  f"allocation ({off * 1e6:.1f} us without, {on * 1e6:.1f} us with)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
