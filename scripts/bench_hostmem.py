#!/usr/bin/env python3
"""Host-memory benchmark on a GPU, in three parts, each a ratio to a rate measured in the same run.

tiers: an unmodified program holding --gib GiB is slept and woken under host budgets of all of
  it, half, a tenth, and none (spilled to --spill-dir). Sleep and wake rates are divided by the
  pinned line rate the program measures just before (pinned and pageable tiers) or by the spill
  disk's sequential direct-I/O rate measured here (the spill tier). Every byte is checked after
  each wake.
host: a GPU-bound loop (scripts/bench/hostmem_loop.py) that starts right after allocating --gib GiB,
  run bare, under gpusleep's defaults, and under the old eager pinning (every mirror pinned at
  once, normal priority, no rate, no budget); steps a second as a ratio to bare.
serve: the transformers server of the GPU tests holding --gib GiB more, bare and under gpusleep:
  the first 8 and next 8 completions right after it is ready, as a ratio to bare.

  scripts/bench_hostmem.py --build build --gib 32 --spill-dir /mnt/nvme/spill --out hostmem.json

Prints a summary; writes JSON (scripts/plot_hostmem.py draws it).
"""
import argparse
import json
import mmap
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Host, only_result, run_cli  # noqa: E402

GiB = 1 << 30


def disk_rate(directory, gib=4.0, chunk=64 << 20):
    """Sequential O_DIRECT write and read rate of `directory`'s disk, in GB/s."""
    buf = mmap.mmap(-1, chunk)
    buf.write(os.urandom(1 << 20) * (chunk >> 20))
    total = int(gib * GiB) // chunk * chunk
    fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_DIRECT, 0o600)
    try:
        t = time.perf_counter()
        for off in range(0, total, chunk):
            os.pwritev(fd, [buf], off)
        os.fsync(fd)
        write = total / (time.perf_counter() - t) / 1e9
        t = time.perf_counter()
        for off in range(0, total, chunk):
            os.preadv(fd, [buf], off)
        read = total / (time.perf_counter() - t) / 1e9
    finally:
        os.close(fd)
    return write, read


def tiers(build, gib, spill_dir, cycles):
    cli = os.path.join(build, "bin", "gpusleep")
    program = os.path.join(build, "scripts", "bench", "bench_host")
    disk_w, disk_r = disk_rate(spill_dir) if spill_dir else (None, None)
    total = int(gib * GiB)
    scenarios = [
        ("all pinned", {"GPUSLEEP_HOST_BUDGET": str(total + GiB)}),
        ("half pinned, half pageable", {"GPUSLEEP_HOST_BUDGET": str(total // 2)}),
        ("a tenth pinned, the rest pageable", {"GPUSLEEP_HOST_BUDGET": str(total // 10)}),
    ]
    if spill_dir:
        scenarios.append(("half pinned, half spilled",
                          {"GPUSLEEP_HOST_BUDGET": str(total // 2), "GPUSLEEP_PAGEABLE": "0",
                           "GPUSLEEP_SPILL_DIR": spill_dir}))
        scenarios.append(("none pinned, all spilled",
                          {"GPUSLEEP_HOST_BUDGET": "0", "GPUSLEEP_PAGEABLE": "0",
                           "GPUSLEEP_SPILL_DIR": spill_dir}))
    out = []
    for label, extra in scenarios:
        tmp = tempfile.TemporaryDirectory()
        env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"),
                   GPUSLEEP_PREP_SETTLE_MS="0", GPUSLEEP_PREP_RATE="0", **extra)
        host = Host(cli, [program, "--gib", str(gib), "--regions", "8"], env, tag="weights")

        def call(*args):
            rc, res, err = run_cli(cli, [*args, "--pid", str(host.pid)], env)
            if rc != 0:
                raise SystemExit(f"[{label}] gpusleep {' '.join(args)} failed: {err} {res}")
            return only_result(res)

        def line():
            text = host.send("line", expect="LINE", timeout=300)
            return (float(re.search(r"d2h_gbps=([\d.]+)", text).group(1)),
                    float(re.search(r"h2d_gbps=([\d.]+)", text).group(1)))

        try:
            host.expect("LINE", timeout=300)
            host.expect("READY", timeout=600)
            # Background preparation fills the budget and stops: wait until it stands still.
            last, still = -1, 0
            for _ in range(600):
                pinned = call("status")["totals"]["pinned_bytes"]
                still = still + 1 if pinned == last else 0
                last = pinned
                if still >= 10:
                    break
                time.sleep(0.2)
            rows = []
            for c in range(1, cycles + 1):
                d2h, h2d = line()
                s = call("sleep")
                st = call("status")["totals"]
                w = call("wake")
                verdict = host.send("verify", timeout=600)
                if verdict != "OK verify match":
                    raise SystemExit(f"[{label}] data mismatch after wake: {verdict}")
                sleep_gbps = s["copied_bytes"] / s["duration_ms"] / 1e6
                wake_gbps = w["copied_bytes"] / w["duration_ms"] / 1e6
                row = {"cycle": c, "line_d2h_gbps": d2h, "line_h2d_gbps": h2d,
                       "sleep_ms": s["duration_ms"], "wake_ms": w["duration_ms"],
                       "sleep_gbps": sleep_gbps, "wake_gbps": wake_gbps,
                       "pinned_bytes": st["pinned_bytes"], "pageable_bytes": st["pageable_bytes"],
                       "spilled_bytes": st["spilled_bytes"], "verify": verdict}
                spilled_all = st["spilled_bytes"] >= s["copied_bytes"]
                if spilled_all and disk_w:
                    row["sleep_vs_disk"] = sleep_gbps / disk_w
                    row["wake_vs_disk"] = wake_gbps / disk_r
                row["sleep_vs_line"] = sleep_gbps / d2h
                row["wake_vs_line"] = wake_gbps / h2d
                rows.append(row)
        finally:
            host.close()
        out.append({"label": label, "env": extra, "cycles": rows})
    return {"gib": gib, "disk_write_gbps": disk_w, "disk_read_gbps": disk_r, "scenarios": out}


def run_loop(build, gib, seconds, env_extra, bare):
    """Steps a second of the loop, overall and per second."""
    cli = os.path.join(build, "bin", "gpusleep")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"), **env_extra)
    argv = [sys.executable, os.path.join(ROOT, "scripts", "bench", "hostmem_loop.py"),
            "--gib", str(gib), "--seconds", str(seconds)]
    host = Host(argv[0], argv[1:], env, raw=True) if bare else Host(cli, argv, env, tag="weights")
    try:
        host.expect("READY", timeout=900)
        per_second = []
        while True:
            text = host.expect("", timeout=900)
            if text.startswith("SECOND"):
                per_second.append(int(re.search(r"steps=(\d+)", text).group(1)))
            if text.startswith("STEPS"):
                rate = float(re.search(r"per_second=([\d.]+)", text).group(1))
                break
        host.expect("DONE", timeout=60)
    finally:
        host.close()
    return {"per_second": rate, "seconds": per_second}


def host_part(build, gib, seconds):
    old = {"GPUSLEEP_HOST_BUDGET": "100%", "GPUSLEEP_PREP_PRIORITY": "normal",
           "GPUSLEEP_PREP_RATE": "0", "GPUSLEEP_PREP_SETTLE_MS": "0"}
    bare = run_loop(build, gib, seconds, {}, True)
    default = run_loop(build, gib, seconds, {}, False)
    eager = run_loop(build, gib, seconds, old, False)
    return {"gib": gib, "seconds": seconds, "bare": bare, "gpusleep": default,
            "gpusleep_eager": eager, "env_eager": old,
            "gpusleep_vs_bare": default["per_second"] / bare["per_second"],
            "eager_vs_bare": eager["per_second"] / bare["per_second"]}


def serve_part(build, gib, requests=16):
    cli = os.path.join(build, "bin", "gpusleep")
    argv = [sys.executable, os.path.join(ROOT, "scripts", "bench", "hostmem_serve.py"),
            "--pad-gib", str(gib)]
    out = {}
    for label in ("bare", "gpusleep"):
        tmp = tempfile.TemporaryDirectory()
        env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))
        host = (Host(argv[0], argv[1:], env, raw=True) if label == "bare" else
                Host(cli, argv, env, extra=["--preset", "transformers"]))
        try:
            host.expect("READY", timeout=900)
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                host.send("generate", timeout=300)
                times.append(time.perf_counter() - t)
        finally:
            host.close()
        out[label] = times
    half = requests // 2
    first = sum(out["gpusleep"][:half]) / sum(out["bare"][:half])
    second = sum(out["gpusleep"][half:]) / sum(out["bare"][half:])
    return {"gib": gib, "seconds": out, "first_vs_bare": first, "next_vs_bare": second}


def print_summary(r):
    t = r.get("tiers")
    if t:
        disk = (f"; spill disk {t['disk_write_gbps']:.2f} GB/s write, "
                f"{t['disk_read_gbps']:.2f} GB/s read" if t["disk_write_gbps"] else "")
        print(f"\n[tiers] {t['gib']:.0f} GiB in 8 regions{disk}")
        print(f"{'budget':36} {'cyc':>3} {'sleep ms':>9} {'x line':>6} {'x disk':>6} "
              f"{'wake ms':>8} {'x line':>6} {'x disk':>6}  pinned/pageable/spilled GiB")
        for s in t["scenarios"]:
            for c in s["cycles"]:
                sd = f"{c['sleep_vs_disk']:.2f}" if "sleep_vs_disk" in c else ""
                wd = f"{c['wake_vs_disk']:.2f}" if "wake_vs_disk" in c else ""
                print(f"{s['label']:36} {c['cycle']:>3} {c['sleep_ms']:>9.1f} "
                      f"{c['sleep_vs_line']:>6.2f} {sd:>6} {c['wake_ms']:>8.1f} "
                      f"{c['wake_vs_line']:>6.2f} {wd:>6}  {c['pinned_bytes'] / GiB:.1f}/"
                      f"{c['pageable_bytes'] / GiB:.1f}/{c['spilled_bytes'] / GiB:.1f}")
    h = r.get("host")
    if h:
        print(f"\n[host] GPU-bound loop right after allocating {h['gib']:.0f} GiB, "
              f"{h['seconds']:.0f} s: bare {h['bare']['per_second']:.1f} steps/s; "
              f"gpusleep {h['gpusleep_vs_bare']:.3f}x bare; old eager pinning "
              f"{h['eager_vs_bare']:.3f}x bare")
    s = r.get("serve")
    if s:
        print(f"\n[serve] transformers server holding {s['gib']:.0f} GiB more: first 8 "
              f"completions {s['first_vs_bare']:.2f}x bare, next 8 {s['next_vs_bare']:.2f}x bare")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--gib", type=float, default=32)
    ap.add_argument("--spill-dir", default="", help="a directory on a local disk (the spill tier)")
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20, help="length of the host loop")
    ap.add_argument("--parts", default="tiers,host,serve")
    ap.add_argument("--out", default="bench_hostmem.json")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    r = {}
    if "tiers" in parts:
        r["tiers"] = tiers(args.build, args.gib, args.spill_dir, args.cycles)
    if "host" in parts:
        r["host"] = host_part(args.build, args.gib, args.seconds)
    if "serve" in parts:
        r["serve"] = serve_part(args.build, args.gib)
    with open(args.out, "w") as f:
        json.dump(r, f, indent=2)
    print_summary(r)


if __name__ == "__main__":
    main()
