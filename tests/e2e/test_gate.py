"""The gate over the emulated driver: GPU work a program submits while its memory is asleep waits
for the wake (or wakes it on demand) instead of faulting, at the runtime level (cudaLaunchKernel,
cudaGraphLaunch, cudaMemcpy) and at the driver level (cuLaunchKernel). The emulated driver runs a
kernel on device memory directly: one that touches released memory faults and loses the context,
as on a GPU, which is what happens with the gate off."""
import os
import queue
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import EmulatedCase, only_error, only_result, run_cli  # noqa: E402

CLI = os.environ["GPUSLEEP_TEST_CLI"]
DRIVER_HOST = os.environ["GPUSLEEP_TEST_DRIVER_HOST"]
MiB = 1 << 20


class Gate(EmulatedCase):
    memory = 128 * MiB

    def start(self, argv=None, tag="weights", **env):
        e = dict(self.env)
        e.update(env)
        return super().start(tag=tag, env=e, argv=argv)

    def post(self, h, command):
        """Sends a command without waiting for its answer."""
        h.proc.stdin.write(command + "\n")
        h.proc.stdin.flush()

    def silent(self, h, seconds):
        """True when the program says nothing for `seconds`."""
        try:
            line = h.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        h.lines.put(line)
        return False

    def gate(self, h):
        _, status, _ = self.cli("status", "--pid", str(h.pid))
        return only_result(status)["gate"]

    def workload(self, h):
        h.send("alloc a 8388608 1")
        h.send("alloc b 4194304 2")
        h.send("alloc out 8388608 3")
        expected = h.send("launch out a b")
        self.assertEqual(h.send("graph out a b").split()[2], expected.split()[2])
        return expected.split()[2]

    def test_work_submitted_while_asleep_waits_for_wake_and_is_correct(self):
        h = self.start()
        expected = self.workload(h)
        free_awake = self.free()
        self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(self.free() - free_awake, 20 * MiB)
        g = self.gate(h)
        self.assertTrue(g["closed"])
        self.assertEqual(g["mode"], "wait")
        for command in ("launch out a b", "graph out a b", "check a"):
            self.post(h, command)
            self.assertTrue(self.silent(h, 0.5), f"'{command}' ran while asleep")
            self.assertEqual(self.gate(h)["waiting"], 1)
            self.assertEqual(self.free() - free_awake, 20 * MiB)  # nothing came back
            self.cli("wake", "--pid", str(h.pid))
            answer = h.expect("OK", timeout=30)
            if command == "check a":
                self.assertEqual(answer, "OK check a match")
            else:
                self.assertEqual(answer.split()[2], expected)
            self.cli("sleep", "--pid", str(h.pid))
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.send("lost"), "OK lost no")
        g = self.gate(h)
        self.assertFalse(g["closed"])
        self.assertEqual(g["waits"], 3)
        self.assertGreaterEqual(g["longest_wait_ms"], 400)

    def test_without_the_gate_the_same_launch_faults_and_loses_the_context(self):
        h = self.start(GPUSLEEP_GATE="off")
        self.workload(h)
        self.cli("sleep", "--pid", str(h.pid))
        self.assertFalse(self.gate(h)["closed"])
        self.assertEqual(h.ask("launch out a b"), "ERR launch cudaErrorIllegalAddress")
        self.assertEqual(h.send("lost"), "OK lost yes")

    def test_wake_on_demand_wakes_everything_when_work_arrives(self):
        h = self.start(GPUSLEEP_GATE="wake")
        expected = self.workload(h)
        free_awake = self.free()
        self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(self.free() - free_awake, 20 * MiB)
        self.assertEqual(h.send("launch out a b", timeout=30).split()[2], expected)
        self.assertEqual(self.free(), free_awake)
        _, status, _ = self.cli("status", "--pid", str(h.pid))
        self.assertEqual({t["state"] for t in only_result(status)["tags"] if t["regions"]}, {"awake"})
        g = only_result(status)["gate"]
        self.assertEqual((g["mode"], g["closed"], g["wakes_on_demand"]), ("wake", False, 1))

    def test_wake_on_demand_retries_while_memory_is_held_elsewhere(self):
        h = self.start(GPUSLEEP_GATE="wake")
        expected = self.workload(h)
        self.cli("sleep", "--pid", str(h.pid))
        hog = self.start(tag="hog")
        hog.send(f"alloc x {self.free() - 4 * MiB} 9")  # leaves too little for the wake
        self.post(h, "launch out a b")
        self.assertTrue(self.silent(h, 2.5))
        g = self.gate(h)
        self.assertTrue(g["closed"])
        self.assertGreaterEqual(g["wake_failures"], 1)
        hog.send("free x")
        self.assertEqual(h.expect("OK", timeout=30).split()[2], expected)
        self.assertIn("wake on demand failed", h.stderr())

    def test_a_sleep_waits_for_a_call_in_progress_and_gives_up_cleanly_after_the_drain_time(self):
        h = self.start(GPUSLEEP_GATE_DRAIN_MS="300")
        self.workload(h)
        free_awake = self.free()
        # A kernel running for 2 s keeps the thread inside cudaLaunchKernel: the sleep gives up.
        self.post(h, "slow 2000")
        time.sleep(0.2)
        rc, out, err = self.cli("sleep", "--pid", str(h.pid), ok=False)
        self.assertNotEqual(rc, 0)
        self.assertEqual(only_error(out)["code"], "gpu_busy")
        self.assertIn("cudaLaunchKernel", only_error(out)["message"])
        self.assertEqual(self.free(), free_awake)  # nothing was put to sleep
        self.assertEqual(h.expect("OK", timeout=30), "OK slow")
        self.assertFalse(self.gate(h)["closed"])
        self.assertEqual(h.send("check a"), "OK check a match")
        # A shorter call is waited for: the sleep lands after it.
        self.post(h, "slow 150")
        time.sleep(0.05)
        self.cli("sleep", "--pid", str(h.pid))
        self.assertEqual(h.expect("OK", timeout=30), "OK slow")
        self.assertEqual(self.free() - free_awake, 20 * MiB)
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.send("check b"), "OK check b match")

    def test_a_sleep_without_the_gate_lets_work_on_other_tags_go_on(self):
        h = self.start()
        expected = self.workload(h)
        self.cli("tag", "kv_cache", "--pid", str(h.pid))
        h.send("alloc kv 4194304 4")
        self.cli("sleep", "kv_cache", "--no-gate", "--pid", str(h.pid))
        self.assertFalse(self.gate(h)["closed"])
        self.assertEqual(h.send("launch out a b").split()[2], expected)
        # A gated sleep of another tag closes the gate; its wake opens it again although kv_cache
        # stays asleep.
        self.cli("sleep", "weights", "--pid", str(h.pid))
        self.assertTrue(self.gate(h)["closed"])
        self.cli("wake", "weights", "--pid", str(h.pid))
        self.assertFalse(self.gate(h)["closed"])
        self.assertEqual(h.send("launch out a b").split()[2], expected)

    def test_a_long_wait_is_logged_once(self):
        h = self.start()
        self.workload(h)
        self.cli("sleep", "--pid", str(h.pid))
        self.post(h, "launch out a b")
        self.assertTrue(self.silent(h, 6.5))
        self.cli("wake", "--pid", str(h.pid))
        h.expect("OK", timeout=30)
        err = h.stderr()
        self.assertEqual(err.count("GPU work waits for wake: cudaLaunchKernel"), 1, err)
        self.assertEqual(err.count("GPU work goes on: cudaLaunchKernel waited"), 1, err)

    def test_threads_waiting_at_once_all_go_on_after_wake(self):
        h = self.start()
        expected = self.workload(h)
        self.cli("sleep", "--pid", str(h.pid))
        # The CLI and status run while the host thread waits; several controllers query at once.
        results = queue.Queue()

        def ask_status():
            results.put(run_cli(CLI, ["status", "--pid", str(h.pid)], self.env)[0])

        self.post(h, "launch out a b")
        threads = [threading.Thread(target=ask_status) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([results.get() for _ in threads], [0] * 4)
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.expect("OK", timeout=30).split()[2], expected)

    def test_driver_level_launches_wait_through_every_resolver(self):
        for mode in ("getproc", "getproc_v1", "dlsym", "runtime"):
            with self.subTest(mode=mode):
                h = self.start([DRIVER_HOST, mode])
                h.send("alloc a 8388608 11")
                self.assertEqual(h.send("launch a"), "OK launch 0")
                self.cli("sleep", "--pid", str(h.pid))
                self.post(h, "launch a")
                self.assertTrue(self.silent(h, 0.5), "cuLaunchKernel ran while asleep")
                self.cli("wake", "--pid", str(h.pid))
                self.assertEqual(h.expect("OK", timeout=30), "OK launch 0")
                h.close()


if __name__ == "__main__":
    unittest.main()
