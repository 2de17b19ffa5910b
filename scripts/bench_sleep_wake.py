#!/usr/bin/env python3
"""Sleep/wake benchmark on a GPU: an unmodified program holding --gib GiB (in --regions equal
allocations, or --mix N small ones plus larger ones) is slept and woken by the CLI. The program
measures this machine's pinned copy rate first, and again before each offload cycle except a first
sleep that must come right after allocation; each cycle's rates are ratios to the line rate
measured just before it, since the machine's own rate drifts by several percent over a run. Every
byte is checked after each wake. Writes JSON.

  scripts/bench_sleep_wake.py --build build --gib 16 --out bench.json
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
from harness import Host, nvidia_free_bytes, only_result, run_cli  # noqa: E402

GiB = 1 << 30


def run(build, gib=16, regions=8, mix=0, cycles=3, discard_cycles=2, wait_mirrors=False,
        env_extra=None, label=""):
    """Runs one scenario; returns its result dictionary."""
    cli = os.path.join(build, "bin", "gpusleep")
    program = os.path.join(build, "scripts", "bench", "bench_host")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"), **(env_extra or {}))
    argv = [program, "--gib", str(gib), "--regions", str(regions), "--mix", str(mix)]
    host = Host(cli, argv, env, tag="weights")

    def call(*args):
        rc, out, err = run_cli(cli, [*args, "--pid", str(host.pid)], env)
        if rc != 0:
            raise SystemExit(f"gpusleep {' '.join(args)} failed: {err} {out}")
        return only_result(out)

    def line_rates(line):
        return (float(re.search(r"d2h_gbps=([\d.]+)", line).group(1)),
                float(re.search(r"h2d_gbps=([\d.]+)", line).group(1)))

    try:
        d2h, h2d = line_rates(host.expect("LINE", timeout=300))
        ready = host.expect("READY", timeout=600)
        nregions = int(re.search(r"regions=(\d+)", ready).group(1))
        t_ready = time.time()
        if wait_mirrors:
            while time.time() < t_ready + 300:
                if call("status")["totals"]["mirror_pending_bytes"] == 0:
                    break
                time.sleep(0.2)
        totals = call("status")["totals"]
        waited = time.time() - t_ready
        mirrors_ready = totals["mirror_bytes"] / max(1, totals["mirror_bytes"] +
                                                    totals["mirror_pending_bytes"])
        rows = []

        def cycle(kind, index, *sleep_args):
            # Not before a first sleep that must come right after allocation: measuring takes a
            # second, in which background preparation would start.
            if kind == "offload":
                line_d2h, line_h2d = (line_rates(host.send("line", expect="LINE", timeout=300))
                                      if wait_mirrors or index > 1 else (d2h, h2d))
            free0 = nvidia_free_bytes()
            s = call("sleep", *sleep_args)
            freed = nvidia_free_bytes() - free0
            w = call("wake")
            verdict = host.send("verify", timeout=600)
            row = {
                "kind": kind, "cycle": index, "bytes": s["bytes"], "copied_bytes": s["copied_bytes"],
                "regions": s["regions"], "freed_bytes": freed,
                "sleep_ms": s["duration_ms"], "sleep_sync_ms": s["sync_ms"],
                "sleep_copy_ms": s["copy_ms"], "sleep_unmap_ms": s["map_ms"],
                "wake_ms": w["duration_ms"], "wake_map_ms": w["map_ms"],
                "wake_copy_ms": w["copy_ms"], "verify": verdict,
                "mirror_bytes": call("status")["totals"]["mirror_bytes"],
            }
            if kind == "offload":
                row["sleep_gbps"] = s["copied_bytes"] / s["duration_ms"] / 1e6
                row["wake_gbps"] = w["copied_bytes"] / w["duration_ms"] / 1e6
                row["line_d2h_gbps"], row["line_h2d_gbps"] = line_d2h, line_h2d
                row["sleep_vs_line"] = row["sleep_gbps"] / line_d2h
                row["wake_vs_line"] = row["wake_gbps"] / line_h2d
                if verdict != "OK verify match":
                    raise SystemExit(f"data mismatch after wake: {verdict}")
            else:
                budget = lambda: s["bytes"] / GiB * 1.0 + 0.030 * s["regions"]  # noqa: E731
                row["target_ms"] = budget()
                row["sleep_ms_per_gib"] = s["duration_ms"] / (s["bytes"] / GiB)
                row["wake_ms_per_gib"] = w["duration_ms"] / (s["bytes"] / GiB)
                row["verify"] = "contents dropped (discard)"
            rows.append(row)
            return row

        for c in range(1, cycles + 1):
            cycle("offload", c)
        for c in range(1, discard_cycles + 1):
            cycle("discard", c, "--policy", "discard")
        host.send("freeall", timeout=300)
        time.sleep(0.5)  # mirrors are unpinned on a helper thread
        after_free = call("status")["totals"]
    finally:
        host.close()
    return {
        "label": label, "gib": gib, "regions": nregions, "env": env_extra or {},
        "line_d2h_gbps": d2h, "line_h2d_gbps": h2d,
        "seconds_from_ready_to_first_sleep": waited, "mirrors_ready_at_first_sleep": mirrors_ready,
        "mirror_bytes_after_freeall": after_free["mirror_bytes"],
        "cycles": rows,
    }


def print_result(r):
    print(f"\n[{r['label'] or 'sleep/wake'}] {r['gib']:.0f} GiB in {r['regions']} regions; "
          f"line rate D2H {r['line_d2h_gbps']:.1f} GB/s, H2D {r['line_h2d_gbps']:.1f} GB/s; "
          f"mirrors {100 * r['mirrors_ready_at_first_sleep']:.0f}% ready at the first sleep "
          f"({r['seconds_from_ready_to_first_sleep']:.1f} s after allocation)")
    print(f"{'kind':8} {'cyc':>3} {'GiB':>6} {'sleep ms':>9} {'x line':>6} {'wake ms':>8} "
          f"{'x line':>6} {'line GB/s':>11} {'mirror/copied':>13}  verify")
    for c in r["cycles"]:
        ratio = c["mirror_bytes"] / c["copied_bytes"] if c["copied_bytes"] else 0
        sl = f"{c['sleep_vs_line']:.2f}" if "sleep_vs_line" in c else f"<{c['target_ms']:.0f}ms"
        wl = f"{c['wake_vs_line']:.2f}" if "wake_vs_line" in c else ""
        line = (f"{c['line_d2h_gbps']:.1f}/{c['line_h2d_gbps']:.1f}"
                if "line_d2h_gbps" in c else "")
        print(f"{c['kind']:8} {c['cycle']:>3} {c['bytes'] / GiB:>6.2f} {c['sleep_ms']:>9.1f} "
              f"{sl:>6} {c['wake_ms']:>8.1f} {wl:>6} {line:>11} {ratio:>13.3f}  {c['verify']}")
    print(f"host mirror bytes left after freeing the regions: {r['mirror_bytes_after_freeall']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--gib", type=float, default=16)
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--mix", type=int, default=0)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--discard-cycles", type=int, default=2)
    ap.add_argument("--wait-mirrors", action="store_true",
                    help="let background mirror preparation finish before the first sleep")
    ap.add_argument("--out", default="bench_sleep_wake.json")
    args = ap.parse_args()
    r = run(args.build, args.gib, args.regions, args.mix, args.cycles, args.discard_cycles,
            args.wait_mirrors)
    with open(args.out, "w") as f:
        json.dump(r, f, indent=2)
    print_result(r)


if __name__ == "__main__":
    main()
