#!/usr/bin/env python3
"""An RL loop on Ray with gpusleep: in each step the rollout actors generate, are put to sleep
with one job-wide call, the trainer actors train on the GPU memory they gave back, and the
rollouts are woken with one call and generate again: the same output as before.

Each node's bundle of a placement group holds one rollout and one trainer (colocated, as verl and
OpenRLHF place them). A rollout actor runs its inference server under the library
(gpusleep.launch) and talks to it over stdin; the trainer runs its training program as a plain
child process, which needs the memory the rollout held.

  scripts/ray_rl_step.py --emulated [--nodes 2] [--steps 3]
      anywhere: a Ray cluster of --nodes nodes on this machine, each with its own emulated GPU
      (256 MiB); the server is tests/e2e/emulated_host holding 160 MiB, the trainer takes 200 MiB.
      Needs GPUSLEEP_TEST_CLI, GPUSLEEP_TEST_FAKE_DIR, GPUSLEEP_TEST_HOST and GPUSLEEP_LIBRARY
      (as CTest sets them), or --build DIR.
  scripts/ray_rl_step.py --gpu [--steps 3] [--kv-gib 100] [--train-gib 62]
      one GPU node, a rollout and a trainer per GPU: scripts/colocate/server.py (PyTorch, about
      20 GiB of weights and a static KV cache of --kv-gib) under --preset transformers, and
      scripts/colocate/trainer.py taking --train-gib; the defaults need the rollout's memory on a
      141 GB GPU. Needs a build tree (build/, or GPUSLEEP_LIBRARY), torch and transformers.

Prints one line per step and "RL-STEP OK" at the end; exits 1 if any output changed or a call
failed, 77 without Ray or (--gpu) without a GPU.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "control", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "ray"))

try:
    import ray
except ImportError:
    print("ray is not installed (scripts/setup-ray.sh installs it)")
    sys.exit(77)
from ray.util.placement_group import placement_group  # noqa: E402
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: E402

import gpusleep  # noqa: E402
import gpusleep.ray as gsr  # noqa: E402

MiB = 1 << 20


@ray.remote
class Rollout:
    """A rollout worker: an inference server under gpusleep, driven line by line."""

    def __init__(self, argv, preset=None, tag=None, env=None, setup=()):
        self.server = gpusleep.launch(argv, preset=preset, tag=tag, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      bufsize=1)
        self.ready = self._line("READY")
        for command in setup:
            self.ask(command)

    def _line(self, prefix):
        while True:
            line = self.server.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"the server exited (status {self.server.wait()}) "
                                   f"before '{prefix}'")
            if line.startswith(prefix):
                return line.strip()
            if line.startswith("ERR"):
                raise RuntimeError(f"the server said {line.strip()!r}")

    def ask(self, command, expect="OK"):
        self.server.popen.stdin.write(command + "\n")
        self.server.popen.stdin.flush()
        return self._line(expect)

    def close(self):
        self.server.popen.stdin.close()
        self.server.wait(60)


@ray.remote
class Trainer:
    """A trainer worker: each step runs the training program, which needs the GPU memory the
    rollout gave back, as a plain child process (not under the library)."""

    def __init__(self, argv, env=None):
        self.argv = argv
        self.env = dict(os.environ, **(env or {}))

    def train(self, stdin=""):
        t = time.monotonic()
        p = subprocess.run(self.argv, input=stdin, env=self.env, capture_output=True, text=True,
                           timeout=900)
        done = [line for line in p.stdout.splitlines() if line.startswith(("DONE", "OK"))]
        if p.returncode != 0 or not done or "\nERR" in "\n" + p.stdout:
            raise RuntimeError(f"training failed (status {p.returncode}): "
                               f"{(p.stdout + p.stderr)[-2000:]}")
        return done[-1], time.monotonic() - t


def emulated_profile(args):
    """Programs for the emulated driver: the server holds 160 MiB of its 256 MiB GPU, the
    trainer needs 200 MiB: it fits only while the rollout sleeps."""
    if args.build:
        build = os.path.abspath(args.build)
        os.environ.setdefault("GPUSLEEP_TEST_FAKE_DIR", os.path.join(build, "fake"))
        os.environ.setdefault("GPUSLEEP_TEST_HOST", os.path.join(build, "tests", "e2e",
                                                                 "emulated_host"))
        os.environ.setdefault("GPUSLEEP_TEST_CLI", os.path.join(build, "bin", "gpusleep"))
        os.environ.setdefault("GPUSLEEP_LIBRARY", os.path.join(build, "lib", "libgpusleep.so"))
    host = os.environ["GPUSLEEP_TEST_HOST"]
    env = {"LD_LIBRARY_PATH": os.environ["GPUSLEEP_TEST_FAKE_DIR"], "GPUSLEEP_COPY_CHUNK": "2M"}
    return {
        "server": dict(argv=[host], tag="weights", env=env,
                       setup=["alloc weights 134217728 1", "alloc graph 33554432 2"]),
        "generate": "check weights",
        "trainer": dict(argv=[host], env=env),
        "train_input": "alloc replay 209715200 3\ncheck replay\nexit\n",
        "bundle": {"CPU": 0.2}, "share": {"num_cpus": 0.1},
    }


def gpu_profile(args):
    server = os.path.join(ROOT, "scripts", "colocate", "server.py")
    trainer = os.path.join(ROOT, "scripts", "colocate", "trainer.py")
    return {
        "server": dict(argv=[sys.executable, server, "--kv-gib", str(args.kv_gib)],
                       preset="transformers", env=None, setup=()),
        "generate": "generate",
        "trainer": dict(argv=[sys.executable, trainer, "--gib", str(args.train_gib)], env=None),
        "train_input": "",
        "bundle": {"GPU": 1, "CPU": 1}, "share": {"num_gpus": 0.5, "num_cpus": 0.5},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--emulated", action="store_true")
    mode.add_argument("--gpu", action="store_true")
    ap.add_argument("--nodes", type=int, default=2, help="--emulated: nodes of the local cluster")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--build", help="--emulated: the build tree, when not given by environment")
    ap.add_argument("--kv-gib", type=float, default=100.0)
    ap.add_argument("--train-gib", type=float, default=62.0)
    ap.add_argument("--address", help="an existing Ray cluster (default: start one)")
    args = ap.parse_args()

    cluster = None
    if args.emulated:
        profile = emulated_profile(args)
        if args.address:
            ray.init(address=args.address)
        else:
            from ray_cluster import LocalCluster
            cluster = LocalCluster(nodes=args.nodes)
        nodes = args.nodes
    else:
        profile = gpu_profile(args)
        ray.init(address=args.address)
        nodes = int(ray.cluster_resources().get("GPU", 0))
        if nodes < 1:
            print("no GPU in this Ray cluster")
            return 77
    try:
        return run(profile, nodes, args.steps)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def run(profile, nodes, steps):
    # One bundle per node (per GPU), each holding a rollout and a trainer side by side.
    pg = placement_group([profile["bundle"]] * nodes, strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=300)

    def in_bundle(i):
        return dict(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i),
                    **profile["share"])

    t = time.monotonic()
    rollouts = [Rollout.options(**in_bundle(i)).remote(**profile["server"]) for i in range(nodes)]
    trainers = [Trainer.options(**in_bundle(i)).remote(**profile["trainer"])
                for i in range(nodes)]
    print(f"started {nodes} rollouts: {ray.get([r.__ray_ready__.remote() for r in rollouts])} "
          f"in {time.monotonic() - t:.1f} s", flush=True)
    job = gsr.select(actors=rollouts)
    gsr.warm_up(job)
    expected = ray.get([r.ask.remote(profile["generate"]) for r in rollouts])
    failed = False
    for step in range(steps):
        slept = gsr.sleep(job, deadline=120, all_or_nothing=True)
        if not slept.ok:
            print(slept.summary(), flush=True)
            return 1
        trained = ray.get([tr.train.remote(profile["train_input"]) for tr in trainers])
        woke = gsr.wake(job, deadline=120)
        if not woke.ok:
            print(woke.summary(), flush=True)
            return 1
        got = ray.get([r.ask.remote(profile["generate"]) for r in rollouts])
        same = got == expected
        failed |= not same
        print(f"step {step}: sleep {slept.seconds * 1000:.0f} ms ({slept.bytes / MiB:.0f} MiB, "
              f"slowest node {slept.slowest_node_seconds * 1000:.0f} ms), train "
              f"{max(s for _, s in trained):.2f} s, wake {woke.seconds * 1000:.0f} ms "
              f"(slowest node {woke.slowest_node_seconds * 1000:.0f} ms), "
              f"output {'unchanged' if same else 'CHANGED: ' + repr(got)}", flush=True)
    ray.get([r.close.remote() for r in rollouts])
    print("RL-STEP FAILED" if failed else "RL-STEP OK", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
