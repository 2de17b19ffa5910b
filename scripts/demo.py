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

    def show(*cli_args, why):
        print(f"\n{why}\n$ gpusleep {' '.join(cli_args)}")
        p = subprocess.run([cli, *cli_args], env=env, capture_output=True, text=True)
        sys.stdout.write(p.stdout + p.stderr)
        if p.returncode != 0:
            raise SystemExit(f"gpusleep {' '.join(cli_args)} failed")

    if gpu:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True).stdout.strip()
        print(f"\n== on {name} ==")
        free = nvidia_free_bytes
        argv = [graph_program, "--mib", str(args.mib), "--chunks", "4"]
    else:
        print("\n== no GPU on this machine: the library runs over the emulated CUDA driver the tests "
              "use (device memory kept in host memory; the same library, the same gpusleep "
              "command) ==")
        env.update(LD_LIBRARY_PATH=os.path.join(args.build, "fake"),
                   FAKECUDA_STATE=os.path.join(tmp.name, "gpu-state"),
                   FAKECUDA_MEMORY=str(4 * GiB))
        smi = os.path.join(args.build, "fake", "fakecuda-smi")
        free = lambda: fake_free_bytes(smi, env)  # noqa: E731
        argv = [os.path.join(args.build, "tests", "e2e", "emulated_host")]

    print(f"\n1. Start an unmodified CUDA program with the library preloaded; every allocation it "
          f"makes is tagged 'weights':\n$ gpusleep run --tag weights -- "
          f"{' '.join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in argv)}")
    host = Host(cli, argv, env, tag="weights")
    try:
        if gpu:
            ready = host.expect("READY", timeout=300)
            nbytes = int(re.search(r"bytes=(\d+)", ready).group(1))
            print(f"   The program allocated {gib(nbytes)} with cudaMalloc, filled it with kernels "
                  "and captured a CUDA graph over it.")
        else:
            host.expect("READY")
            for i, size in enumerate((512 << 20, 256 << 20, 3_000_000)):
                host.send(f"alloc buf{i} {size} {i + 1}")
            print("   The program allocated three buffers with cudaMalloc (512 MiB, 256 MiB and "
                  "3,000,000 bytes) and filled each with its own pattern.")
        show("status", why="2. Ask the program, from another process, what the library manages in "
             "it: per tag, the policy (offload: copied to host memory while asleep), the state, "
             "the regions and their bytes:")
        free_awake = free()
        show("sleep", why="3. Put it to sleep: the contents are copied to host memory and the GPU "
             "memory is given back to the driver:")
        free_asleep = free()
        print(f"   The device's free memory, read from outside the program: {gib(free_awake)} "
              f"before, {gib(free_asleep)} now (+{gib(free_asleep - free_awake)}).")
        if not gpu:
            reply = host.send("touch buf0")
            print(f"   The memory is really gone: the program reading buf0 directly now faults "
                  f"(its reply: \"{reply}\"). A CUDA call the program made now would wait for the "
                  "wake instead.")
        show("status", why="4. The status again: the tag is asleep, its bytes held in the host "
             "mirror:")
        show("wake", why="5. Wake it: new GPU memory is mapped at the same addresses and the "
             "contents copied back:")
        print(f"   The device's free memory is back to {gib(free())}.")
        print("\n6. The program checks its data, byte for byte:")
        if gpu:
            print(f"   {host.send('verify')}  (every buffer as written, and the graph replays "
                  "to the same result)")
        else:
            for i in range(3):
                print(f"   {host.send(f'check buf{i}')}  (buf{i}: every byte as before)")
    finally:
        host.close()
    print("\nDone: the program's memory slept and woke at the same addresses, and it never knew.")


if __name__ == "__main__":
    main()
