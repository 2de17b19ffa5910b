"""GPU tests: unmodified programs are put to sleep by the CLI from another process, their memory
is seen released by the driver (nvidia-smi, from outside), they are woken, and their results are
bit-identical. Exits 77 (skipped) without a GPU. Prints "SUMMARY ..." lines with the figures."""
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import (Host, have_gpu, nvidia_free_bytes, only_result, read_progress,  # noqa: E402
                     run_cli, wait_progress)

CLI = os.environ.get("GPUSLEEP_TEST_CLI", "")
GRAPH_PROGRAM = os.environ.get("GPUSLEEP_TEST_GRAPH_PROGRAM", "")
STATIC_PROGRAM = os.environ.get("GPUSLEEP_TEST_STATIC_PROGRAM", "")
HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PROGRAM = os.path.join(HERE, "torch_program.py")
CUPY_PROGRAM = os.path.join(HERE, "cupy_program.py")
JAX_PROGRAM = os.path.join(HERE, "jax_program.py")
TRANSFORMERS_SERVER = os.path.join(HERE, "transformers_server.py")
BUSY_PROGRAM = os.path.join(HERE, "busy_program.py")
GiB = 1 << 30


def summary(text):
    print(f"SUMMARY {text}", flush=True)


class GpuTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.env = dict(os.environ)
        self.env["GPUSLEEP_RUNTIME_DIR"] = os.path.join(self.tmp.name, "run")
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.close()
        self.tmp.cleanup()

    def start(self, argv, tag, extra=()):
        h = Host(CLI, argv, self.env, tag=tag, extra=extra)
        self.hosts.append(h)
        return h

    def cli(self, *args, ok=True):
        rc, out, err = run_cli(CLI, args, self.env)
        if ok:
            self.assertEqual(rc, 0, f"gpusleep {' '.join(args)} failed: {err} {out}")
        return out

    def sleep_and_check_release(self, pid, *args):
        """Sleeps, checks from outside that the driver's free memory rose by >= 99% of the
        released bytes, and returns the reply's result."""
        free_before = nvidia_free_bytes()
        result = only_result(self.cli("sleep", "--pid", str(pid), *args))
        free_asleep = nvidia_free_bytes()
        released = result["bytes"]
        self.assertGreater(released, 0)
        self.assertGreaterEqual(free_asleep - free_before, 0.99 * released,
                                f"freed {free_asleep - free_before} of {released} bytes")
        result["freed_bytes"] = free_asleep - free_before
        return result

    def tag_states(self, pid):
        status = only_result(self.cli("status", "--pid", str(pid)))
        return {t["tag"]: t for t in status["tags"]}

    def need_python_module(self, module):
        try:
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True,
                           capture_output=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.skipTest(f"{module} is not available")

    def verified(self, host):
        answer = host.send("verify")
        self.assertTrue(answer.startswith("OK verify") and "differs" not in answer
                        and "mismatch" not in answer, answer)

    def cycle_program(self, host, label, cycles=2):
        """Sleeps and wakes a program that answers "verify" with "OK verify" and every field
        "...=match":
        the bytes in its regions are released (seen from outside), the bytes it manages itself
        are reported as such, and every answer after wake is bit-identical. Returns the status
        taken before the first sleep."""
        self.verified(host)
        status = only_result(self.cli("status", "--pid", str(host.pid)))
        managed = status["totals"]["bytes"]
        unsleepable = {u["kind"]: u["bytes"] for u in status["unsleepable"]}
        for cycle in range(1, cycles + 1):
            free_before = nvidia_free_bytes()
            slept = only_result(self.cli("sleep", "--pid", str(host.pid)))
            freed = nvidia_free_bytes() - free_before
            self.assertEqual(slept["bytes"], managed)
            self.assertGreaterEqual(freed, 0.99 * managed - (2 << 20),
                                    f"freed {freed} of {managed} bytes")
            woke = only_result(self.cli("wake", "--pid", str(host.pid)))
            self.assertEqual(woke["bytes"], managed)
            self.verified(host)
            summary(f"{label} cycle {cycle}: slept {managed / GiB:.2f} GiB in regions (driver saw "
                    f"{freed / GiB:.2f} GiB freed) in {slept['duration_ms']:.1f} ms, woke in "
                    f"{woke['duration_ms']:.1f} ms; not sleepable: "
                    + ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in unsleepable.items() if v)
                    + "; results bit-identical")
        return status


class GraphProgram(GpuTest):
    def test_sleep_releases_memory_and_wake_restores_buffers_and_graph(self):
        host = self.start([GRAPH_PROGRAM, "--mib", "2048", "--chunks", "4"], tag="weights")
        host.expect("READY", timeout=300)
        self.assertIn("inputs=match graph=match", host.send("verify"))
        for cycle in (1, 2, 3):
            slept = self.sleep_and_check_release(host.pid)
            tags = self.tag_states(host.pid)
            self.assertEqual(tags["weights"]["state"], "asleep")
            self.assertEqual(tags["weights"]["resident_bytes"], 0)
            woke = only_result(self.cli("wake", "--pid", str(host.pid)))
            self.assertEqual(woke["bytes"], slept["bytes"])
            self.assertIn("inputs=match graph=match", host.send("verify"))
            summary(f"graph-program cycle {cycle}: slept {slept['bytes'] / GiB:.2f} GiB "
                    f"(driver saw {slept['freed_bytes'] / GiB:.2f} GiB freed) in "
                    f"{slept['duration_ms']:.1f} ms (copy {slept['copy_gbps']:.1f} GB/s); woke in "
                    f"{woke['duration_ms']:.1f} ms (copy {woke['copy_gbps']:.1f} GB/s); "
                    f"buffers and graph replay bit-identical")
        # A sleeping tag sleeps no further; an awake one wakes no further.
        self.cli("sleep", "--pid", str(host.pid))
        again = only_result(self.cli("sleep", "--pid", str(host.pid)))
        self.assertEqual(again["regions"], 0)
        self.assertIn("weights", again["noop"])
        self.cli("wake", "--pid", str(host.pid))
        self.assertIn("inputs=match graph=match", host.send("verify"))
        sock = os.path.join(self.env["GPUSLEEP_RUNTIME_DIR"], f"{host.pid}.sock")
        self.assertTrue(os.path.exists(sock))
        host.close()
        self.assertFalse(os.path.exists(sock), "socket left behind at exit")


class TorchProgram(GpuTest):
    def test_weights_kv_and_graph_sleep_and_wake_bit_identical(self):
        try:
            subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                           check=True, capture_output=True, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.skipTest("PyTorch with CUDA is not available")
        host = self.start([sys.executable, TORCH_PROGRAM, "--layers", "8", "--dim", "8192",
                           "--kv-gib", "8"], tag="weights")
        host.expect("PHASE weights", timeout=300)
        host.send("go", expect="PHASE kv")
        self.cli("tag", "kv_cache", "--pid", str(host.pid))
        host.send("go", expect="PHASE graph")
        self.cli("tag", "cuda_graph", "--pid", str(host.pid))
        host.send("go", expect="READY", timeout=300)
        self.assertEqual(host.send("verify"), "OK verify weights=match output=match")
        tags = self.tag_states(host.pid)
        for t in ("weights", "kv_cache", "cuda_graph"):
            self.assertGreater(tags[t]["regions"], 0, f"no {t} regions: {tags}")
        self.assertGreaterEqual(tags["kv_cache"]["bytes"], 8 * GiB)

        # 1. Everything offloaded: outputs bit-identical.
        slept = self.sleep_and_check_release(host.pid, "--policy", "offload")
        woke = only_result(self.cli("wake", "--pid", str(host.pid)))
        self.assertEqual(host.send("verify"), "OK verify weights=match output=match")
        summary(f"torch all-offload: slept {slept['bytes'] / GiB:.2f} GiB (driver saw "
                f"{slept['freed_bytes'] / GiB:.2f} GiB freed) in {slept['duration_ms']:.1f} ms; "
                f"woke in {woke['duration_ms']:.1f} ms; outputs bit-identical")

        # 2. Default policies: the KV cache is discarded, weights and graph memory offloaded.
        slept = self.sleep_and_check_release(host.pid)
        policies = {t["tag"]: t["policy"] for t in slept["tags"]}
        self.assertEqual(policies.get("kv_cache"), "discard")
        self.assertEqual(policies.get("weights"), "offload")
        self.assertGreaterEqual(slept["discarded_bytes"], 8 * GiB)
        self.cli("wake", "--pid", str(host.pid))
        self.assertTrue(host.send("verify").startswith("OK verify weights=match"))
        host.send("refill_kv")
        self.assertEqual(host.send("verify"), "OK verify weights=match output=match")
        summary(f"torch kv-discard: slept {slept['bytes'] / GiB:.2f} GiB "
                f"({slept['discarded_bytes'] / GiB:.2f} GiB discarded) in "
                f"{slept['duration_ms']:.1f} ms; weights intact; outputs bit-identical after "
                f"the program refilled its KV buffer")

        # 3. Only the KV cache: exactly its bytes go.
        kv_bytes = self.tag_states(host.pid)["kv_cache"]["bytes"]
        slept = self.sleep_and_check_release(host.pid, "kv_cache")
        self.assertEqual(slept["bytes"], kv_bytes)
        self.assertLess(abs(slept["freed_bytes"] - kv_bytes), 0.01 * kv_bytes + (64 << 20))
        self.cli("wake", "--pid", str(host.pid), "kv_cache")
        host.send("refill_kv")
        self.assertEqual(host.send("verify"), "OK verify weights=match output=match")
        summary(f"torch kv-only: released {kv_bytes / GiB:.2f} GiB, driver saw "
                f"{slept['freed_bytes'] / GiB:.2f} GiB freed")


class StaticRuntimeProgram(GpuTest):
    def test_static_runtime_program_sleeps_and_wakes_and_legacy_ipc_is_refused(self):
        host = self.start([STATIC_PROGRAM, "--mib", "1024", "--chunks", "4"], tag="weights")
        host.expect("READY", timeout=300)
        status = self.cycle_program(host, "static-runtime program")
        self.assertGreaterEqual(status["totals"]["bytes"], 2 * GiB)
        self.assertEqual(host.send("ipc"), "OK ipc cudaErrorNotSupported")
        self.assertIn("legacy IPC", host.stderr())
        self.assertIn("inputs=match graph=match", host.send("verify"))


class CupyProgram(GpuTest):
    def test_cupy_arrays_sleep_and_wake_bit_identical(self):
        self.need_python_module("cupy")
        host = self.start([sys.executable, CUPY_PROGRAM, "4"], tag="weights")
        host.expect("READY", timeout=600)
        status = self.cycle_program(host, "cupy")
        self.assertGreaterEqual(status["totals"]["bytes"], 4 * GiB)


class JaxProgram(GpuTest):
    def test_jax_with_default_preallocation_sleeps_and_wakes_bit_identical(self):
        self.need_python_module("jax")
        host = self.start([sys.executable, JAX_PROGRAM], tag="weights")
        ready = host.expect("READY", timeout=600)
        self.assertIn("backend=gpu", ready)
        status = self.cycle_program(host, "jax")
        # XLA preallocates 75% of the device with cuMemCreate: all of it is in regions.
        total = status["devices"][0]["total_bytes"]
        self.assertGreaterEqual(status["totals"]["bytes"], 0.7 * total, f"status: {status}")
        unsleepable = {u["kind"]: u["bytes"] for u in status["unsleepable"]}
        self.assertEqual(unsleepable["application_vmm"], 0)


class TorchExpandableSegments(GpuTest):
    def test_expandable_segments_sleep_and_wake_bit_identical(self):
        self.need_python_module("torch")
        self.env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        host = self.start([sys.executable, TORCH_PROGRAM, "--layers", "4", "--dim", "4096",
                           "--kv-gib", "2"], tag="weights")
        for _ in range(2):
            host.expect("PHASE", timeout=300)
            host.send("go", expect=None)
        host.expect("PHASE", timeout=300)
        host.send("go", expect="READY", timeout=300)
        status = self.cycle_program(host, "torch expandable_segments")
        self.assertGreaterEqual(status["totals"]["bytes"], 2 * GiB)
        regions = only_result(self.cli("regions", "--pid", str(host.pid)))["regions"]
        self.assertTrue(any(r["adopted"] for r in regions))
        unsleepable = {u["kind"]: u["bytes"] for u in status["unsleepable"]}
        self.assertLess(unsleepable["application_vmm"], 64 << 20)


class TransformersServer(GpuTest):
    def test_preset_alone_tags_weights_kv_cache_and_cuda_graph(self):
        self.need_python_module("transformers")
        host = self.start([sys.executable, TRANSFORMERS_SERVER], tag=None,
                          extra=["--preset", "transformers"])
        ready = host.expect("READY", timeout=600)
        tokens = ready.split()[1].split("=", 1)[1]
        tags = self.tag_states(host.pid)
        for t in ("weights", "kv_cache", "cuda_graph"):
            self.assertGreater(tags.get(t, {}).get("bytes", 0), 0, f"no {t} regions: {tags}")
        regions = only_result(self.cli("regions", "--pid", str(host.pid)))["regions"]
        kv = [r for r in regions if r["tag"] == "kv_cache"]
        self.assertTrue(all(r["rule"] == "kv caches" for r in kv), kv[:3])
        # The KV cache alone: exactly its bytes are freed, seen from outside.
        kv_bytes = tags["kv_cache"]["bytes"]
        free_before = nvidia_free_bytes()
        slept = only_result(self.cli("sleep", "--pid", str(host.pid), "kv_cache"))
        freed = nvidia_free_bytes() - free_before
        self.assertEqual(slept["bytes"], kv_bytes)
        self.assertEqual(slept["discarded_bytes"], kv_bytes)  # kv_cache discards by default
        self.assertLess(abs(freed - kv_bytes), 0.01 * kv_bytes + (64 << 20))
        self.cli("wake", "--pid", str(host.pid), "kv_cache")
        self.assertEqual(host.send("generate"), f"OK tokens={tokens}")
        # Everything: weights and graph memory offloaded, the cache dropped; same tokens.
        slept = self.sleep_and_check_release(host.pid)
        self.cli("wake", "--pid", str(host.pid))
        self.assertEqual(host.send("generate"), f"OK tokens={tokens}")
        groups = only_result(self.cli("regions", "--pid", str(host.pid), "--group"))["groups"]
        summary(f"transformers server ({ready.split()[2]}) under --preset transformers: "
                + ", ".join(f"{t} {tags[t]['bytes'] / GiB:.2f} GiB in {tags[t]['regions']} regions"
                            for t in ("weights", "kv_cache", "cuda_graph"))
                + f"; other: {sum(v['bytes'] for k, v in tags.items() if k not in ('weights', 'kv_cache', 'cuda_graph')) / GiB:.2f} GiB; "
                f"kv_cache sleep freed {freed / GiB:.2f} GiB of {kv_bytes / GiB:.2f} GiB; "
                f"full sleep {slept['bytes'] / GiB:.2f} GiB; tokens identical; "
                f"{len(groups)} call sites")


class GateUnderLoad(GpuTest):
    """A program that never stops launching kernels, graphs, copies and memsets is put to sleep
    while it runs: its GPU work waits (no progress, no fault) and goes on after wake with every
    result bit-identical; with GPUSLEEP_GATE=wake its next call wakes it."""

    def start_busy(self, progress, gib=2.0):
        host = self.start([sys.executable, BUSY_PROGRAM, "--progress", progress,
                           "--buffer-gib", str(gib)], tag="weights")
        host.expect("READY", timeout=300)
        return host

    def test_work_in_flight_waits_while_asleep_and_goes_on_identical(self):
        self.need_python_module("torch")
        progress = os.path.join(self.tmp.name, "progress")
        host = self.start_busy(progress)
        it, _ = wait_progress(progress, 10)
        for cycle in (1, 2, 3):
            free_before = nvidia_free_bytes()
            slept = only_result(self.cli("sleep", "--pid", str(host.pid)))
            freed = nvidia_free_bytes() - free_before
            self.assertGreaterEqual(freed, 0.99 * slept["bytes"] - (2 << 20))
            time.sleep(0.3)
            frozen, _ = read_progress(progress)
            time.sleep(1.0)
            self.assertEqual(read_progress(progress)[0], frozen, "GPU work ran while asleep")
            status = only_result(self.cli("status", "--pid", str(host.pid)))
            self.assertTrue(status["gate"]["closed"])
            self.assertGreaterEqual(status["gate"]["waiting"], 1)
            woke = only_result(self.cli("wake", "--pid", str(host.pid)))
            it, bad = wait_progress(progress, frozen + 20)
            self.assertEqual(bad, 0)
            summary(f"gate under load cycle {cycle}: slept {slept['bytes'] / GiB:.2f} GiB while the "
                    f"program ran (driver saw {freed / GiB:.2f} GiB freed) in "
                    f"{slept['duration_ms']:.1f} ms (drain and sync {slept['sync_ms']:.1f} ms); "
                    f"no progress while asleep; woke in {woke['duration_ms']:.1f} ms; "
                    f"{it} iterations, 0 mismatches")
        gate = only_result(self.cli("status", "--pid", str(host.pid)))["gate"]
        self.assertEqual(host.send("exit", expect="DONE").split()[2], "mismatches=0")
        summary(f"gate under load: {gate['calls']} gated calls from {gate['threads']} threads, "
                f"{gate['waits']} waited, the longest {gate['longest_wait_ms']:.0f} ms; "
                f"membarrier {gate['membarrier']}")

    def test_wake_on_demand_under_load(self):
        self.need_python_module("torch")
        progress = os.path.join(self.tmp.name, "progress")
        self.env["GPUSLEEP_GATE"] = "wake"
        host = self.start_busy(progress, gib=1.0)
        it, _ = wait_progress(progress, 10)
        free_before = nvidia_free_bytes()
        slept = only_result(self.cli("sleep", "--pid", str(host.pid)))
        # Iterations counted from here ran after the sleep: each one woke the program or
        # followed a wake.
        frozen, _ = read_progress(progress)
        it, bad = wait_progress(progress, frozen + 20)
        self.assertEqual(bad, 0)
        status = only_result(self.cli("status", "--pid", str(host.pid)))
        self.assertEqual({t["state"] for t in status["tags"] if t["regions"]}, {"awake"})
        self.assertGreaterEqual(status["gate"]["wakes_on_demand"], 1)
        self.assertLess(abs(nvidia_free_bytes() - free_before), 64 << 20)
        self.assertEqual(host.send("exit", expect="DONE").split()[2], "mismatches=0")
        summary(f"wake on demand under load: slept {slept['bytes'] / GiB:.2f} GiB, the program's "
                f"next GPU call woke it ({status['gate']['wakes_on_demand']} wakes on demand); "
                f"{it} iterations, 0 mismatches")


if __name__ == "__main__":
    if not have_gpu():
        print("no GPU: skipped")
        sys.exit(77)
    if not CLI or not GRAPH_PROGRAM:
        print("GPUSLEEP_TEST_CLI and GPUSLEEP_TEST_GRAPH_PROGRAM must be set")
        sys.exit(2)
    unittest.main(verbosity=2)
