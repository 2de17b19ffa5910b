"""The co-location benchmark's full RL loop: the server and a long-lived trainer both under
gpusleep, taking turns on a GPU that cannot hold both awake (sleep server, wake trainer, train,
sleep trainer, wake server, serve), handed over by gpusleep.swap (one sleeps while the other wakes
into the memory it releases) or one after the other (sleep, then wake)."""
import os
import sys
import time

import gpusleep

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "trainer.py")
TRAINER_RULES = os.path.join(HERE, "trainer_rules.json")
GiB = 1 << 30
# The trainer's tags: weights (model, gradients, Adam state) and replay (its replay buffer) are
# offloaded, the steps' activations and temporaries (default) discarded.
TRAINER_POLICY = "default=discard"


class Turns:
    """Runs the method `swap` or `sequential` for `bench` (colocate.Bench)."""

    def __init__(self, bench, method, helpers):
        self.b = bench
        self.method = method
        self.h = helpers  # Host, fields, used_bytes from colocate.py and the harness
        self.run_dir = bench.env["GPUSLEEP_RUNTIME_DIR"]

    def process(self, host):
        return gpusleep.Process(os.path.join(self.run_dir, f"{host.pid}.sock"), host.pid)

    def start_trainer(self):
        a = self.b.args
        h = self.h.Host(self.b.cli, [sys.executable, TRAINER, "--serve", "--replay-gib",
                                     str(a.replay_gib), "--steps", str(a.train_steps)],
                        self.b.env, extra=["--rules", TRAINER_RULES, "--policy", TRAINER_POLICY])
        return h, self.h.fields(h.expect("READY", timeout=600))

    def train(self, h):
        f = self.h.fields(h.send("train", expect="DONE", timeout=600))
        return {"seconds": float(f["seconds"]), "peak_bytes": int(f["peak_bytes"]),
                "checksum": f["checksum"], "losses": f["losses"]}

    def reference(self):
        """The trainer's checksums over the run's trains when it is never slept (computed once
        per run, before any server holds the GPU)."""
        if getattr(self.b, "trainer_reference", None) is None:
            h, _ = self.start_trainer()
            try:
                self.b.trainer_reference = [self.train(h) for _ in range(self.b.args.cycles)]
            finally:
                h.close()
        return self.b.trainer_reference

    def wait_pinned(self, proc, limit=300):
        """Waits until the process's host mirrors are pinned (they are pinned in the background
        after allocation), so no hand-over pays for pinning."""
        t = time.perf_counter()
        while time.perf_counter() - t < limit:
            if sum(x["mirror_pending_bytes"] for x in proc.status()["tags"]) == 0:
                return
            time.sleep(0.5)

    def hand_over(self, asleep, awake):
        """Puts `asleep` to sleep and wakes `awake` (Process objects); returns (wall seconds,
        the sleep's and the wake's results)."""
        t = time.perf_counter()
        if self.method == "swap":
            r = gpusleep.swap(sleep=[asleep], wake=[awake], wait=self.b.args.swap_wait)
            slept, woke = r.slept[asleep.pid], r.woken[awake.pid]
        else:
            slept = asleep.sleep()
            woke = awake.wake()
        return time.perf_counter() - t, slept, woke

    def run(self):
        b, used = self.b, self.h.used_bytes
        reference = self.reference()
        server, ready, startup = b.start_server(True)
        trainer = None
        try:
            tokens = ready["tokens"]
            server_bytes = used() - b.baseline
            sp = self.process(server)
            self.wait_pinned(sp)
            tags = {x["tag"]: x["bytes"] for x in sp.status()["tags"]}
            sp.sleep()
            server_asleep = used() - b.baseline
            t = time.perf_counter()
            trainer, tready = self.start_trainer()
            trainer_startup = time.perf_counter() - t
            tp = self.process(trainer)
            self.wait_pinned(tp)
            tp.sleep()
            sp.wake()
            cycles, trainer_bytes = [], 0
            for c in range(b.args.cycles):
                to_trainer, slept_s, woke_t = self.hand_over(sp, tp)
                train = self.train(trainer)
                rss_asleep = self.h.rss_bytes(server.pid)
                trainer_bytes = max(trainer_bytes, used() - b.baseline - server_asleep)
                want = reference[c]["checksum"]
                if train["checksum"] != want or train["losses"] != reference[c]["losses"]:
                    raise RuntimeError(
                        f"cycle {c + 1}: the trainer's parameters differ from a run that never "
                        f"slept: checksum {train['checksum']} != {want}, losses "
                        f"{train['losses']} != {reference[c]['losses']}")
                to_server, slept_t, woke_s = self.hand_over(tp, sp)
                first_s, prefill = b.first_token(server)
                b.check_tokens(server, tokens)
                cycles.append({
                    "cycle": c + 1, "free_s": to_trainer, "serve_s": to_server + first_s,
                    "restore_s": to_server, "first_token_s": first_s, "prefill_s": prefill,
                    "server_sleep_ms": slept_s["duration_ms"],
                    "trainer_wake_ms": woke_t["duration_ms"],
                    "trainer_sleep_ms": slept_t["duration_ms"],
                    "server_wake_ms": woke_s["duration_ms"],
                    "server_copied_bytes": slept_s["copied_bytes"],
                    "trainer_copied_bytes": slept_t["copied_bytes"],
                    "gpu_held_bytes": server_asleep, "host_rss_asleep": rss_asleep,
                    "trainer": train, "tokens": "identical", "trainer_state": "identical"})
                print(f"  {self.method} cycle {c + 1}: to trainer {to_trainer:.2f} s, back to "
                      f"server and first token {to_server + first_s:.2f} s, train "
                      f"{train['seconds']:.2f} s, tokens identical, trainer checksum "
                      f"{train['checksum']} as without sleeping", flush=True)
            room = b.total - b.baseline
            both_fit = server_bytes + trainer_bytes <= room
            if both_fit:
                print(f"  warning: server ({server_bytes / GiB:.1f} GiB) and trainer "
                      f"({trainer_bytes / GiB:.1f} GiB) would both fit in {room / GiB:.1f} GiB: "
                      "raise --kv-gib", flush=True)
            return {"startup_s": startup, "trainer_startup_s": trainer_startup,
                    "tags_bytes": tags, "server_bytes": server_bytes,
                    "trainer_bytes": trainer_bytes, "room_bytes": room, "both_fit": both_fit,
                    "trainer_weights_bytes": int(tready["weights_bytes"]),
                    "trainer_replay_bytes": int(tready["replay_bytes"]),
                    "weights_bytes": int(ready["weights_bytes"]),
                    "kv_bytes": int(ready["kv_bytes"])}, cycles
        finally:
            if trainer is not None:
                trainer.close()
            server.close()
