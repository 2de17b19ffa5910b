"""End to end over the emulated driver: a wake that waits for memory (`wake --wait`) takes it as
it is freed and stays all or nothing at its deadline; a swap sleeps one process while another
wakes into the memory it releases, on a device that cannot hold both; bad selections are refused
before anything moves, and a swap whose wake never gets its memory leaves each process whole."""
import os
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import EmulatedCase  # noqa: E402  (puts the package under test on the path)
import gpusleep  # noqa: E402
from gpusleep.swap import SwapError, swap  # noqa: E402

MiB = 1 << 20
HOST = os.environ.get("GPUSLEEP_TEST_HOST", "")


class Hog:
    """A co-located job without the library, holding device memory until freed."""

    def __init__(self, env, nbytes):
        env = dict(env)
        env.pop("LD_PRELOAD", None)
        self.proc = subprocess.Popen([HOST], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout.readline().strip() == "READY"
        self.send(f"alloc big {nbytes} 9")

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        assert reply.startswith("OK"), reply
        return reply

    def free(self):
        self.send("free big")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        self.proc.stdin.close()
        self.proc.stdout.close()


class Swap(EmulatedCase):
    memory = 256 * MiB

    def setUp(self):
        super().setUp()
        os.environ["GPUSLEEP_RUNTIME_DIR"] = self.run_dir  # for gpusleep.attach
        self.hogs = []

    def tearDown(self):
        for h in self.hogs:
            h.close()
        super().tearDown()

    def hog(self, nbytes):
        h = Hog(self.env, nbytes)
        self.hogs.append(h)
        return h

    def host(self, *buffers):
        """A host under the library holding `buffers` ((name, bytes, seed)...), all `weights`."""
        h = self.start(tag="weights")
        for name, nbytes, seed in buffers:
            h.send(f"alloc {name} {nbytes} {seed}")
        return h

    def assert_intact(self, h, *names):
        for n in names:
            self.assertEqual(h.send(f"check {n}"), f"OK check {n} match")

    def test_a_waiting_wake_takes_the_memory_once_it_is_freed(self):
        b = self.host(("b1", 64 * MiB, 1), ("b2", 64 * MiB, 2))
        proc = gpusleep.attach(pid=b.pid)
        proc.sleep()
        hog = self.hog(200 * MiB)  # leaves 56 MiB: the wake cannot have its 128 MiB
        outcome = {}
        t = threading.Thread(target=lambda: outcome.update(r=proc.wake(wait=30)))
        t.start()
        time.sleep(0.5)
        self.assertTrue(t.is_alive(), "the wake returned while its memory was still held")
        self.assertEqual(b.send("touch b1"), "OK touch b1 fault")  # nothing woken yet
        hog.free()
        t.join(30)
        self.assertFalse(t.is_alive())
        self.assertEqual(outcome["r"]["bytes"], 128 * MiB)
        self.assertGreater(outcome["r"]["wait_ms"], 300)
        self.assert_intact(b, "b1", "b2")

    def test_a_waiting_wake_at_its_deadline_wakes_nothing_and_says_what_was_missing(self):
        b = self.host(("b1", 64 * MiB, 1), ("b2", 64 * MiB, 2))
        gpusleep.attach(pid=b.pid).sleep()
        self.hog(200 * MiB)
        free_held = self.free()
        t = time.monotonic()
        rc, out, _ = self.cli("wake", "--pid", str(b.pid), "--wait", "0.5", ok=False)
        waited = time.monotonic() - t
        self.assertEqual(rc, 1)
        error = out["errors"][0] if "errors" in out else out["error"]
        error = error.get("error", error)
        self.assertEqual(error["code"], "out_of_memory")
        self.assertEqual(error["needed_bytes"], 128 * MiB)
        self.assertGreaterEqual(waited, 0.5)
        self.assertLess(waited, 20)
        self.assertEqual(self.free(), free_held)  # nothing half-woken
        self.assertEqual(b.send("touch b2"), "OK touch b2 fault")

    def test_swap_moves_the_device_from_one_process_to_the_other_and_back(self):
        a = self.host(("a1", 64 * MiB, 11), ("a2", 64 * MiB, 12))
        b = self.host(("b1", 64 * MiB, 21), ("b2", 32 * MiB, 22))
        gpusleep.attach(pid=b.pid).sleep()
        self.hog(100 * MiB)  # 256 - 128 (a) - 100 = 28 MiB free: b cannot wake beside a
        out = swap(sleep=[a.pid], wake=[b.pid], wait=30)
        self.assertTrue(out.ok)
        self.assertEqual(out.states, {a.pid: "asleep", b.pid: "awake"})
        self.assertEqual(out.slept[a.pid]["bytes"], 128 * MiB)
        self.assertEqual(out.woken[b.pid]["bytes"], 96 * MiB)
        self.assertEqual(a.send("touch a1"), "OK touch a1 fault")
        self.assert_intact(b, "b1", "b2")
        back = swap(sleep=b.pid, wake=a.pid, wait=30)
        self.assertEqual(back.states, {a.pid: "awake", b.pid: "asleep"})
        self.assert_intact(a, "a1", "a2")

    def test_the_cli_swap_reports_each_process_and_its_state(self):
        a = self.host(("a1", 64 * MiB, 11))
        b = self.host(("b1", 64 * MiB, 21))
        gpusleep.attach(pid=b.pid).sleep()
        self.hog(150 * MiB)  # 42 MiB free
        _, out, _ = self.cli("swap", "--sleep-pid", str(a.pid), "--wake-pid", str(b.pid))
        states = {p["pid"]: p["state"] for p in out["processes"]}
        self.assertEqual(states, {a.pid: "asleep", b.pid: "awake"})
        self.assertEqual(out["errors"], [])
        self.assert_intact(b, "b1")

    def test_bad_selections_are_refused_before_anything_moves(self):
        a = self.host(("a1", 16 * MiB, 1))
        b = self.host(("b1", 16 * MiB, 2))
        with self.assertRaises(ValueError):
            swap(sleep=[a.pid], wake=[a.pid, b.pid])
        with self.assertRaises(ValueError):
            swap(sleep=[], wake=[b.pid])
        for argv in (["--sleep-pid", str(a.pid), "--wake-pid", str(a.pid)],
                     ["--wake-pid", str(b.pid)],
                     ["--sleep-pid", "999999", "--wake-pid", str(b.pid)]):
            rc, _, err = self.cli("swap", *argv, ok=False)
            self.assertEqual(rc, 2, f"swap {argv}: {err}")
            self.assertTrue(err.strip())
        self.assert_intact(a, "a1")
        self.assert_intact(b, "b1")
        for h in (a, b):
            tags = gpusleep.attach(pid=h.pid).status()["tags"]
            self.assertEqual([t["state"] for t in tags], ["awake"])

    def test_a_swap_whose_wake_never_gets_its_memory_leaves_each_process_whole(self):
        a = self.host(("a1", 32 * MiB, 11))
        b = self.host(("b1", 64 * MiB, 21), ("b2", 64 * MiB, 22))
        gpusleep.attach(pid=b.pid).sleep()
        hog = self.hog(160 * MiB)  # after a sleeps: 96 MiB free, b needs 128
        with self.assertRaises(SwapError) as caught:
            swap(sleep=[a.pid], wake=[b.pid], wait=0.5)
        out = caught.exception.outcome
        self.assertEqual(out.states, {a.pid: "asleep", b.pid: "asleep"})
        self.assertIn(b.pid, out.errors)
        self.assertEqual(out.errors[b.pid].code, "out_of_memory")
        self.assertEqual(b.send("touch b1"), "OK touch b1 fault")  # all or nothing
        hog.free()
        gpusleep.attach(pid=b.pid).wake()
        gpusleep.attach(pid=a.pid).wake()
        self.assert_intact(a, "a1")
        self.assert_intact(b, "b1", "b2")


class StubProcess(gpusleep.Process):
    """A process that records the calls a swap makes and fails where told, for the swap's own
    decisions (no library involved)."""

    def __init__(self, pid, log, fail=()):
        super().__init__(f"/nonexistent/{pid}.sock", pid)
        self.log, self.fail = log, set(fail)

    def _op(self, op):
        self.log.append((op, self.pid))
        if op in self.fail:
            self.fail.discard(op)
            raise gpusleep.errors.make_error("driver_error", f"{op} failed", pid=self.pid)
        return {"bytes": 1}

    def sleep(self, tags=None, policy=None, **kwargs):
        return self._op("sleep")

    def wake(self, tags=None, wait=None, **kwargs):
        return self._op("wake")


class SwapDecisions(unittest.TestCase):
    def test_a_failed_sleep_undoes_the_swap_freeing_memory_before_taking_it(self):
        log = []
        a, b = StubProcess(1, log, fail={"sleep"}), StubProcess(2, log)
        with self.assertRaises(SwapError) as caught:
            swap(sleep=[a], wake=[b])
        out = caught.exception.outcome
        self.assertTrue(out.rolled_back)
        self.assertEqual(out.states, {1: "awake", 2: "asleep"})
        undo = log[2:]
        self.assertEqual(undo, [("sleep", 2), ("wake", 1)])  # b gives back, then a takes

    def test_a_failed_wake_leaves_the_sleepers_asleep_and_the_waker_asleep(self):
        log = []
        a, b = StubProcess(1, log), StubProcess(2, log, fail={"wake"})
        with self.assertRaises(SwapError) as caught:
            swap(sleep=[a], wake=[b])
        out = caught.exception.outcome
        self.assertFalse(out.rolled_back)
        self.assertEqual(out.states, {1: "asleep", 2: "asleep"})
        self.assertEqual(sorted(log), [("sleep", 1), ("wake", 2)])

    def test_a_swap_error_survives_pickling_with_its_outcome(self):
        import pickle
        log = []
        with self.assertRaises(SwapError) as caught:
            swap(sleep=[StubProcess(1, log)], wake=[StubProcess(2, log, fail={"wake"})])
        again = pickle.loads(pickle.dumps(caught.exception))
        self.assertEqual(again.outcome.states, {1: "asleep", 2: "asleep"})


if __name__ == "__main__":
    unittest.main()
