#!/usr/bin/env python3
"""Sleep/wake benchmark on a GPU: an unmodified program holding --gib GiB in --regions
allocations is slept and woken by the CLI for --cycles cycles. The program first measures this
machine's pinned copy rate (device to host and back); every sleep and wake rate is reported as a
ratio to it. Every byte is checked after each wake. Writes JSON and, with matplotlib, a PNG.

  scripts/bench_sleep_wake.py --build build --gib 16 --out bench.json --png bench.png
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Host, nvidia_free_bytes, run_cli  # noqa: E402

GiB = 1 << 30


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--gib", type=float, default=16)
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--discard-cycles", type=int, default=2)
    ap.add_argument("--wait-mirrors", action="store_true",
                    help="let background mirror preparation finish before the first sleep")
    ap.add_argument("--out", default="bench_sleep_wake.json")
    ap.add_argument("--png", default="")
    args = ap.parse_args()

    cli = os.path.join(args.build, "bin", "gpusleep")
    program = os.path.join(args.build, "scripts", "bench", "bench_host")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))
    host = Host(cli, [program, "--gib", str(args.gib), "--regions", str(args.regions)], env,
                tag="weights")
    try:
        line = host.expect("LINE", timeout=300)
        d2h = float(re.search(r"d2h_gbps=([\d.]+)", line).group(1))
        h2d = float(re.search(r"h2d_gbps=([\d.]+)", line).group(1))
        ready = host.expect("READY", timeout=300)
        nbytes = int(re.search(r"bytes=(\d+)", ready).group(1))
        rows = []
        if args.wait_mirrors:
            deadline = time.time() + 120
            while time.time() < deadline:
                _, st, _ = run_cli(cli, ["status", "--pid", str(host.pid)], env)
                if st["result"]["totals"]["mirror_pending_bytes"] == 0:
                    break
                time.sleep(0.2)
        _, st, _ = run_cli(cli, ["status", "--pid", str(host.pid)], env)
        totals = st["result"]["totals"]
        mirrors_ready = totals["mirror_bytes"] / (totals["mirror_bytes"] + totals["mirror_pending_bytes"])

        def cycle(kind, index, *sleep_args):
            free0 = nvidia_free_bytes()
            rc, out, err = run_cli(cli, ["sleep", "--pid", str(host.pid), *sleep_args], env)
            if rc != 0:
                raise SystemExit(f"sleep failed: {err} {out}")
            s = out["result"]
            freed = nvidia_free_bytes() - free0
            rc, out, err = run_cli(cli, ["wake", "--pid", str(host.pid)], env)
            if rc != 0:
                raise SystemExit(f"wake failed: {err} {out}")
            w = out["result"]
            verdict = host.send("verify")
            row = {
                "kind": kind, "cycle": index, "bytes": s["bytes"], "freed_bytes": freed,
                "sleep_ms": s["duration_ms"], "sleep_sync_ms": s["sync_ms"],
                "sleep_copy_ms": s["copy_ms"], "sleep_unmap_ms": s["map_ms"],
                "wake_ms": w["duration_ms"], "wake_map_ms": w["map_ms"],
                "wake_copy_ms": w["copy_ms"],
                "sleep_gbps": s["bytes"] / s["duration_ms"] / 1e6,
                "wake_gbps": w["bytes"] / w["duration_ms"] / 1e6,
                "verify": verdict,
            }
            row["sleep_vs_line"] = row["sleep_gbps"] / d2h
            row["wake_vs_line"] = row["wake_gbps"] / h2d
            if kind == "discard":
                gib = s["bytes"] / GiB
                row["sleep_ms_per_gib"] = s["duration_ms"] / gib
                row["wake_ms_per_gib"] = w["duration_ms"] / gib
                if verdict != "OK verify match":
                    row["verify"] = "contents dropped (expected for discard)"
            elif verdict != "OK verify match":
                raise SystemExit(f"data mismatch after wake: {verdict}")
            rows.append(row)
            return row

        for c in range(1, args.cycles + 1):
            cycle("offload", c)
        for c in range(1, args.discard_cycles + 1):
            cycle("discard", c, "--policy", "discard")
    finally:
        host.close()

    result = {"gib": nbytes / GiB, "regions": args.regions, "line_d2h_gbps": d2h,
              "line_h2d_gbps": h2d, "mirrors_ready_at_first_sleep": mirrors_ready,
              "cycles": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"pinned copy line rate measured in this run: D2H {d2h:.1f} GB/s, H2D {h2d:.1f} GB/s")
    print(f"host mirrors prepared before the first sleep: {100 * mirrors_ready:.0f}%")
    print(f"{'kind':8} {'cycle':>5} {'GiB':>6} {'sleep ms':>9} {'GB/s':>6} {'x line':>6} "
          f"{'wake ms':>8} {'GB/s':>6} {'x line':>6}  verify")
    for r in rows:
        print(f"{r['kind']:8} {r['cycle']:>5} {r['bytes'] / GiB:>6.2f} {r['sleep_ms']:>9.1f} "
              f"{r['sleep_gbps']:>6.1f} {r['sleep_vs_line']:>6.2f} {r['wake_ms']:>8.1f} "
              f"{r['wake_gbps']:>6.1f} {r['wake_vs_line']:>6.2f}  {r['verify']}")
    if args.png:
        plot(result, args.png)


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot")
        return
    rows = [r for r in result["cycles"] if r["kind"] == "offload"]
    labels = [f"cycle {r['cycle']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], [r["sleep_gbps"] for r in rows], 0.4, label="sleep (offload)")
    ax.bar([i + 0.2 for i in x], [r["wake_gbps"] for r in rows], 0.4, label="wake (restore)")
    ax.axhline(result["line_d2h_gbps"], color="k", ls="--", lw=1, label="pinned D2H line rate")
    ax.axhline(result["line_h2d_gbps"], color="gray", ls=":", lw=1, label="pinned H2D line rate")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels)
    ax.set_ylabel("GB/s (whole operation)")
    ax.set_title(f"gpusleep: {result['gib']:.0f} GiB in {result['regions']} regions")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
