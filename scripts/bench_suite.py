#!/usr/bin/env python3
"""The performance suite: allocation latency and kernel bandwidth with and without gpusleep, and
sleep/wake scenarios (16 and 64 GiB, over 1,000 regions from 2 MiB to 4 GiB; mirrors dropped after
wake; one copy stream; first sleep right after allocation). Writes JSON after each
scenario and a PNG at the end. Every rate is a ratio to the line rate measured in the same run."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_sleep_wake  # noqa: E402

GiB = 1 << 30


def alloc_bench(build):
    program = os.path.join(build, "scripts", "bench", "bench_alloc")
    cli = os.path.join(build, "bin", "gpusleep")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))

    def result(cmd):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600).stdout
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    plain = result([program])
    lib = result([cli, "run", "--", program])
    rows = []
    for p, g in zip(plain["alloc"], lib["alloc"]):
        rows.append({"mib": p["mib"], "plain_malloc_us": p["malloc_us"], "lib_malloc_us": g["malloc_us"],
                     "malloc_ratio": g["malloc_us"] / p["malloc_us"],
                     "plain_free_us": p["free_us"], "lib_free_us": g["free_us"],
                     "free_ratio": g["free_us"] / p["free_us"]})
    return {"alloc": rows, "plain_kernel_gbps": plain["kernel_gbps"],
            "lib_kernel_gbps": lib["kernel_gbps"],
            "kernel_ratio": lib["kernel_gbps"] / plain["kernel_gbps"]}


SCENARIOS = [
    dict(label="16 GiB, 1000+ regions", gib=16, mix=1000, cycles=3, discard_cycles=2,
         wait_mirrors=True),
    dict(label="64 GiB, 1000+ regions", gib=64, mix=1000, cycles=2, discard_cycles=1,
         wait_mirrors=True),
    dict(label="16 GiB, first sleep right after allocation", gib=16, regions=8, cycles=2,
         discard_cycles=0),
    dict(label="16 GiB, mirrors dropped after wake", gib=16, regions=8, cycles=3, discard_cycles=0,
         wait_mirrors=True, env_extra={"GPUSLEEP_KEEP_MIRRORS": "0"}),
    dict(label="16 GiB, one copy stream, 256 MiB chunks", gib=16, regions=8, cycles=2,
         discard_cycles=0, wait_mirrors=True,
         env_extra={"GPUSLEEP_COPY_STREAMS": "1", "GPUSLEEP_COPY_CHUNK": "256M"}),
]


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    labels, sleeps, wakes = [], [], []
    for sc in result["scenarios"]:
        for c in sc["cycles"]:
            if c["kind"] != "offload":
                continue
            labels.append(f"{sc['label'].split(',')[0]}\n{sc['label'].split(',', 1)[-1].strip()[:22]}\nc{c['cycle']}")
            sleeps.append(c["sleep_vs_line"])
            wakes.append(c["wake_vs_line"])
    x = range(len(labels))
    ax1.bar([i - 0.2 for i in x], sleeps, 0.4, label="sleep (offload) / D2H line rate")
    ax1.bar([i + 0.2 for i in x], wakes, 0.4, label="wake (restore) / H2D line rate")
    ax1.axhline(0.95, color="k", ls="--", lw=1, label="0.95")
    ax1.axhline(0.8, color="gray", ls=":", lw=1, label="0.8")
    ax1.set_xticks(list(x))
    ax1.set_xticklabels(labels, fontsize=6)
    ax1.set_ylabel("rate / pinned copy line rate (same run)")
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("sleep and wake, whole request")
    a = result["alloc"]["alloc"]
    xs = range(len(a))
    ax2.bar([i - 0.2 for i in xs], [r["malloc_ratio"] for r in a], 0.4, label="cudaMalloc")
    ax2.bar([i + 0.2 for i in xs], [r["free_ratio"] for r in a], 0.4, label="cudaFree")
    ax2.axhline(1.5, color="k", ls="--", lw=1, label="1.5x")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels([f"{r['mib']} MiB" for r in a])
    ax2.set_ylabel("median latency, gpusleep / plain")
    ax2.set_title(f"allocation; kernel bandwidth x{result['alloc']['kernel_ratio']:.3f}")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default="bench_suite.json")
    ap.add_argument("--png", default="bench_suite.png")
    ap.add_argument("--only", default="", help="run only scenarios whose label contains this")
    args = ap.parse_args()
    result = {"alloc": alloc_bench(args.build), "scenarios": []}
    a = result["alloc"]
    print(f"{'size':>8} {'malloc plain':>12} {'gpusleep':>9} {'ratio':>6} {'free plain':>11} "
          f"{'gpusleep':>9} {'ratio':>6}")
    for r in a["alloc"]:
        print(f"{r['mib']:>5} MiB {r['plain_malloc_us']:>10.0f}us {r['lib_malloc_us']:>7.0f}us "
              f"{r['malloc_ratio']:>6.2f} {r['plain_free_us']:>9.0f}us {r['lib_free_us']:>7.0f}us "
              f"{r['free_ratio']:>6.2f}")
    print(f"streaming kernel: plain {a['plain_kernel_gbps']:.0f} GB/s, under gpusleep "
          f"{a['lib_kernel_gbps']:.0f} GB/s (x{a['kernel_ratio']:.3f})")
    for sc in SCENARIOS:
        if args.only and args.only not in sc["label"]:
            continue
        r = bench_sleep_wake.run(args.build, **sc)
        result["scenarios"].append(r)
        bench_sleep_wake.print_result(r)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, args.png)


if __name__ == "__main__":
    main()
