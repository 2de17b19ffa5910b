#!/usr/bin/env python3
"""What a job-wide call of gpusleep.ray costs over a local call, for 1, 4 and 16 nodes.

Each simulated node has its own socket directory and emulated GPU, and one process under the
library holding --mib MiB. Nodes are simulated because a machine cannot hold 16 real Ray nodes
without them fighting for its cores: --raylets real Ray nodes (ray.cluster_utils) carry the
simulated ones, each simulated node a custom resource of one raylet, and the node task reaches
its node through that resource (and the node's socket directory through the task's runtime
environment) instead of NodeAffinitySchedulingStrategy. Everything else is the real call:
planning, one task per node, the node's discovery and socket calls, ray.wait, the Result.

Per size it reports, over --cycles rounds (after one warm-up call), the medians of: a job-wide
status (the fan-out with almost no work on the nodes); a job-wide sleep; the sleep's slowest
node task's own time and slowest process's own socket call; and the overhead, the whole sleep
minus the slowest process's call (median and 90th percentile), and the whole sleep minus the
slowest node task (what the fan-out adds to the nodes' own work). The local line is the same
status and sleep sent directly over the socket. Prints one JSON line per size and a table.

  scripts/bench_ray.py --build build [--nodes 1,4,16] [--raylets 4] [--cycles 20] [--mib 16]
                       [--via agent|task]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "control", "python"))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import gpusleep  # noqa: E402
import gpusleep.ray as gsr  # noqa: E402


def start_host(build, directory, mib):
    """One emulated program under the library in its own socket directory and GPU."""
    os.makedirs(directory, exist_ok=True)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(build, "fake"),
               GPUSLEEP_RUNTIME_DIR=os.path.join(directory, "run"),
               FAKECUDA_STATE=os.path.join(directory, "gpu"), FAKECUDA_MEMORY=str(1 << 30))
    p = subprocess.Popen([os.path.join(build, "bin", "gpusleep"), "run", "--tag", "weights",
                          "--", os.path.join(build, "tests", "e2e", "emulated_host")],
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         bufsize=1)
    assert p.stdout.readline().strip() == "READY"
    p.stdin.write(f"alloc w {mib << 20} 1\n")
    p.stdin.flush()
    assert p.stdout.readline().startswith("OK alloc")
    return p, env["GPUSLEEP_RUNTIME_DIR"]


def simulate(names, dirs):
    """Points gpusleep.ray at the simulated nodes: `names` are their ids, `dirs` their socket
    directories."""
    gsr._alive_nodes = lambda: {n: "simulated" for n in names}
    gsr._task_options = lambda node: {
        "resources": {node: 0.001},
        "runtime_env": {"env_vars": {"GPUSLEEP_RUNTIME_DIR": dirs[node]}}}


def measure(n, cycles):
    rows, fan = [], []
    for _ in range(cycles):
        r = gsr.status(nodes=list(gsr._alive_nodes()))
        assert r.ok and len(r.processes) == n, r.summary()
        fan.append((r.seconds, max(p.seconds for p in r.processes)))
        for op in (gsr.sleep, gsr.wake):
            r = op(nodes=list(gsr._alive_nodes()), deadline=60)
            assert r.ok and len(r.processes) == n, r.summary()
            if op is gsr.sleep:
                own = max(p.seconds for p in r.processes)
                rows.append((r.seconds, r.slowest_node_seconds, own))
    whole, node, own = (statistics.median(c) for c in zip(*rows))
    over = sorted(w - o for w, _, o in rows)
    beyond = statistics.median(w - nd for w, nd, _ in rows)
    status_call, status_own = (statistics.median(c) for c in zip(*fan))
    return {"nodes": n, "status_call_ms": status_call * 1e3,
            "status_slowest_process_ms": status_own * 1e3,
            "call_ms": whole * 1e3, "slowest_node_task_ms": node * 1e3,
            "slowest_process_ms": own * 1e3, "overhead_ms": statistics.median(over) * 1e3,
            "overhead_p90_ms": over[int(0.9 * (len(over) - 1))] * 1e3,
            "beyond_slowest_node_task_ms": beyond * 1e3, "cycles": cycles}


def local(build, tmp, mib, cycles):
    p, directory = start_host(build, os.path.join(tmp, "local"), mib)
    proc = gpusleep.attach(socket=os.path.join(directory, f"{p.pid}.sock"))
    times, status_times = [], []
    for _ in range(cycles):
        t = time.monotonic()
        proc.status()
        status_times.append(time.monotonic() - t)
        t = time.monotonic()
        proc.sleep()
        times.append(time.monotonic() - t)
        proc.wake()
    p.kill()
    return {"nodes": "local", "call_ms": statistics.median(times) * 1e3,
            "status_call_ms": statistics.median(status_times) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--nodes", default="1,4,16")
    ap.add_argument("--raylets", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--via", choices=("agent", "task"), default="agent",
                    help="how calls reach a node (gpusleep.ray.configure)")
    args = ap.parse_args()
    gsr.configure(via=args.via)
    build = os.path.abspath(args.build)
    os.environ.setdefault("GPUSLEEP_LIBRARY", os.path.join(build, "lib", "libgpusleep.so"))
    sizes = [int(x) for x in args.nodes.split(",")]
    most = max(sizes)
    os.environ["PYTHONPATH"] = os.path.join(ROOT, "control", "python")
    tmp = tempfile.mkdtemp(prefix="gpusleep-bench-ray-")
    names = [f"simnode{i}" for i in range(most)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for r in range(args.raylets):
        mine = {name: 1.0 for i, name in enumerate(names) if i % args.raylets == r}
        cluster.add_node(num_cpus=1, resources=mine)
    ray.init(address=cluster.address, log_to_driver=False)
    hosts, dirs = [], {}
    results = [local(build, tmp, args.mib, args.cycles)]
    try:
        for name in names:
            p, directory = start_host(build, os.path.join(tmp, name), args.mib)
            hosts.append(p)
            dirs[name] = directory
        for n in sizes:
            simulate(names[:n], dirs)
            t = time.monotonic()
            gsr.warm_up(nodes=names[:n])
            first = time.monotonic() - t
            row = measure(n, args.cycles)
            row["warm_up_s"] = first
            row["via"] = args.via
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for p in hosts:
            p.kill()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'nodes':>6} {'status ms':>10} {'sleep ms':>9} {'slowest node task':>18} "
          f"{'slowest process':>16} {'overhead ms (p90)':>18} {'beyond node task':>17}")
    for r in results:
        if r["nodes"] == "local":
            print(f"{'local':>6} {r['status_call_ms']:10.1f} {r['call_ms']:9.1f}")
            continue
        print(f"{r['nodes']:>6} {r['status_call_ms']:10.1f} {r['call_ms']:9.1f} "
              f"{r['slowest_node_task_ms']:18.1f} {r['slowest_process_ms']:16.1f} "
              f"{r['overhead_ms']:9.1f} ({r['overhead_p90_ms']:.1f}) "
              f"{r['beyond_slowest_node_task_ms']:17.1f}")


if __name__ == "__main__":
    main()
