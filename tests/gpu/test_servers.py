"""GPU tests of real servers started as their users start them, under `gpusleep run` with the
shipped presets: `transformers serve` plain, with continuous batching, and with continuous batching
and CUDA graphs, serving a seeded random Llama saved locally (serve_model.py), with greedy
requests over HTTP. Each test
serves the same requests from the bare server first, then under gpusleep, in the same run:
  - at least 95% of the device memory the library holds for the process is tagged weights,
    kv_cache or cuda_graph;
  - `sleep kv_cache` alone frees at least 95% of the KV cache, seen by the driver;
  - after every sleep/wake cycle the completions are those of the bare server;
  - a request that arrives while the server sleeps waits, and answers identically after wake;
  - serving speed under gpusleep against the bare server's (reported as a ratio).
Prints "SUMMARY ..." lines and writes servers-NAME.json to $GPUSLEEP_RESULTS_DIR (default: the
current directory). Exits 77 (skipped) without a GPU or without the serving packages
(scripts/fetch-wheels.sh; scripts/servers.sh installs them)."""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_case import CLI, RESULTS, ServerCase, main as server_main  # noqa: E402
from harness import nvidia_free_bytes  # noqa: E402
import serve_client as sc  # noqa: E402

MODEL_DIR = os.environ.get("GPUSLEEP_TEST_MODEL_DIR",
                           os.path.join(tempfile.gettempdir(), "gpusleep-serve-llama"))
SERVE_MODULES = ("torch", "transformers", "fastapi", "uvicorn", "openai", "pydantic")
GiB = 1 << 30
MiB = 1 << 20
CYCLES = 3


def summary(text):
    print(f"SUMMARY {text}", flush=True)


def preset_for_servers(env):
    """`auto` where this CLI has it (every preset, in order), else `transformers`."""
    p = subprocess.run([CLI, "run", "--preset", "auto", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    return "auto" if p.returncode == 0 else "transformers"


class TransformersServe(ServerCase):
    def setUp(self):
        super().setUp()
        built = subprocess.run([sys.executable, os.path.join(HERE, "serve_model.py"), MODEL_DIR],
                               env=self.env, capture_output=True, text=True, timeout=900)
        self.assertEqual(built.returncode, 0, built.stderr[-3000:])
        self.model_bytes = int(built.stdout.split()[-1])

    def serve(self, label, flags, under=None):
        """Starts `transformers serve` (under `gpusleep run` when `under` gives its arguments);
        returns (process, client, seconds until healthy)."""
        proc, base, ready = self.start(
            f"servers-{label}", lambda port: sc.transformers_command() + [
                "serve", MODEL_DIR, "--host", "127.0.0.1", "--port", str(port), "--dtype",
                "bfloat16"] + flags, under)
        return proc, sc.Completions(base, MODEL_DIR), ready

    def sleep(self, pid, *args):
        free_before = nvidia_free_bytes()
        t0 = time.monotonic()
        result = self.cli("sleep", "--pid", str(pid), *args)
        result["wall_ms"] = (time.monotonic() - t0) * 1e3
        result["freed_bytes"] = nvidia_free_bytes() - free_before
        return result

    def wake(self, pid, *args):
        t0 = time.monotonic()
        result = self.cli("wake", "--pid", str(pid), *args)
        result["wall_ms"] = (time.monotonic() - t0) * 1e3
        return result

    def check_server(self, name, flags, prefix_probe):
        out = {"server": name, "flags": flags, "model_bytes": self.model_bytes}
        # The bare server: the completions every later answer must equal, and its speed.
        proc, client, out["bare_ready_s"] = self.serve(f"{name}-bare", flags)
        client.texts()  # warm-up (graphs, allocator)
        expected = client.texts()
        out["bare_tokens_per_s"] = client.rate()
        self.assertEqual(client.texts(), expected, "the bare server is not deterministic")
        sc.stop_server(proc)
        time.sleep(2)

        preset = preset_for_servers(self.env)
        out["preset"] = preset
        proc, client, out["ready_s"] = self.serve(name, flags, under=["--preset", preset])
        client.texts()
        self.assertEqual(client.texts(), expected, "completions under gpusleep differ from bare")
        out["tokens_per_s"] = client.rate()
        out["speed_ratio"] = out["tokens_per_s"] / out["bare_tokens_per_s"]
        self.assertEqual(client.texts(), expected)

        # Where the memory is.
        status = self.cli("status", "--pid", str(proc.pid))
        tags = {t["tag"]: t["bytes"] for t in status["tags"]}
        unsleepable = sum(u["bytes"] for u in status["unsleepable"])
        held = sum(tags.values()) + unsleepable
        tagged = sum(tags.get(t, 0) for t in ("weights", "kv_cache", "cuda_graph"))
        out.update(tags=tags, unsleepable_bytes=unsleepable, held_bytes=held)
        groups = self.cli("regions", "--pid", str(proc.pid), "--group", "--depth", "2")["groups"]
        out["default_call_sites"] = [g for g in groups if "default" in g["tags"]][:8]
        self.assertGreaterEqual(tagged, 0.95 * held,
                                f"tags {tags}; largest untagged call sites: {out['default_call_sites'][:4]}")
        self.assertGreater(tags.get("weights", 0), 0.9 * self.model_bytes)
        self.assertGreater(tags.get("kv_cache", 0), 0)

        # The KV cache alone.
        kv = tags["kv_cache"]
        slept = self.sleep(proc.pid, "kv_cache")
        self.assertGreaterEqual(slept["freed_bytes"], 0.95 * kv - 64 * MiB,
                                f"sleep kv_cache freed {slept['freed_bytes']} of {kv}")
        woke = self.wake(proc.pid, "kv_cache")
        self.assertEqual(client.texts(), expected, "completions differ after sleep kv_cache")
        out["kv_sleep"] = {k: slept[k] for k in ("bytes", "freed_bytes", "duration_ms", "wall_ms")}
        out["kv_wake"] = {k: woke[k] for k in ("bytes", "duration_ms", "wall_ms")}

        # Whole cycles: everything asleep (weights and graphs offloaded, the KV cache dropped).
        out["cycles"] = []
        for cycle in range(1, CYCLES + 1):
            slept = self.sleep(proc.pid)
            self.assertGreaterEqual(slept["freed_bytes"], 0.99 * slept["bytes"] - 64 * MiB)
            woke = self.wake(proc.pid)
            self.assertEqual(client.texts(), expected, f"completions differ after cycle {cycle}")
            out["cycles"].append({"sleep_ms": slept["duration_ms"], "sleep_wall_ms": slept["wall_ms"],
                                  "wake_ms": woke["duration_ms"], "wake_wall_ms": woke["wall_ms"],
                                  "bytes": slept["bytes"], "freed_bytes": slept["freed_bytes"]})

        # A request that arrives while asleep waits for the wake, then answers identically.
        self.sleep(proc.pid)
        pending = sc.Background(lambda: client.one(sc.PROMPTS[0]))
        time.sleep(3)
        self.assertFalse(pending.done.is_set(), "a request was answered while the server slept")
        woke = self.wake(proc.pid)
        self.assertTrue(pending.done.wait(300), "the request did not finish after wake")
        self.assertIsNone(pending.error, pending.error)
        self.assertEqual(pending.result[0], expected[0])
        out["asleep_request"] = "waited, identical"

        if prefix_probe:
            out["prefix"] = self.probe_prefix_cache(proc.pid, client)
        out["tokens_per_s_after"] = client.rate()
        out["speed_ratio_after"] = out["tokens_per_s_after"] / out["bare_tokens_per_s"]
        self.report(name, out)

    def probe_prefix_cache(self, pid, client):
        """A prompt longer than a block of the paged cache, asked again after the KV cache slept:
        with the cache offloaded the server's shared prefix blocks come back and the answer must
        be the same; with it discarded the server still indexes those blocks (reported)."""
        first = client.one(sc.LONG_PROMPT)[0]
        self.sleep(pid, "kv_cache", "--policy", "offload")
        self.wake(pid, "kv_cache")
        self.assertEqual(client.one(sc.LONG_PROMPT)[0], first,
                         "a shared prefix differs after the KV cache was offloaded and restored")
        self.sleep(pid, "kv_cache")
        self.wake(pid, "kv_cache")
        after_discard = client.one(sc.LONG_PROMPT)[0]
        return {"offload": "identical",
                "discard": "identical" if after_discard == first else "different"}

    def report(self, name, out):
        sc.write_json(os.path.join(RESULTS, f"servers-{name}.json"), out)
        tags = out["tags"]
        cycles = out["cycles"]
        summary(f"{name} under --preset {out['preset']}: "
                + ", ".join(f"{t} {tags.get(t, 0) / GiB:.2f} GiB" for t in ("weights", "kv_cache", "cuda_graph"))
                + f", default {tags.get('default', 0) / GiB:.2f} GiB, not sleepable "
                f"{out['unsleepable_bytes'] / GiB:.2f} GiB; sleep kv_cache freed "
                f"{out['kv_sleep']['freed_bytes'] / GiB:.2f} GiB in {out['kv_sleep']['duration_ms']:.0f} ms, "
                f"woke in {out['kv_wake']['duration_ms']:.0f} ms; full sleep "
                + "/".join(f"{c['sleep_ms']:.0f}" for c in cycles) + " ms, wake "
                + "/".join(f"{c['wake_ms']:.0f}" for c in cycles) + " ms; completions identical "
                f"after every cycle; a request while asleep waited; speed {out['speed_ratio']:.3f}x "
                f"bare ({out['tokens_per_s']:.0f} vs {out['bare_tokens_per_s']:.0f} tokens/s), "
                f"{out['speed_ratio_after']:.3f}x after the cycles"
                + (f"; long prompt after a KV discard: {out['prefix']['discard']}" if "prefix" in out else ""))

    def server_case(self, name, flags, prefix_probe):
        """check_server, failing with the server's own log when it refuses a request (a 503 from
        transformers serve: its batching worker died, with the reason in its log)."""
        try:
            self.check_server(name, flags, prefix_probe)
        except sc.ServerError as e:
            self.fail_with_log(f"{name}: {e}")

    def test_plain_serve_tags_its_memory_and_sleeps_and_wakes_identically(self):
        self.server_case("transformers-serve", [], prefix_probe=False)

    def test_continuous_batching_tags_its_memory_and_sleeps_and_wakes_identically(self):
        self.server_case("transformers-serve-cb", ["--continuous-batching"], prefix_probe=True)

    def test_continuous_batching_with_cuda_graphs_tags_its_memory_and_sleeps_and_wakes_identically(self):
        self.server_case("transformers-serve-cb-graphs",
                         ["--continuous-batching", "--cb-use-cuda-graph"], prefix_probe=True)


if __name__ == "__main__":
    server_main(SERVE_MODULES)
