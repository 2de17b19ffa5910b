#!/usr/bin/env python3
"""The performance suite: allocation latency and kernel bandwidth with and without gpusleep, and
sleep/wake scenarios (16 and 64 GiB, over 1,000 regions from 2 MiB to 4 GiB; mirrors dropped after
wake; one copy stream; first sleep right after allocation). Writes JSON after each scenario and
a PNG at the end. Every sleep and wake rate is a ratio to the line rate measured just before its
cycle, in the same run."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_sleep_wake  # noqa: E402

GiB = 1 << 30


def result_of(cmd, env=None, timeout=600):
    """The JSON a benchmark program prints on its "RESULT " line."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def parts_bench(build):
    """The parts of a sleep and a wake measured apart (scripts/bench/bench_parts.cu)."""
    return result_of([os.path.join(build, "scripts", "bench", "bench_parts"), "--gib", "8"],
                     timeout=900)


def alloc_bench(build):
    program = os.path.join(build, "scripts", "bench", "bench_alloc")
    cli = os.path.join(build, "bin", "gpusleep")
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))

    # Plain and library runs alternate, five of each: the driver's own allocation latency drifts
    # between runs by as much as the library adds, so each size's figure is the median over runs.
    plains, libs = [], []
    for _ in range(5):
        plains.append(result_of([program], env))
        libs.append(result_of([cli, "run", "--", program], env))
    med = statistics.median
    rows = []
    for k, p in enumerate(plains[0]["alloc"]):
        def m(runs, key):
            return med(run["alloc"][k][key] for run in runs)
        row = {"mib": p["mib"], "plain_malloc_us": m(plains, "malloc_us"),
               "lib_malloc_us": m(libs, "malloc_us"), "plain_free_us": m(plains, "free_us"),
               "lib_free_us": m(libs, "free_us")}
        if "held_malloc_us" in p:
            for key in ("held_malloc_us", "held_free_us"):
                row["plain_" + key] = m(plains, key)
                row["lib_" + key] = m(libs, key)
            row["held_malloc_ratio"] = row["lib_held_malloc_us"] / row["plain_held_malloc_us"]
            row["held_free_ratio"] = row["lib_held_free_us"] / row["plain_held_free_us"]
            row["held_malloc_ratio_by_pair"] = [
                g["alloc"][k]["held_malloc_us"] / q["alloc"][k]["held_malloc_us"]
                for q, g in zip(plains, libs)]
        row["malloc_ratio"] = row["lib_malloc_us"] / row["plain_malloc_us"]
        row["free_ratio"] = row["lib_free_us"] / row["plain_free_us"]
        row["malloc_ratio_by_pair"] = [g["alloc"][k]["malloc_us"] / q["alloc"][k]["malloc_us"]
                                       for q, g in zip(plains, libs)]
        row["free_ratio_by_pair"] = [g["alloc"][k]["free_us"] / q["alloc"][k]["free_us"]
                                     for q, g in zip(plains, libs)]
        rows.append(row)
    plain_gbps = med(r["kernel_gbps"] for r in plains)
    lib_gbps = med(r["kernel_gbps"] for r in libs)
    return {"alloc": rows, "plain_kernel_gbps": plain_gbps, "lib_kernel_gbps": lib_gbps,
            "kernel_ratio": lib_gbps / plain_gbps}


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


# Axis labels for the plot.
SHORT = {
    "16 GiB, 1000+ regions": "16G mix",
    "64 GiB, 1000+ regions": "64G mix",
    "16 GiB, first sleep right after allocation": "16G\nat once",
    "16 GiB, mirrors dropped after wake": "16G\nno keep",
    "16 GiB, one copy stream, 256 MiB chunks": "16G\n1 stream",
}


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
            labels.append(f"{SHORT.get(sc['label'], sc['label'][:12])}\nc{c['cycle']}")
            sleeps.append(c["sleep_vs_line"])
            wakes.append(c["wake_vs_line"])
    x = range(len(labels))
    ax1.bar([i - 0.2 for i in x], sleeps, 0.4, label="sleep (offload) / D2H line rate")
    ax1.bar([i + 0.2 for i in x], wakes, 0.4, label="wake (restore) / H2D line rate")
    ax1.axhline(0.95, color="k", ls="--", lw=1, label="0.95")
    ax1.axhline(0.8, color="gray", ls=":", lw=1, label="0.8")
    ax1.set_xticks(list(x))
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel("rate / pinned copy line rate, measured before the cycle")
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("sleep and wake, whole request")
    a = result["alloc"]["alloc"]
    xs = range(len(a))
    held = all("held_malloc_ratio" in r for r in a)
    w = 0.27 if held else 0.4
    ax2.bar([i - w for i in xs] if held else [i - 0.2 for i in xs], [r["malloc_ratio"] for r in a],
            w, label="cudaMalloc, each freed before the next")
    if held:
        ax2.bar(list(xs), [r["held_malloc_ratio"] for r in a], w,
                label="cudaMalloc, several held, then freed")
    ax2.bar([i + w for i in xs] if held else [i + 0.2 for i in xs], [r["free_ratio"] for r in a], w,
            label="cudaFree")
    ax2.axhline(1.5, color="k", ls="--", lw=1, label="1.5x")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels([f"{r['mib']} MiB" for r in a])
    ax2.set_ylabel("median latency, gpusleep / plain")
    ax2.set_title(f"allocation; kernel bandwidth x{result['alloc']['kernel_ratio']:.3f}")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def print_parts(p):
    def g(key, fmt="{:.1f}"):
        return fmt.format(p[key]) if key in p else "-"
    print("driver calls per 2 MiB handle (1,000 handles), microseconds:")
    print(f"  wake: create {g('vmm2m.each_create_us')}, map {g('vmm2m.each_map_us')}, "
          f"set access {g('vmm2m.each_set_access_us')} (one call over the run: "
          f"{g('vmm2m.run_set_access_us')})")
    print(f"  sleep: unmap {g('vmm2m.each_unmap_us')} (one call over the run: "
          f"{g('vmm2m.run_unmap_us')}), release {g('vmm2m.each_release_us')}")
    print(f"  on 1/2/4 threads, wake {g('vmm_mt.2m.t1.wake_us')}/{g('vmm_mt.2m.t2.wake_us')}/"
          f"{g('vmm_mt.2m.t4.wake_us')}, sleep {g('vmm_mt.2m.t1.sleep_us')}/"
          f"{g('vmm_mt.2m.t2.sleep_us')}/{g('vmm_mt.2m.t4.sleep_us')}; create on a second "
          f"thread: wake {g('order.2m.b1.helper.r0.wake_us')}")
    print(f"  calls in turn per handle / each call over all handles first: wake "
          f"{g('order.2m.b1.r0.wake_us')}/{g('order.2m.b1000.r0.wake_us')}, sleep "
          f"{g('order.2m.b1.r0.sleep_us')}/{g('order.2m.b1000.r0.sleep_us')}")
    print("host memory preparation, GB/s (16 threads):")
    print(f"  touch {g('host.t16.touch_gbps')}, register touched "
          f"{g('host.t16.register_touched_gbps')}, both {g('host.t16.touch_register_gbps')}; "
          f"copy into fresh pages {g('host.t16.memcpy_fresh_gbps')}")
    print("  a first sleep into unprepared memory, end to end, x line: 8 threads "
          f"{g('first.warm.each.t8.d2h_vs_line', '{:.2f}')}, 12 threads "
          f"{g('first.warm.each.t12.d2h_vs_line', '{:.2f}')}, touch and register on "
          f"separate threads {g('first.warm.split.t14r1.d2h_vs_line', '{:.2f}')}")
    print(f"  staged through a pinned ring into fresh pages: "
          f"{g('staged.t12.s4x64.fresh.d2h_vs_line', '{:.2f}')} x line; line "
          f"{g('line.d2h_gbps')} GB/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default="bench_suite.json")
    ap.add_argument("--png", default="bench_suite.png")
    ap.add_argument("--only", default="", help="run only scenarios whose label contains this")
    ap.add_argument("--plot-only", metavar="JSON", help="redraw the plot of an earlier run")
    args = ap.parse_args()
    if args.plot_only:
        with open(args.plot_only) as f:
            plot(json.load(f), args.png)
        return
    result = {"alloc": alloc_bench(args.build), "scenarios": []}
    if not args.only:
        result["parts"] = parts_bench(args.build)
        print_parts(result["parts"])
    a = result["alloc"]
    print(f"{'size':>8} {'malloc plain':>12} {'gpusleep':>9} {'ratio':>6} {'free plain':>11} "
          f"{'gpusleep':>9} {'ratio':>6}")
    for r in a["alloc"]:
        print(f"{r['mib']:>5} MiB {r['plain_malloc_us']:>10.0f}us {r['lib_malloc_us']:>7.0f}us "
              f"{r['malloc_ratio']:>6.2f} {r['plain_free_us']:>9.0f}us {r['lib_free_us']:>7.0f}us "
              f"{r['free_ratio']:>6.2f}")
        if "held_malloc_ratio" in r:
            print(f"{'held':>8} {r['plain_held_malloc_us']:>10.0f}us {r['lib_held_malloc_us']:>7.0f}us "
                  f"{r['held_malloc_ratio']:>6.2f} {r['plain_held_free_us']:>9.0f}us "
                  f"{r['lib_held_free_us']:>7.0f}us {r['held_free_ratio']:>6.2f}")
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
