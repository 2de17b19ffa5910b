"""End to end over the emulated driver: the real libgpusleep.so preloaded (by `gpusleep run`)
into a real process linked against the emulated CUDA runtime, slept and woken by the real CLI
from another process, with device memory read from outside through fakecuda-smi."""
import json
import os
import pwd
import shutil
import stat
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import (EmulatedCase, fake_free_bytes, only_error, only_result,  # noqa: E402
                     run_cli)

CLI = os.environ["GPUSLEEP_TEST_CLI"]
FAKE_DIR = os.environ["GPUSLEEP_TEST_FAKE_DIR"]
HOST = os.environ["GPUSLEEP_TEST_HOST"]
SMI = os.path.join(FAKE_DIR, "fakecuda-smi")
MiB = 1 << 20


class Emulated(EmulatedCase):
    def test_offload_sleep_releases_memory_faults_touches_and_wake_restores(self):
        h = self.start(tag="weights")
        h.send("alloc w 67108864 1")
        h.send("alloc odd 3000000 2")
        free_awake = self.free()
        _, out, _ = self.cli("sleep", "--pid", str(h.pid))
        r = only_result(out)
        self.assertEqual(r["bytes"], 64 * MiB + 4 * MiB)  # device memory: 2 MiB granules
        self.assertEqual(r["copied_bytes"], 64 * MiB + 3002368)  # host copies: 4 KiB pages
        self.assertEqual(self.free() - free_awake, r["bytes"])
        self.assertEqual(h.send("touch w"), "OK touch w fault")
        _, status, _ = self.cli("status", "--pid", str(h.pid))
        tags = {t["tag"]: t for t in only_result(status)["tags"]}
        self.assertEqual(tags["weights"]["state"], "asleep")
        self.assertEqual(tags["weights"]["asleep_bytes"], r["bytes"])
        self.assertEqual(tags["weights"]["mirror_bytes"], r["copied_bytes"])
        self.assertEqual(tags["weights"]["mirror_pending_bytes"], 0)
        self.assertIsNotNone(tags["weights"]["last_sleep_ms"])

        _, out, _ = self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(only_result(out)["bytes"], r["bytes"])
        self.assertEqual(self.free(), free_awake)
        self.assertTrue(h.send("touch w").startswith("OK touch w read"))
        self.assertEqual(h.send("check w"), "OK check w match")
        self.assertEqual(h.send("check odd"), "OK check odd match")

    def test_discard_releases_memory_and_wake_gives_fresh_memory(self):
        h = self.start(tag="kv_cache")
        h.send("alloc kv 16777216 5")
        free_awake = self.free()
        _, out, _ = self.cli("sleep")  # the only process: no --pid needed
        self.assertEqual(only_result(out)["discarded_bytes"], 16 * MiB)
        self.assertEqual(only_result(out)["tags"][0]["policy"], "discard")
        self.assertEqual(self.free() - free_awake, 16 * MiB)
        _, status, _ = self.cli("status")
        self.assertEqual(only_result(status)["tags"][0]["mirror_bytes"], 0)
        self.cli("wake")
        self.assertEqual(h.send("zero kv"), "OK zero kv yes")
        h.send("alloc kv2 4194304 6")
        self.assertEqual(h.send("check kv2"), "OK check kv2 match")

    def test_phase_tags_split_memory_and_only_asked_tags_sleep(self):
        h = self.start(tag="weights")
        h.send("alloc w 8388608 1")
        self.cli("tag", "kv_cache")
        h.send("alloc kv 33554432 2")
        self.cli("tag", "cuda_graph")
        h.send("alloc g 4194304 3")
        _, out, _ = self.cli("tag", "--clear")
        self.assertEqual(only_result(out)["effective_tag"], "weights")
        h.send("alloc w2 2097152 4")
        h.send("compute g w w2")
        free_awake = self.free()
        # --no-gate: the program's GPU work on the other tags goes on while kv_cache sleeps.
        _, out, _ = self.cli("sleep", "kv_cache", "--no-gate")
        self.assertEqual(only_result(out)["bytes"], 32 * MiB)
        self.assertEqual(self.free() - free_awake, 32 * MiB)
        self.assertEqual(h.send("touch kv"), "OK touch kv fault")
        self.assertEqual(h.send("check w"), "OK check w match")
        self.assertEqual(h.send("check w2"), "OK check w2 match")
        _, regions, _ = self.cli("regions")
        by_tag = {}
        for reg in only_result(regions)["regions"]:
            by_tag.setdefault(reg["tag"], []).append(reg["state"])
        self.assertEqual(by_tag, {"weights": ["awake", "awake"], "kv_cache": ["asleep"],
                                  "cuda_graph": ["awake"]})
        self.assertTrue(all(reg["call_site"] for reg in only_result(regions)["regions"]))
        self.cli("wake", "kv_cache")
        self.assertEqual(h.send("zero kv"), "OK zero kv yes")  # kv_cache discards by default

    def test_wake_with_memory_held_elsewhere_fails_whole_then_succeeds(self):
        env = dict(self.env, FAKECUDA_MEMORY=str(256 * MiB))
        h = self.start(tag="weights", env=env)
        h.send("alloc a 67108864 1")
        h.send("alloc b 67108864 2")
        self.cli("sleep", env=env)
        # A co-located job (a plain process, no library) takes most of the device.
        hog_env = dict(env)
        hog_env.pop("LD_PRELOAD", None)
        hog = subprocess.Popen([HOST], env=hog_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, bufsize=1)
        try:
            self.assertEqual(hog.stdout.readline().strip(), "READY")
            hog.stdin.write("alloc big 167772160 9\n")
            hog.stdin.flush()
            self.assertTrue(hog.stdout.readline().startswith("OK alloc big"))
            free_held = fake_free_bytes(SMI, env)
            rc, out, err = self.cli("wake", ok=False, env=env)
            self.assertEqual(rc, 1)
            e = only_error(out)
            self.assertEqual(e["code"], "out_of_memory")
            self.assertEqual(e["needed_bytes"], 128 * MiB)
            self.assertEqual(e["free_bytes"], free_held)
            self.assertIn("128.00 MiB", e["message"])
            self.assertEqual(fake_free_bytes(SMI, env), free_held)  # nothing half-woken
            self.assertEqual(h.send("touch a"), "OK touch a fault")
            hog.stdin.write("free big\n")
            hog.stdin.flush()
            self.assertTrue(hog.stdout.readline().startswith("OK free big"))
        finally:
            hog.stdin.write("exit\n")
            hog.stdin.flush()
            hog.wait(timeout=30)
        self.cli("wake", env=env)
        self.assertEqual(h.send("check a"), "OK check a match")
        self.assertEqual(h.send("check b"), "OK check b match")

    def test_repeated_requests_are_noops_and_bad_ones_are_errors(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 1")
        _, out, _ = self.cli("wake")
        self.assertEqual(only_result(out)["noop"], ["weights"])
        self.cli("sleep")
        _, out, _ = self.cli("sleep", "weights")
        self.assertEqual(only_result(out)["regions"], 0)
        self.assertEqual(only_result(out)["noop"], ["weights"])
        rc, out, _ = self.cli("sleep", "nosuch", ok=False)
        self.assertEqual((rc, only_error(out)["code"]), (1, "unknown_tag"))
        rc, out, _ = self.cli("sleep", "--policy", "sometimes", ok=False)
        self.assertEqual((rc, only_error(out)["code"]), (1, "invalid_argument"))
        self.cli("wake")
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_free_of_asleep_memory_returns_everything(self):
        h = self.start(tag="weights")
        free0 = self.free()
        h.send("alloc w 8388608 1")
        h.send("alloc v 8388608 2")
        self.cli("sleep")
        self.assertEqual(h.send("free w"), "OK free w cudaSuccess")
        self.cli("wake")
        self.assertEqual(self.free(), free0 - 8 * MiB)
        self.assertEqual(h.send("check v"), "OK check v match")
        _, status, _ = self.cli("status")
        self.assertEqual(only_result(status)["totals"]["regions"], 1)
        self.assertEqual(only_result(status)["totals"]["mirror_bytes"], 8 * MiB)

    def test_all_processes_sleep_and_wake_in_parallel(self):
        hosts = [self.start(tag="weights") for _ in range(3)]
        for i, h in enumerate(hosts):
            h.send(f"alloc w 16777216 {i}")
        rc, out, _ = run_cli(CLI, ["status"], self.env)
        self.assertEqual(rc, 2, "several processes: status must ask which one")
        self.assertEqual(only_error(out)["code"], "several_processes")
        self.assertIn("--all", only_error(out)["message"])
        self.assertEqual(sorted(only_error(out)["pids"]), sorted(h.pid for h in hosts))
        free_awake = self.free()
        _, out, _ = self.cli("sleep", "--all")
        self.assertEqual(sorted(e["pid"] for e in out["processes"]), sorted(h.pid for h in hosts))
        self.assertEqual(out["errors"], [])
        self.assertEqual(self.free() - free_awake, 3 * 16 * MiB)
        self.cli("wake", "--all")
        for h in hosts:
            self.assertEqual(h.send("check w"), "OK check w match")
        _, ps, _ = self.cli("ps")
        self.assertEqual(len(ps["processes"]), 3)

    def test_socket_removed_at_exit_and_stale_sockets_cleaned(self):
        h = self.start()
        sock = self.socket_of(h)
        self.assertFalse(os.path.exists(sock))  # the library starts with the first CUDA call
        h.send("alloc w 2097152 1")
        self.assertTrue(os.path.exists(sock))
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(self.run_dir).st_mode & 0o777, 0o700)
        h.close()
        self.assertFalse(os.path.exists(sock))
        k = self.start()
        k.send("alloc w 2097152 1")
        sock = self.socket_of(k)
        k.kill()
        self.assertTrue(os.path.exists(sock))
        _, ps, _ = self.cli("ps")
        self.assertEqual(ps["processes"], [])
        self.assertEqual(ps["removed_stale"], [sock])
        self.assertFalse(os.path.exists(sock))

    def test_malformed_messages_get_errors_and_the_host_lives_on(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 7")
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket_of(h))
        f = s.makefile("rw")

        def ask(raw):
            f.write(raw + "\n")
            f.flush()
            return json.loads(f.readline())

        self.assertEqual(ask("hello")["error"]["code"], "bad_request")
        self.assertEqual(ask('{"v":1}')["error"]["code"], "bad_request")
        self.assertEqual(ask('{"v":7,"op":"status","id":3}')["error"]["code"], "unsupported_version")
        self.assertEqual(ask('{"v":1,"op":"reboot"}')["error"]["code"], "unknown_op")
        self.assertEqual(ask('{"v":1,"op":"sleep","tags":[1,2]}')["error"]["code"],
                         "invalid_argument")
        self.assertEqual(ask('{"v":1,"op":"sleep","tags":["' + "x" * 100 + '"]}')["error"]["code"],
                         "invalid_argument")
        self.assertEqual(ask('{"v":1,"op":"wake","tags":["ghost"]}')["error"]["code"], "unknown_tag")
        reply = ask('{"v":1,"id":"q","op":"status"}')
        self.assertTrue(reply["ok"])
        self.assertEqual(reply["id"], "q")
        f.write("x" * (128 << 10) + "\n")
        f.flush()
        self.assertEqual(json.loads(f.readline())["error"]["code"], "message_too_large")
        s.close()
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket_of(h))
        s.sendall(b'{"v":1,"op":"sta\xff\xfetus"}\n')
        self.assertEqual(json.loads(s.makefile().readline())["error"]["code"], "bad_request")
        s.close()
        self.assertEqual(h.send("check w"), "OK check w match")
        self.cli("status")

    def test_controller_that_disconnects_mid_sleep_leaves_a_consistent_state(self):
        env = dict(self.env, FAKECUDA_COPY_DELAY_US="20000")
        h = self.start(tag="weights", env=env)
        h.send("alloc w 67108864 3")  # 32 copies of 2 MiB: about 0.7 s to sleep
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket_of(h))
        s.sendall(b'{"v":1,"op":"sleep"}\n')
        s.close()
        deadline = time.time() + 30
        while True:
            _, status, _ = self.cli("status", env=env)
            if only_result(status)["tags"][0]["state"] == "asleep":
                break
            self.assertLess(time.time(), deadline, "the abandoned sleep never completed")
            time.sleep(0.1)
        self.cli("wake", env=env)
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_two_controllers_at_once_are_serialized_and_a_killed_one_changes_nothing_half(self):
        env = dict(self.env, FAKECUDA_COPY_DELAY_US="10000")
        h = self.start(tag="weights", env=env)
        h.send("alloc w 33554432 4")
        baseline = self.free()
        # Two controllers ask at once: one sleeps, the other finds it asleep (a no-op), never a
        # half-done state.
        cmd = [CLI, "sleep", "--pid", str(h.pid), "--json"]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        results = [only_result(json.loads(p.communicate(timeout=60)[0])) for p in procs]
        self.assertEqual(sorted(r["regions"] for r in results), [0, 1])
        self.assertEqual(sorted(r["noop"] for r in results), [[], ["weights"]])
        # A controller killed while its wake runs: the wake completes (or never started).
        p = subprocess.Popen([CLI, "wake", "--pid", str(h.pid)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)
        p.kill()
        p.wait()
        deadline = time.time() + 30
        while True:
            _, status, _ = self.cli("status", "--pid", str(h.pid), env=env)
            state = only_result(status)["tags"][0]["state"]
            if state in ("awake", "asleep"):
                break
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        if state == "asleep":
            self.cli("wake", "--pid", str(h.pid), env=env)
        self.assertEqual(h.send("check w"), "OK check w match")
        self.assertEqual(self.free(), baseline)  # awake again, holding what it held

    def test_a_host_that_exits_asleep_leaves_no_socket_and_returns_its_memory(self):
        before = self.free()
        h = self.start(tag="weights")
        h.send("alloc w 16777216 5")
        self.cli("sleep", "--pid", str(h.pid))
        sock = self.socket_of(h)
        self.assertTrue(os.path.exists(sock))
        h.close()
        self.assertFalse(os.path.exists(sock))
        self.assertEqual(self.free(), before)
        _, out, _ = self.cli("ps")
        self.assertEqual(out["processes"], [])

    def test_a_forked_child_leaves_the_parents_control_channel_working(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 6")
        sock = self.socket_of(h)
        self.assertEqual(h.send("fork", expect="OK fork"), "OK fork 0")
        self.assertTrue(os.path.exists(sock), "the child's exit removed the parent's socket")
        self.cli("sleep", "--pid", str(h.pid))
        self.cli("wake", "--pid", str(h.pid))
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_bad_options_are_reported_and_ignored(self):
        env = dict(self.env, GPUSLEEP_COPY_STREAMS="banana", GPUSLEEP_TYPO="1")
        h = self.start(tag="weights", env=env)
        h.send("alloc w 2097152 1")
        self.cli("sleep", env=env)
        self.cli("wake", env=env)
        self.assertEqual(h.send("check w"), "OK check w match")
        err = h.stderr()
        self.assertIn(f"gpusleep[{h.pid}] warn: GPUSLEEP_COPY_STREAMS='banana' ignored", err)
        self.assertIn("unknown option GPUSLEEP_TYPO", err)

    def test_an_unsafe_runtime_directory_means_no_socket_but_a_working_program(self):
        os.makedirs(self.run_dir, mode=0o755)
        os.chmod(self.run_dir, 0o755)
        h = self.start(tag="weights")
        h.send("alloc w 2097152 1")
        self.assertEqual(h.send("check w"), "OK check w match")
        self.assertFalse(os.path.exists(self.socket_of(h)))
        self.assertIn("no control channel", h.stderr())
        self.assertIn("755", h.stderr())

    def test_another_user_can_neither_reach_nor_command_the_process(self):
        if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
            self.skipTest("needs root, setpriv and useradd to act as a second user")
        user = "gpusleep-other"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            user], check=True)
            entry = pwd.getpwnam(user)
        as_other = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                    "--clear-groups", "--"]
        os.chmod(self.tmp.name, 0o755)  # only the runtime directory itself keeps others out
        h = self.start(tag="weights")
        h.send("alloc w 4194304 1")
        sock = self.socket_of(h)

        def other(*args):
            return subprocess.run(as_other + [CLI] + list(args) + ["--socket", sock, "--json"],
                                  env=self.env, capture_output=True, text=True, timeout=60)

        # The directory is 0700: the socket cannot even be reached.
        self.assertEqual(stat.S_IMODE(os.stat(self.run_dir).st_mode), 0o700)
        p = other("sleep")
        self.assertEqual(p.returncode, 1)
        self.assertIn("Permission denied", p.stdout + p.stderr)
        # Opened up on purpose, the socket is reached, and the library refuses the peer by its
        # credentials: nothing is slept.
        os.chmod(self.run_dir, 0o755)
        os.chmod(sock, 0o666)
        p = other("sleep")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(only_error(json.loads(p.stdout))["code"], "permission_denied")
        # This user's CLI no longer trusts the opened directory either; named by its socket,
        # the process (its own user's) still answers.
        rc, status, _ = self.cli("status", "--pid", str(h.pid), ok=False)
        self.assertEqual((rc, only_error(status)["code"]), (1, "untrusted"))
        _, status, _ = self.cli("status", "--socket", sock)
        self.assertEqual({t["tag"]: t["state"] for t in only_result(status)["tags"]}["weights"],
                         "awake")
        self.assertEqual(h.send("check w"), "OK check w match")
        # A runtime directory that belongs to someone else is refused; the program runs on.
        theirs = os.path.join(self.tmp.name, "theirs")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, entry.pw_uid, entry.pw_gid)
        h2 = self.start(tag="weights", env=dict(self.env, GPUSLEEP_RUNTIME_DIR=theirs))
        h2.send("alloc w 2097152 2")
        self.assertEqual(h2.send("check w"), "OK check w match")
        self.assertIn("no control channel", h2.stderr())
        self.assertEqual(os.listdir(theirs), [])

    def test_disabled_library_passes_everything_through(self):
        env = dict(self.env, GPUSLEEP_DISABLE="1")
        h = self.start(env=env)
        free0 = self.free()
        h.send("alloc w 3000000 1")
        self.assertEqual(free0 - self.free(), 4 * MiB)  # the emulated runtime's own allocation
        self.assertEqual(h.send("check w"), "OK check w match")
        self.assertFalse(os.path.exists(self.socket_of(h)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
