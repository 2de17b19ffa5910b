#!/usr/bin/env python3
"""The demo: an unmodified CUDA program under gpusleep, slept and woken from another process.
With a GPU it runs tests/gpu/graph_program (buffers filled by kernels, a captured CUDA graph) and
reads the driver's free memory with nvidia-smi; without one it says so and runs the same flow on
the emulated driver with tests/e2e/emulated_host."""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Host, fake_free_bytes, have_gpu, nvidia_free_bytes  # noqa: E402

GiB = 1 << 30


def gib(n):
    return f"{n / GiB:.2f} GiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--mib", type=int, default=2048, help="size of each of the GPU program's two inputs")
    ap.add_argument("--emulated", action="store_true", help="use the emulated driver even with a GPU")
    args = ap.parse_args()
    cli = os.path.join(args.build, "bin", "gpusleep")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))
    gpu = have_gpu() and not args.emulated
    graph_program = os.path.join(args.build, "tests", "gpu", "gpu_graph_program")
    if gpu and not os.path.exists(graph_program):
        print("a GPU is here but the GPU programs were not built (nvcc not found): "
              "running on the emulated driver")
        gpu = False

    def show(*cli_args):
        print(f"\n$ gpusleep {' '.join(cli_args)}")
        p = subprocess.run([cli, *cli_args], env=env, capture_output=True, text=True)
        sys.stdout.write(p.stdout + p.stderr)
        if p.returncode != 0:
            raise SystemExit(f"gpusleep {' '.join(cli_args)} failed")

    if gpu:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True).stdout.strip()
        print(f"== gpusleep demo on {name} ==")
        free = nvidia_free_bytes
        argv = [graph_program, "--mib", str(args.mib), "--chunks", "4"]
    else:
        print("== gpusleep demo: no GPU on this machine, so the library runs over the emulated "
              "CUDA driver (device memory kept in host memory; same library, same CLI) ==")
        env.update(LD_LIBRARY_PATH=os.path.join(args.build, "fake"),
                   FAKECUDA_STATE=os.path.join(tmp.name, "gpu-state"),
                   FAKECUDA_MEMORY=str(4 * GiB))
        smi = os.path.join(args.build, "fake", "fakecuda-smi")
        free = lambda: fake_free_bytes(smi, env)  # noqa: E731
        argv = [os.path.join(args.build, "tests", "e2e", "emulated_host")]

    print(f"\n1. Start an unmodified program under the library:\n$ gpusleep run --tag weights -- "
          f"{' '.join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in argv)}")
    host = Host(cli, argv, env, tag="weights")
    try:
        if gpu:
            ready = host.expect("READY", timeout=300)
            nbytes = int(re.search(r"bytes=(\d+)", ready).group(1))
            print(f"   the program allocated {gib(nbytes)} with cudaMalloc, filled it by kernel "
                  "and captured a CUDA graph")
        else:
            host.expect("READY")
            for i, size in enumerate((512 << 20, 256 << 20, 3_000_000)):
                host.send(f"alloc buf{i} {size} {i + 1}")
            print("   the program allocated 3 buffers (768 MiB and change) with cudaMalloc and "
                  "filled them")
        show("status")
        free_awake = free()
        show("sleep")
        free_asleep = free()
        print(f"   device free memory, read from outside the process: {gib(free_awake)} -> "
              f"{gib(free_asleep)} (+{gib(free_asleep - free_awake)})")
        if not gpu:
            print(f"   the program touching its memory now: {host.send('touch buf0')} "
                  "(an asleep range faults)")
        show("status")
        show("wake")
        print(f"   device free memory: {gib(free())}")
        print("\n2. The program checks its data:")
        if gpu:
            print("   " + host.send("verify"))
        else:
            for i in range(3):
                print("   " + host.send(f"check buf{i}"))
    finally:
        host.close()
    print("\ndone: the program never knew.")


if __name__ == "__main__":
    main()
