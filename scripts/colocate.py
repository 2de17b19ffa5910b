#!/usr/bin/env python3
"""The co-location benchmark: a rollout server (scripts/colocate/server.py, about 20 GiB of
weights, a static KV cache filling most of the rest, decoding in a CUDA graph) hands the GPU to a
trainer that needs at least 60 GiB (scripts/colocate/trainer.py) and takes it back, by each
method, over several cycles:

  gpusleep    `gpusleep run --preset transformers`; sleep (weights and graph memory offloaded,
              KV cache discarded), trainer, wake
  refit       the same with the weights discarded and written again after wake by the server's
              own load path (as RL does after each update)
  relaunch    kill the server, trainer, start it again (process start to first token)
  checkpoint  the driver's checkpoint: cuCheckpointProcessLock/Checkpoint, trainer,
              cuCheckpointProcessRestore/Unlock
  swap        the full RL loop (scripts/colocate/turns.py): the server and a long-lived trainer
              both under gpusleep take turns; each hand-over is one gpusleep.swap (one sleeps
              while the other wakes into the memory it releases)
  sequential  the same loop, each hand-over a sleep and then a wake

For swap and sequential the card must not hold both awake: their server keeps its 36 layers
(about 20 GiB of weights) but has an 80 GiB KV cache (about 118 GiB with its graph and work
memory, which grow with the cache), against a trainer of 8 GiB of weights (model, gradients,
Adam state; offloaded), a 20 GiB replay buffer (offloaded) and its steps' activations
(discarded): about 34 GiB, together more than a 139.8 GiB H200. The run records both sizes and
warns when they would fit together. The trainer must go on exactly as one that never slept (the
same parameter checksum and losses after every train as a reference run at the start); the
summary ends with swap's cycle as a ratio of sequential's, measured in the same run.

Each cycle checks the server generates the same tokens afterwards. Reported per method: time to
free the GPU, time to serve again (restore and a first prefill), GPU memory still used while the
server is out, host memory the server holds meanwhile. Writes JSON after each method and a PNG.

  scripts/colocate.py --build BUILD --out DIR
                      [--methods gpusleep,refit,relaunch,checkpoint,swap,sequential]
                      [--cycles 3] [--merge OTHER.json ...]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Host, nvidia_free_bytes, only_result, rss_bytes, run_cli  # noqa: E402

SERVER = os.path.join(ROOT, "scripts", "colocate", "server.py")
TRAINER = os.path.join(ROOT, "scripts", "colocate", "trainer.py")
GiB = 1 << 30
METHODS = ("gpusleep", "refit", "relaunch", "checkpoint", "swap", "sequential")
TURNS = ("swap", "sequential")
# (layers, KV GiB) of the server: the hand-off methods', and the turn-taking ones' (a card that
# cannot hold server and trainer awake together).
SERVER_SHAPE = {"hand-off": (36, 40.0), "turns": (36, 80.0)}


def total_bytes():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits",
                          "-i", "0"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) << 20


def used_bytes():
    return total_bytes() - nvidia_free_bytes()


def fields(line):
    return dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)


def wait_freed(limit, timeout=60):
    """Seconds until the GPU's used memory falls to `limit` bytes or below."""
    t = time.perf_counter()
    while used_bytes() > limit and time.perf_counter() - t < timeout:
        time.sleep(0.01)
    return time.perf_counter() - t


class Driver:
    """The CUDA driver's checkpoint entry points, for the checkpoint method."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        rc = self.lib.cuInit(0)
        if rc != 0:
            raise RuntimeError(f"cuInit: {rc}")

    def call(self, name, pid):
        args = ctypes.create_string_buffer(64)  # zeroed optional arguments
        rc = getattr(self.lib, name)(ctypes.c_int(pid), args)
        if rc != 0:
            raise RuntimeError(f"{name}({pid}): CUDA error {rc}")


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.TemporaryDirectory()
        self.cli = os.path.join(args.build, "bin", "gpusleep")
        self.env = dict(os.environ, GPUSLEEP_RUNTIME_DIR=os.path.join(self.tmp.name, "run"))
        self.trainer_reference = None

    def server_args(self, method):
        layers, kv = SERVER_SHAPE["turns" if method in TURNS else "hand-off"]
        layers = self.args.layers if self.args.layers is not None else layers
        kv = self.args.kv_gib if self.args.kv_gib is not None else kv
        return ["--layers", str(layers), "--kv-gib", str(kv)]

    def gs(self, *argv):
        rc, out, err = run_cli(self.cli, list(argv), self.env)
        if rc != 0:
            raise RuntimeError(f"gpusleep {' '.join(argv)}: {err} {out}")
        return only_result(out)

    def start_server(self, managed, extra=()):
        t = time.perf_counter()
        server_args = self.server_args(self.method)
        if managed:
            h = Host(self.cli, [sys.executable, SERVER] + server_args, self.env,
                     extra=["--preset", "transformers"] + list(extra))
        else:
            h = Host(sys.executable, [SERVER] + server_args, self.env, raw=True)
        line = h.expect("READY", timeout=900)
        return h, fields(line), time.perf_counter() - t

    def trainer(self):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, TRAINER, "--gib", str(self.args.trainer_gib)],
                           capture_output=True, text=True, timeout=900)
        done = [l for l in p.stdout.splitlines() if l.startswith("DONE")]
        if p.returncode != 0 or not done:
            raise RuntimeError(f"trainer failed: {p.stdout[-500:]} {p.stderr[-1500:]}")
        f = fields(done[0])
        return {"seconds": time.perf_counter() - t, "peak_bytes": int(f["peak_bytes"])}

    def first_token(self, h):
        t = time.perf_counter()
        line = h.send("first")
        return time.perf_counter() - t, float(fields(line)["first"])

    def check_tokens(self, h, reference):
        got = fields(h.send("generate", timeout=300))["tokens"]
        if got != reference:
            raise RuntimeError(f"tokens differ after the cycle: {got} != {reference}")

    # -- methods: each returns (server info, [cycle dicts]) --

    def run_gpusleep(self, refit):
        h, ready, startup = self.start_server(True, ["--policy", "weights=discard"] if refit else [])
        try:
            reference = ready["tokens"]
            # The server is loaded; pinning its mirrors finishes in the background.
            t = time.perf_counter()
            while True:
                totals = self.gs("status", "--pid", str(h.pid))
                pending = sum(x["mirror_pending_bytes"] for x in totals["tags"])
                if pending == 0 or time.perf_counter() - t > 300:
                    break
                time.sleep(0.5)
            status = self.gs("status", "--pid", str(h.pid))
            tags = {x["tag"]: x["bytes"] for x in status["tags"]}
            cycles = []
            for c in range(self.args.cycles):
                rss_awake = rss_bytes(h.pid)
                t = time.perf_counter()
                slept = self.gs("sleep", "--pid", str(h.pid))
                free_s = time.perf_counter() - t
                held = used_bytes() - self.baseline
                rss_asleep = rss_bytes(h.pid)
                train = self.trainer()
                t = time.perf_counter()
                woke = self.gs("wake", "--pid", str(h.pid))
                refit_s = 0.0
                if refit:
                    refit_s = float(fields(h.send("refit", timeout=300))["refit"])
                restore_s = time.perf_counter() - t
                first_s, prefill = self.first_token(h)
                self.check_tokens(h, reference)
                cycles.append({
                    "cycle": c + 1, "free_s": free_s, "serve_s": restore_s + first_s,
                    "restore_s": restore_s, "first_token_s": first_s, "prefill_s": prefill,
                    "refit_s": refit_s, "sleep_ms": slept["duration_ms"],
                    "wake_ms": woke["duration_ms"], "copied_bytes": slept["copied_bytes"],
                    "discarded_bytes": slept["discarded_bytes"], "gpu_held_bytes": held,
                    "host_rss_asleep": rss_asleep, "host_rss_awake": rss_awake,
                    "trainer": train, "tokens": "identical"})
                print(f"  {'refit' if refit else 'gpusleep'} cycle {c + 1}: free {free_s:.2f} s, "
                      f"serve {restore_s + first_s:.2f} s, held {held / GiB:.2f} GiB, trainer peak "
                      f"{train['peak_bytes'] / GiB:.1f} GiB, tokens identical", flush=True)
            unsleepable = sum(u["bytes"] for u in self.gs("status", "--pid", str(h.pid))["unsleepable"])
            return {"startup_s": startup, "tags_bytes": tags, "unsleepable_bytes": unsleepable,
                    "weights_bytes": int(ready["weights_bytes"]),
                    "kv_bytes": int(ready["kv_bytes"])}, cycles
        finally:
            h.close()

    def run_relaunch(self):
        h, ready, startup = self.start_server(False)
        reference = ready["tokens"]
        cycles = []
        try:
            for c in range(self.args.cycles):
                t = time.perf_counter()
                h.kill()
                h.close()
                wait_freed(self.baseline + (256 << 20))
                free_s = time.perf_counter() - t
                held = used_bytes() - self.baseline
                train = self.trainer()
                t = time.perf_counter()
                h, ready, _ = self.start_server(False)
                first_s, prefill = self.first_token(h)
                restore_s = time.perf_counter() - t - first_s
                if ready["tokens"] != reference:
                    raise RuntimeError("a relaunched server generated other tokens")
                cycles.append({"cycle": c + 1, "free_s": free_s, "serve_s": restore_s + first_s,
                               "restore_s": restore_s, "first_token_s": first_s,
                               "prefill_s": prefill, "gpu_held_bytes": held,
                               "host_rss_asleep": 0, "trainer": train, "tokens": "identical"})
                print(f"  relaunch cycle {c + 1}: free {free_s:.2f} s, serve "
                      f"{restore_s + first_s:.2f} s, trainer peak {train['peak_bytes'] / GiB:.1f} "
                      f"GiB, tokens identical", flush=True)
            return {"startup_s": startup}, cycles
        finally:
            h.close()

    def run_checkpoint(self):
        drv = Driver()
        h, ready, startup = self.start_server(False)
        reference = ready["tokens"]
        cycles = []
        try:
            for c in range(self.args.cycles):
                rss_awake = rss_bytes(h.pid)
                t = time.perf_counter()
                drv.call("cuCheckpointProcessLock", h.pid)
                drv.call("cuCheckpointProcessCheckpoint", h.pid)
                free_s = time.perf_counter() - t
                held = used_bytes() - self.baseline
                rss_asleep = rss_bytes(h.pid)
                train = self.trainer()
                t = time.perf_counter()
                drv.call("cuCheckpointProcessRestore", h.pid)
                drv.call("cuCheckpointProcessUnlock", h.pid)
                restore_s = time.perf_counter() - t
                first_s, prefill = self.first_token(h)
                self.check_tokens(h, reference)
                cycles.append({"cycle": c + 1, "free_s": free_s, "serve_s": restore_s + first_s,
                               "restore_s": restore_s, "first_token_s": first_s,
                               "prefill_s": prefill, "gpu_held_bytes": held,
                               "host_rss_asleep": rss_asleep, "host_rss_awake": rss_awake,
                               "trainer": train, "tokens": "identical"})
                print(f"  checkpoint cycle {c + 1}: free {free_s:.2f} s, serve "
                      f"{restore_s + first_s:.2f} s, held {held / GiB:.2f} GiB, trainer peak "
                      f"{train['peak_bytes'] / GiB:.1f} GiB, tokens identical", flush=True)
            return {"startup_s": startup}, cycles
        finally:
            h.close()

    def context_bytes(self):
        """What a CUDA context of a PyTorch process takes on this GPU."""
        code = "import torch,sys; torch.zeros(1, device='cuda'); print('READY', flush=True); sys.stdin.readline()"
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        used = used_bytes() - self.baseline
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait()
        return used

    def run(self):
        self.baseline = used_bytes()
        self.total = total_bytes()
        result = {"gpu_total_bytes": self.total, "baseline_used_bytes": self.baseline,
                  "cycles": self.args.cycles, "trainer_gib": self.args.trainer_gib,
                  "context_bytes": self.context_bytes(), "methods": {}}
        for m in self.args.methods:
            print(f"== {m}", flush=True)
            self.method = m
            try:
                if m in TURNS:
                    sys.path.insert(0, os.path.dirname(SERVER))
                    from turns import Turns
                    info, cycles = Turns(self, m, sys.modules[__name__]).run()
                elif m in ("gpusleep", "refit"):
                    info, cycles = self.run_gpusleep(m == "refit")
                elif m == "relaunch":
                    info, cycles = self.run_relaunch()
                else:
                    info, cycles = self.run_checkpoint()
                result["methods"][m] = {"info": info, "cycles": cycles}
            except Exception as e:  # noqa: BLE001 - recorded in the report
                print(f"  {m} failed: {e}", flush=True)
                result["methods"][m] = {"error": str(e)[-2000:]}
            self.save(result)
        return result

    def save(self, result):
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "colocate.json"), "w") as f:
            json.dump(result, f, indent=2)


def summarize(result):
    """Medians per method and the ratios the targets are about."""
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else None

    rows = {}
    for m, r in result["methods"].items():
        if "cycles" not in r or not r["cycles"]:
            rows[m] = {"error": r.get("error", "no cycles")}
            continue
        cs = r["cycles"]
        rows[m] = {"free_s": med([c["free_s"] for c in cs]), "serve_s": med([c["serve_s"] for c in cs]),
                   "gpu_held_gib": med([c["gpu_held_bytes"] for c in cs]) / GiB,
                   "host_rss_asleep_gib": med([c["host_rss_asleep"] for c in cs]) / GiB,
                   "trainer_peak_gib": med([c["trainer"]["peak_bytes"] for c in cs]) / GiB}
        rows[m]["cycle_s"] = rows[m]["free_s"] + rows[m]["serve_s"]
    g = rows.get("gpusleep", {}).get("cycle_s")
    for other in ("checkpoint", "relaunch"):
        o = rows.get(other, {}).get("cycle_s")
        if g and o:
            rows.setdefault("ratios", {})[f"{other}_over_gpusleep"] = o / g
    s, q = rows.get("swap", {}).get("cycle_s"), rows.get("sequential", {}).get("cycle_s")
    if s and q:
        rows.setdefault("ratios", {})["swap_over_sequential"] = s / q
    return rows


def headline(summary):
    """The lines a run ends with: each method's median cycle, and swap against sequential."""
    lines = [f"{m}: cycle {summary[m]['cycle_s']:.2f} s (free {summary[m]['free_s']:.2f} s, "
             f"serve again {summary[m]['serve_s']:.2f} s)"
             for m in METHODS if "cycle_s" in summary.get(m, {})]
    r = summary.get("ratios", {}).get("swap_over_sequential")
    if r is not None:
        lines.append(f"swap's cycle is {r:.2f}x sequential's ({summary['swap']['cycle_s']:.2f} s "
                     f"against {summary['sequential']['cycle_s']:.2f} s, same run)")
    return lines


def plot(result, summary, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot")
        return False
    methods = [m for m in METHODS if m in summary and "free_s" in summary[m]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(methods))
    ax1.bar([i - 0.2 for i in x], [summary[m]["free_s"] for m in methods], 0.4, label="time to free")
    ax1.bar([i + 0.2 for i in x], [summary[m]["serve_s"] for m in methods], 0.4,
            label="time to serve again")
    ax1.set_yscale("log")
    ax1.set_xticks(list(x))
    ax1.set_xticklabels(methods)
    ax1.set_ylabel("seconds (median of cycles, log scale)")
    ax1.legend(fontsize=8)
    ratio = summary.get("ratios", {}).get("swap_over_sequential")
    ax1.set_title("handing the GPU to the trainer and back" +
                  (f"\n(swap's cycle: {ratio:.2f}x sequential's)" if ratio is not None else ""))
    ax2.bar([i - 0.2 for i in x], [summary[m]["gpu_held_gib"] for m in methods], 0.4,
            label="GPU memory still used while out")
    ax2.bar([i + 0.2 for i in x], [summary[m]["host_rss_asleep_gib"] for m in methods], 0.4,
            label="server's host memory while out")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(methods)
    ax2.set_ylabel("GiB")
    ax2.legend(fontsize=8)
    ax2.set_title(f"memory (CUDA context: {result['context_bytes'] / GiB:.2f} GiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")
    return True


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="colocate-results")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None,
                    help="the server's layers (default 36)")
    ap.add_argument("--kv-gib", type=float, default=None,
                    help="the server's KV cache (default 40; 80 for swap and sequential)")
    ap.add_argument("--trainer-gib", type=float, default=62.0,
                    help="the one-shot trainer's GPU memory (gpusleep, refit, relaunch, "
                         "checkpoint)")
    ap.add_argument("--replay-gib", type=float, default=20.0,
                    help="the long-lived trainer's replay buffer (swap, sequential)")
    ap.add_argument("--train-steps", type=int, default=3,
                    help="the long-lived trainer's steps per turn (swap, sequential)")
    ap.add_argument("--swap-wait", type=float, default=60.0,
                    help="seconds a swap's wake waits for the memory the sleep releases")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="only merge these JSON results (and this run's, if any) and plot")
    args = ap.parse_args(argv)
    args.build = os.path.abspath(args.build)
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if m not in METHODS:
            ap.error(f"unknown method {m} (known: {', '.join(METHODS)})")
    if args.cycles < 1:
        ap.error("--cycles must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        result = None
        for path in args.merge:
            with open(path) as f:
                part = json.load(f)
            if result is None:
                result = part
            else:
                result["methods"].update(part["methods"])
    else:
        result = Bench(args).run()
    summary = summarize(result)
    result["summary"] = summary
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "colocate.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(summary, indent=2))
    for line in headline(summary):
        print(line)
    plot(result, summary, os.path.join(args.out, "colocate.png"))


if __name__ == "__main__":
    main()
