#!/usr/bin/env python3
"""Swap benchmark on GPUs: on each GPU two unmodified programs (scripts/bench/bench_host) hold
--gib GiB each under gpusleep, one awake and one asleep, and a plain program fills the card so
that it cannot hold both. Per cycle, and for each direction, the GPU is handed over:

  sequential   sleep the awake one, then wake the other (what a wake that fails while the
               memory is held forces on a controller)
  swap         gpusleep.swap: the sleep and a waiting wake at once, the wake taking memory as the
               sleep releases it

With --gpus 2 the same runs on two GPUs at once (one pair per GPU) and is compared with one GPU.
Then, with the filler gone, a wake with memory free is timed plain and with --wait (the cost of
waiting when there is nothing to wait for), and a sleep and a wake issued together with room for
both (the link's two-way limit). Each program checks every byte after each wake. Times are given
against the sequential time and the pinned copy rate measured in the same run. Writes JSON.

  scripts/bench_swap.py --build build --gib 25 --cycles 3 [--gpus 2] --out swap.json
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "control", "python"))
from harness import Host, nvidia_free_bytes  # noqa: E402
import gpusleep  # noqa: E402
from gpusleep.swap import swap  # noqa: E402

GiB = 1 << 30


class Gpu:
    """One GPU's pair of programs under the library and its filler."""

    def __init__(self, args, index, env):
        self.index = index
        self.env = dict(env, CUDA_VISIBLE_DEVICES=str(index))
        program = os.path.join(args.build, "scripts", "bench", "bench_host")
        argv = [program, "--gib", str(args.gib), "--regions", str(args.regions)]
        cli = os.path.join(args.build, "bin", "gpusleep")
        # One at a time: each program measures the line rate first, and two at once would share it.
        self.a = Host(cli, argv, self.env, tag="weights")
        rates = [float(x) for x in re.findall(r"=([\d.]+)", self.a.expect("LINE", 300))]
        self.d2h, self.h2d = rates
        self.b = Host(cli, argv, self.env, tag="weights")
        self.b.expect("LINE", 300)
        for h in (self.a, self.b):
            h.expect("READY", 600)
        self.pa, self.pb = gpusleep.attach(pid=self.a.pid), gpusleep.attach(pid=self.b.pid)
        self.filler = None

    def wait_mirrors(self):
        deadline = time.time() + 300
        for p in (self.pa, self.pb):
            while time.time() < deadline:
                if p.status()["totals"]["mirror_pending_bytes"] == 0:
                    break
                time.sleep(0.2)

    def fill(self, args, program_dir):
        """A plain program takes the card's free memory but --room GiB: not enough for both."""
        free = nvidia_free_bytes(self.index)
        gib = max(1.0, (free - args.room * GiB) / GiB)
        self.filler = Host(os.path.join(program_dir, "bench_host"),
                           ["--gib", f"{gib:.2f}", "--regions", "1"],
                           dict(self.env), raw=True)
        self.filler.expect("READY", 600)
        return nvidia_free_bytes(self.index)

    def unfill(self):
        if self.filler:
            self.filler.send("freeall")
            self.filler.close()
            self.filler = None

    def verify(self, host):
        verdict = host.send("verify", timeout=600)
        if verdict != "OK verify match":
            raise SystemExit(f"GPU {self.index}: data differ after wake: {verdict}")

    def close(self):
        self.unfill()
        for h in (self.a, self.b):
            h.close()


def handover(gpus, mode, forward):
    """Hands every GPU from its awake program to its asleep one; returns seconds."""
    out_p = [g.pa if forward else g.pb for g in gpus]
    in_p = [g.pb if forward else g.pa for g in gpus]
    t = time.perf_counter()
    if mode == "swap":
        swap(sleep=out_p, wake=in_p, wait=120)
    else:  # each GPU's pair in parallel, the wake after the sleep
        def seq(o, i):
            o.sleep()
            i.wake()
        threads = [threading.Thread(target=seq, args=pair) for pair in zip(out_p, in_p)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    seconds = time.perf_counter() - t
    for g in gpus:
        g.verify(g.b if forward else g.a)
    return seconds


def median(xs):
    return statistics.median(xs) if xs else None


def run(args):
    tmp = tempfile.TemporaryDirectory()
    env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(tmp.name, "run"))
    os.environ["GPUSLEEP_RUNTIME_DIR"] = env["GPUSLEEP_RUNTIME_DIR"]
    program_dir = os.path.join(args.build, "scripts", "bench")
    gpus = [Gpu(args, i, env) for i in range(args.gpus)]
    result = {"gib": args.gib, "regions": args.regions, "gpus": args.gpus, "cycles": []}
    try:
        for g in gpus:
            g.wait_mirrors()
            g.pb.sleep()  # b starts asleep, its contents in its mirrors
            g.wait_mirrors()
        result["line_d2h_gbps"] = [g.d2h for g in gpus]
        result["line_h2d_gbps"] = [g.h2d for g in gpus]
        result["free_after_fill_gib"] = [g.fill(args, program_dir) / GiB for g in gpus]
        sets = {"one": gpus[:1], "all": gpus} if args.gpus > 1 else {"one": gpus}
        for c in range(args.cycles):
            row = {"cycle": c + 1}
            for name, sel in sets.items():
                for mode in ("sequential", "swap"):
                    # a -> b, then b -> a: both directions, each GPU back where it started.
                    row[f"{name}_{mode}_s"] = [handover(sel, mode, True),
                                               handover(sel, mode, False)]
            result["cycles"].append(row)
            print(f"cycle {c + 1}: " + ", ".join(
                f"{k} {'/'.join(f'{x:.3f}' for x in v)}" for k, v in row.items() if k != "cycle"),
                flush=True)
        for g in gpus:
            g.unfill()
        g = gpus[0]
        plain, waiting, together = [], [], []
        for _ in range(args.cycles):
            g.pa.sleep()
            t = time.perf_counter()
            g.pa.wake()
            plain.append(time.perf_counter() - t)
            g.pa.sleep()
            t = time.perf_counter()
            g.pa.wake(wait=120)
            waiting.append(time.perf_counter() - t)
            g.verify(g.a)
            # Room for both: a sleeps while b wakes, no waiting needed.
            t = time.perf_counter()
            th = threading.Thread(target=g.pa.sleep)
            th.start()
            g.pb.wake()
            th.join()
            together.append(time.perf_counter() - t)
            g.verify(g.b)
            g.pb.sleep()
            g.pa.wake()
        result.update({"wake_free_s": plain, "wake_wait_free_s": waiting,
                       "room_for_both_s": together})
    finally:
        for g in gpus:
            g.close()
    summarize(result, args)
    return result


def summarize(r, args):
    all_c = r["cycles"]
    seq = median([x for c in all_c for x in c["one_sequential_s"]])
    sw = median([x for c in all_c for x in c["one_swap_s"]])
    moved = args.gib * GiB * 2  # out and in
    s = {"sequential_s": seq, "swap_s": sw, "swap_over_sequential": sw / seq,
         "swap_gbps_both_ways": moved / sw / 1e9,
         "link_gbps_each_way": (r["line_d2h_gbps"][0] + r["line_h2d_gbps"][0]) / 2,
         "room_for_both_over_sequential": median(r["room_for_both_s"]) / seq,
         "wake_wait_over_wake": median(r["wake_wait_free_s"]) / median(r["wake_free_s"])}
    if r["gpus"] > 1:
        s["all_gpus_swap_s"] = median([x for c in all_c for x in c["all_swap_s"]])
        s["all_gpus_over_one"] = s["all_gpus_swap_s"] / sw
    r["summary"] = s
    print("SWAP SUMMARY " + json.dumps(s))
    verdicts = [f"swap/sequential {s['swap_over_sequential']:.2f} (target 0.70)",
                f"wake --wait/wake {s['wake_wait_over_wake']:.3f} (target 1.05)"]
    if "all_gpus_over_one" in s:
        verdicts.append(f"{r['gpus']} GPUs/one {s['all_gpus_over_one']:.2f} (target 1.2)")
    print("SWAP BENCH: " + "; ".join(verdicts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--gib", type=float, default=25.0)
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--room", type=float, default=12.0,
                    help="GiB the filler leaves free (less than --gib, so both cannot fit)")
    ap.add_argument("--out", default="swap.json")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    if args.room >= args.gib:
        ap.error("--room must be less than --gib")
    result = run(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
