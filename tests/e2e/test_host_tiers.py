"""End to end over the emulated driver: the host budget, the pageable and disk tiers past it, and
the `spill` policy, each checked byte for byte after wake, and the bad cases: a budget smaller
than a region with nowhere else to go, a full disk, a spill directory another user owns, a host
killed while its memory is on disk."""
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import EmulatedCase, only_error, only_result  # noqa: E402

MiB = 1 << 20
TMPFS_MAGIC = 0x01021994


def on_disk(path):
    """Whether `path` is on a disk (the spill tier refuses memory file systems)."""
    try:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(256)
        if libc.statfs(path.encode(), buf) != 0:
            return False
        f_type = int.from_bytes(buf.raw[:8], sys.byteorder)
        return f_type not in (TMPFS_MAGIC, 0x858458f6)
    except OSError:
        return False


class HostTiers(EmulatedCase):
    def setUp(self):
        super().setUp()
        # The spill directory lives beside the build tree, which is on a disk where /tmp may not be.
        self.spill = tempfile.mkdtemp(prefix="spill-", dir=os.getcwd())
        os.chmod(self.spill, 0o700)

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.spill, ignore_errors=True)

    def need_disk(self):
        if not on_disk(self.spill):
            self.skipTest("the build tree is in memory")

    def env_with(self, **extra):
        env = dict(self.env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def status(self, h, env=None):
        _, out, _ = self.cli("status", "--pid", str(h.pid), env=env)
        return only_result(out)

    def test_past_the_budget_regions_go_to_pageable_memory_and_come_back_intact(self):
        env = self.env_with(GPUSLEEP_HOST_BUDGET="40M", GPUSLEEP_PREP_SETTLE_MS="0")
        h = self.start(tag="weights", env=env)
        for i in range(4):
            h.send(f"alloc w{i} 16777216 {i + 1}")
        free_awake = self.free()
        _, out, _ = self.cli("sleep", "--pid", str(h.pid), env=env)
        r = only_result(out)
        self.assertEqual(r["copied_bytes"], 64 * MiB)
        self.assertEqual(self.free() - free_awake, 64 * MiB)
        s = self.status(h, env)
        t = s["totals"]
        self.assertLessEqual(t["pinned_bytes"], 40 * MiB)
        self.assertEqual(t["pinned_bytes"] + t["pageable_bytes"], 64 * MiB)
        self.assertGreater(t["pageable_bytes"], 0)
        self.assertEqual(s["host"]["budget_bytes"], 40 * MiB)
        self.assertEqual(s["host"]["pinned_bytes"], t["pinned_bytes"])
        self.assertEqual(r["pageable_bytes"], t["pageable_bytes"])
        self.cli("wake", "--pid", str(h.pid), env=env)
        for i in range(4):
            self.assertEqual(h.send(f"check w{i}"), f"OK check w{i} match")
        self.assertEqual(self.status(h, env)["totals"]["pageable_bytes"], 0)

    def test_with_no_budget_and_no_pageable_memory_regions_spill_and_leave_no_file(self):
        self.need_disk()
        env = self.env_with(GPUSLEEP_HOST_BUDGET="0", GPUSLEEP_PAGEABLE="0",
                            GPUSLEEP_SPILL_DIR=self.spill)
        h = self.start(tag="weights", env=env)
        h.send("alloc a 16777216 3")
        h.send("alloc b 3000000 4")
        _, out, _ = self.cli("sleep", "--pid", str(h.pid), env=env)
        self.assertEqual(only_result(out)["spilled_bytes"], 16 * MiB + 3002368)
        self.assertEqual(os.listdir(self.spill), [])  # the file has no name
        t = self.status(h, env)["totals"]
        self.assertEqual(t["spilled_bytes"], 16 * MiB + 3002368)
        self.assertEqual(t["pinned_bytes"], 0)
        self.cli("wake", "--pid", str(h.pid), env=env)
        self.assertEqual(h.send("check a"), "OK check a match")
        self.assertEqual(h.send("check b"), "OK check b match")
        self.assertEqual(self.status(h, env)["totals"]["spilled_bytes"], 0)

    def test_the_spill_policy_writes_to_disk_and_a_killed_host_leaves_nothing(self):
        self.need_disk()
        env = self.env_with(GPUSLEEP_POLICY="weights=spill", GPUSLEEP_SPILL_DIR=self.spill)
        h = self.start(tag="weights", env=env)
        h.send("alloc w 33554432 9")
        free_awake = self.free()
        _, out, _ = self.cli("sleep", "--pid", str(h.pid), env=env)
        self.assertEqual(only_result(out)["tags"][0]["policy"], "spill")
        self.assertEqual(only_result(out)["spilled_bytes"], 32 * MiB)
        self.assertEqual(self.free() - free_awake, 32 * MiB)
        s = self.status(h, env)
        self.assertEqual(s["totals"]["pinned_bytes"], 0)  # a spill tag gets no mirror
        self.assertEqual(s["host"]["spilled_bytes"], 32 * MiB)
        self.assertEqual(os.listdir(self.spill), [])
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(timeout=30)
        self.assertEqual(os.listdir(self.spill), [])

    def test_a_budget_smaller_than_a_region_with_nowhere_else_to_go_fails_whole(self):
        env = self.env_with(GPUSLEEP_HOST_BUDGET="4M", GPUSLEEP_PAGEABLE="0")
        h = self.start(tag="weights", env=env)
        h.send("alloc w 16777216 2")
        free_awake = self.free()
        rc, out, _ = self.cli("sleep", "--pid", str(h.pid), ok=False, env=env)
        self.assertNotEqual(rc, 0)
        self.assertEqual(only_error(out)["code"], "host_out_of_memory")
        message = only_error(out)["message"]
        self.assertIn("GPUSLEEP_HOST_BUDGET", message)
        self.assertIn("GPUSLEEP_SPILL_DIR", message)
        self.assertEqual(self.free(), free_awake)  # nothing released
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_a_spill_directory_another_user_owns_is_refused_with_its_reason(self):
        if os.getuid() != 0:
            self.skipTest("giving a directory to another user needs root")
        os.chown(self.spill, 65534, 65534)
        env = self.env_with(GPUSLEEP_POLICY="weights=spill", GPUSLEEP_SPILL_DIR=self.spill)
        h = self.start(tag="weights", env=env)
        h.send("alloc w 4194304 2")
        rc, out, _ = self.cli("sleep", "--pid", str(h.pid), ok=False, env=env)
        self.assertEqual(only_error(out)["code"], "host_out_of_memory")
        self.assertIn("owned by uid 65534", only_error(out)["message"])
        self.assertIn("owned by uid 65534", h.stderr())
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_processes_share_one_budget_and_a_dead_ones_bytes_come_back(self):
        env = self.env_with(GPUSLEEP_HOST_BUDGET="48M", GPUSLEEP_PREP_SETTLE_MS="0",
                            GPUSLEEP_PREP_RATE="0")
        a = self.start(tag="weights", env=env)
        a.send("alloc w 33554432 1")
        deadline = time.time() + 30
        while self.status(a, env)["totals"]["pinned_bytes"] < 32 * MiB:
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        b = self.start(tag="weights", env=env)
        b.send("alloc w 33554432 2")
        time.sleep(0.5)
        sb = self.status(b, env)
        self.assertEqual(sb["host"]["node_pinned_bytes"], 32 * MiB + sb["host"]["pinned_bytes"])
        self.assertLessEqual(sb["host"]["node_pinned_bytes"], 48 * MiB)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=30)
        # b's next sleep finds a's bytes back in the budget: all of its region pinned.
        _, out, _ = self.cli("sleep", "--pid", str(b.pid), env=env)
        self.assertEqual(only_result(out)["pageable_bytes"], 0)
        self.assertEqual(self.status(b, env)["totals"]["pinned_bytes"], 32 * MiB)
        self.cli("wake", "--pid", str(b.pid), env=env)
        self.assertEqual(b.send("check w"), "OK check w match")


if __name__ == "__main__":
    unittest.main()
