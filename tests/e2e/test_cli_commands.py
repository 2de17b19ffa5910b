"""End to end, the gpusleep command line: each command's help and options, the JSON envelope,
ps and --job, the library's lookup, presets, reply timeouts, progress, and the refusal of a
runtime directory or a socket that belongs to another user. Real processes under the library over
the emulated driver, the real CLI."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import EmulatedCase, Host, only_error, only_result, run_cli  # noqa: E402

CLI = os.environ["GPUSLEEP_TEST_CLI"]
HOST = os.environ["GPUSLEEP_TEST_HOST"]
LIBRARY = os.environ["GPUSLEEP_LIBRARY"]
PRESETS = os.path.join(ROOT, "control", "presets")
MiB = 1 << 20

# A launcher that starts two workers (the emulated host) and relays each command line to both,
# answering with their two replies on one line: a job of three processes under the library.
LAUNCHER = """
import subprocess, sys
kids = [subprocess.Popen([sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         bufsize=1) for _ in range(2)]
for k in kids:
    assert k.stdout.readline().startswith("READY")
print("READY", *[k.pid for k in kids], flush=True)
for line in sys.stdin:
    for k in kids:
        k.stdin.write(line)
        k.stdin.flush()
    if line.strip() == "exit":
        break
    print(" | ".join(k.stdout.readline().strip() for k in kids), flush=True)
for k in kids:
    k.wait()
"""


def preset_rule_names(*names):
    out = []
    for n in names:
        with open(os.path.join(PRESETS, n + ".json")) as f:
            out += [r["name"] for r in json.load(f)["rules"]]
    return out


class CliCommands(EmulatedCase):
    def raw(self, *args, env=None, timeout=60):
        """Runs the CLI as given (no --json added): (exit status, stdout, stderr)."""
        p = subprocess.run([CLI, *args], env=env or self.env, capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def state_of(self, h, tag):
        status = only_result(self.cli("status", "--pid", str(h.pid))[1])
        return {t["tag"]: t["state"] for t in status["tags"]}[tag]

    def test_each_command_has_its_own_help_and_the_version_is_printed(self):
        rc, sleep_help, _ = self.raw("sleep", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("gpusleep sleep", sleep_help)
        self.assertIn("--no-gate", sleep_help)
        self.assertNotIn("--preset", sleep_help)
        self.assertEqual(self.raw("help", "sleep"), (0, sleep_help, ""))
        rc, run_help, _ = self.raw("run", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("--preset", run_help)
        self.assertNotIn("--no-gate", run_help)
        rc, top, _ = self.raw("--help")
        self.assertEqual(rc, 0)
        for command in ("run", "ps", "status", "regions", "retag", "sleep", "wake", "tag",
                        "policy", "rules"):
            self.assertIn(command, top)
        rc, out, _ = self.raw("--version")
        self.assertEqual(rc, 0)
        with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
            version = re.search(r"project\(gpusleep VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(out.strip(), f"gpusleep {version}")

    def test_an_option_of_another_command_is_a_usage_error_and_nothing_happens(self):
        h = self.start(tag="weights")
        h.send("alloc w 16777216 1")
        free = self.free()
        for args in (["sleep", "--tag", "kv_cache"], ["sleep", "--preset", "vllm"],
                     ["status", "--no-gate"], ["wake", "--policy", "discard"],
                     ["sleep", "--bogus"], ["ps", "--pid", str(h.pid)]):
            rc, out, err = self.raw(*args)
            self.assertEqual(rc, 2, args)
            self.assertEqual(out, "", args)
            self.assertIn(args[1], err)
            self.assertIn(f"gpusleep {args[0]} --help", err)
        self.assertEqual(self.state_of(h, "weights"), "awake")
        self.assertEqual(self.free(), free)
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_a_mistyped_command_gets_a_suggestion(self):
        for typo, meant in (("slep", "sleep"), ("statsu", "status"), ("wkae", "wake"),
                            ("reg", "regions")):
            rc, out, err = self.raw(typo)
            self.assertEqual((rc, out), (2, ""), typo)
            self.assertIn(f"unknown command '{typo}'; did you mean '{meant}'?", err)
        rc, _, err = self.raw("help", "slep")
        self.assertEqual(rc, 2)
        self.assertIn("did you mean 'sleep'?", err)
        rc, _, err = self.raw("xyzzy")
        self.assertEqual(rc, 2)
        self.assertNotIn("did you mean", err)

    def rules_of(self, h):
        h.send("alloc first 2097152 1")
        return [r["name"] for r in only_result(self.cli("rules", "--pid", str(h.pid))[1])["rules"]]

    def test_repeated_presets_load_the_rules_of_each_in_order(self):
        h = self.start(extra=["--preset", "nccl", "--preset", "vllm"])
        self.assertEqual(self.rules_of(h), preset_rule_names("nccl", "vllm"))
        h = self.start(extra=["--preset", "vllm", "--preset", "nccl"])
        self.assertEqual(self.rules_of(h), preset_rule_names("vllm", "nccl"))
        h = self.start(extra=["--preset", "auto"])
        servers = sorted(n[:-5] for n in os.listdir(PRESETS)
                         if n.endswith(".json") and n not in ("nccl.json", "pytorch.json"))
        self.assertEqual(self.rules_of(h), preset_rule_names("nccl", *servers, "pytorch"))
        h = self.start(extra=["--preset", "pytorch"])
        self.assertEqual(self.rules_of(h), preset_rule_names("pytorch"))
        rc, _, err = self.raw("run", "--preset", "nosuch", "--", HOST)
        self.assertEqual(rc, 2)
        self.assertIn("no preset 'nosuch'", err)
        rc, _, err = self.raw("run", "--preset", "none", "--preset", "vllm", "--", HOST)
        self.assertEqual(rc, 2)

    def test_a_python_command_gets_every_preset_unless_told_otherwise(self):
        script = os.path.join(self.tmp.name, "job.py")
        with open(script, "w") as f:
            f.write(LAUNCHER)
        h = Host(CLI, [sys.executable, script, HOST], self.env)
        self.hosts.append(h)
        pids = [int(p) for p in h.expect("READY", timeout=60).split()[1:]]
        h.send("alloc first 2097152 1")
        names = [r["name"] for r in
                 only_result(self.cli("rules", "--pid", str(pids[0]))[1])["rules"]]
        self.assertEqual(names[:len(preset_rule_names("nccl"))], preset_rule_names("nccl"))
        self.assertEqual(names[-len(preset_rule_names("pytorch")):], preset_rule_names("pytorch"))
        h2 = Host(CLI, [sys.executable, script, HOST], self.env, extra=["--preset", "none"])
        self.hosts.append(h2)
        pids2 = [int(p) for p in h2.expect("READY", timeout=60).split()[1:]]
        h2.send("alloc first 2097152 1")
        self.assertEqual(only_result(self.cli("rules", "--pid", str(pids2[0]))[1])["rules"], [])

    def test_the_json_envelope_is_one_shape_for_none_one_several_processes_and_errors(self):
        rc, out, _ = self.cli("status", ok=False)
        self.assertEqual(rc, 1)
        self.assertEqual(out["processes"], [])
        self.assertEqual(only_error(out)["code"], "no_process")
        self.assertIsNone(only_error(out)["pid"])
        a = self.start(tag="weights")
        a.send("alloc w 4194304 1")
        _, out, _ = self.cli("status")
        self.assertEqual(set(out), {"processes", "errors"})
        self.assertEqual(out["processes"][0]["pid"], a.pid)
        self.assertEqual(only_result(out)["totals"]["resident_bytes"], 4 * MiB)
        b = self.start(tag="weights")
        b.send("alloc w 4194304 2")
        rc, out, _ = self.cli("status", ok=False)
        self.assertEqual(rc, 2)
        self.assertEqual(only_error(out)["code"], "several_processes")
        _, out, _ = self.cli("sleep", "--all")
        self.assertEqual(sorted(p["pid"] for p in out["processes"]), sorted([a.pid, b.pid]))
        self.assertEqual(out["errors"], [])
        rc, out, _ = self.cli("wake", "nosuch", "--all", ok=False)
        self.assertEqual(rc, 1)
        self.assertEqual(out["processes"], [])
        self.assertEqual(sorted((e["pid"], e["code"]) for e in out["errors"]),
                         sorted([(a.pid, "unknown_tag"), (b.pid, "unknown_tag")]))
        a.close()
        rc, out, _ = self.cli("wake", "--pid", str(a.pid), ok=False)
        self.assertEqual((rc, out["processes"], only_error(out)["code"]),
                         (1, [], "connection_failed"))
        _, out, _ = self.cli("ps")
        self.assertEqual([p["pid"] for p in out["processes"]], [b.pid])
        self.assertEqual(out["errors"], [])

    def test_ps_shows_parents_devices_and_bytes_and_job_selects_a_launcher_and_its_workers(self):
        script = os.path.join(self.tmp.name, "launcher.py")
        with open(script, "w") as f:
            f.write(LAUNCHER)
        job = Host(CLI, [sys.executable, script, HOST], self.env, extra=["--preset", "none"])
        self.hosts.append(job)
        workers = [int(p) for p in job.expect("READY", timeout=60).split()[1:]]
        self.assertRegex(job.send("alloc w 8388608 7"), r"^OK alloc w \S+ \| OK alloc w \S+$")
        outsider = self.start(tag="weights")
        outsider.send("alloc w 4194304 9")
        _, ps, _ = self.cli("ps", "--job", str(job.pid))
        self.assertEqual(sorted(p["pid"] for p in ps["processes"]), sorted(workers))
        for p in ps["processes"]:
            self.assertEqual(p["ppid"], job.pid)
            self.assertEqual([d["device"] for d in p["result"]["devices"]], [0])
            self.assertEqual(p["result"]["totals"]["resident_bytes"], 8 * MiB)
        rc, text, _ = self.raw("ps")
        self.assertEqual(rc, 0)
        lines = text.splitlines()
        self.assertEqual(lines[0].split(), ["PID", "PPID", "DEVICES", "REGIONS", "RESIDENT",
                                            "ASLEEP", "COMMAND"])
        rows = {int(line.split()[0]): line.split() for line in lines[1:]}
        self.assertEqual(set(rows), set(workers) | {outsider.pid})
        for w in workers:
            self.assertEqual(rows[w][1:6], [str(job.pid), "0", "1", "8.00", "MiB"])
        # sleep --job: the job's two workers sleep, the other process does not.
        free = self.free()
        _, out, _ = self.cli("sleep", "--job", str(job.pid))
        self.assertEqual(sorted(p["pid"] for p in out["processes"]), sorted(workers))
        self.assertEqual(self.free() - free, 16 * MiB)
        self.assertEqual(self.state_of(outsider, "weights"), "awake")
        self.cli("wake", "--job", str(job.pid))
        self.assertEqual(job.send("check w"), "OK check w match | OK check w match")
        rc, out, _ = self.cli("status", "--job", str(outsider.pid + 100000), ok=False)
        self.assertEqual((rc, only_error(out)["code"]), (1, "no_process"))

    def test_print_library_finds_the_library_beside_the_cli_and_says_when_it_cannot(self):
        env = {k: v for k, v in self.env.items() if k != "GPUSLEEP_LIBRARY"}
        # The build tree: bin/gpusleep and lib/libgpusleep.so.
        rc, out, _ = self.raw("--print-library", env=env)
        self.assertEqual((rc, out.strip()), (0, os.path.realpath(LIBRARY)))
        # A Python wheel: gpusleep/bin/gpusleep beside gpusleep/lib/libgpusleep.so.
        pkg = os.path.join(self.tmp.name, "site", "gpusleep")
        os.makedirs(os.path.join(pkg, "bin"))
        os.makedirs(os.path.join(pkg, "lib"))
        cli = os.path.join(pkg, "bin", "gpusleep")
        shutil.copy(CLI, cli)
        shutil.copy(LIBRARY, os.path.join(pkg, "lib", "libgpusleep.so"))
        p = subprocess.run([cli, "--print-library"], env=env, capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stdout.strip()),
                         (0, os.path.join(os.path.realpath(pkg), "lib", "libgpusleep.so")))
        # Or lib/ in the executable's own directory.
        os.rename(os.path.join(pkg, "lib"), os.path.join(pkg, "bin", "lib"))
        p = subprocess.run([cli, "--print-library"], env=env, capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stdout.strip()),
                         (0, os.path.join(os.path.realpath(pkg), "bin", "lib", "libgpusleep.so")))
        # GPUSLEEP_LIBRARY wins.
        p = subprocess.run([cli, "--print-library"], env=self.env, capture_output=True, text=True)
        self.assertEqual(p.stdout.strip(), os.path.realpath(LIBRARY))
        # Nowhere: said clearly, for --print-library and for run.
        os.remove(os.path.join(pkg, "bin", "lib", "libgpusleep.so"))
        for args in (["--print-library"], ["run", "--", "true"]):
            p = subprocess.run([cli, *args], env=env, capture_output=True, text=True)
            self.assertEqual((p.returncode, p.stdout), (1, ""), args)
            self.assertIn("libgpusleep.so not found", p.stderr)
            self.assertIn(os.path.join(pkg, "bin", "lib", "libgpusleep.so"), p.stderr)
            self.assertIn("GPUSLEEP_LIBRARY", p.stderr)

    def test_read_only_commands_time_out_on_a_stopped_process(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 1")
        os.kill(h.pid, signal.SIGSTOP)
        try:
            t = time.time()
            rc, out, _ = self.cli("status", ok=False)  # the default limit
            took = time.time() - t
            self.assertEqual(rc, 1)
            e = only_error(out)
            self.assertEqual((e["pid"], e["code"]), (h.pid, "timeout"))
            self.assertIn("--timeout", e["message"])
            self.assertGreater(took, 9)
            self.assertLess(took, 30)
            t = time.time()
            rc, _, err = self.raw("regions", "--timeout", "0.5")
            self.assertEqual(rc, 1)
            self.assertIn("no reply within 0.5 s", err)
            self.assertLess(time.time() - t, 5)
            rc, text, _ = self.raw("ps", "--timeout", "0.5")
            self.assertEqual(rc, 1)
        finally:
            os.kill(h.pid, signal.SIGCONT)
        self.assertEqual(self.state_of(h, "weights"), "awake")

    def test_sleep_and_wake_show_progress_on_stderr_when_asked(self):
        env = dict(self.env, FAKECUDA_COPY_DELAY_US="100000")  # 0.1 s per 2 MiB chunk
        h = self.start(tag="weights", env=env)
        h.send("alloc w 33554432 3")
        rc, out, err = self.raw("sleep", "--progress", env=env)
        self.assertEqual(rc, 0)
        self.assertIn("slept weights", out)
        lines = err.splitlines()
        self.assertRegex(lines[0], rf"^sleeping (\S+ \S+ of )?32.00 MiB \(pid {h.pid}\)")
        self.assertGreaterEqual(len(lines), 3, err)  # the start, each second, the end
        self.assertRegex(lines[-1], r"^slept 32.00 MiB in \d")
        rc, out, err = self.raw("wake", "--progress", "--json", env=env)
        self.assertEqual(rc, 0)
        self.assertEqual(only_result(json.loads(out))["bytes"], 32 * MiB)
        self.assertRegex(err.splitlines()[0], r"^waking (\S+ \S+ of )?32.00 MiB")
        self.assertRegex(err.splitlines()[-1], r"^woke 32.00 MiB in \d")
        # Off when stderr is not a terminal, unless asked.
        self.assertEqual(self.raw("sleep", env=env)[2], "")
        self.assertEqual(self.raw("wake", "--no-progress", env=env)[2], "")
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_status_and_ps_answer_during_a_sleep_and_show_its_progress(self):
        # Past a 1 MiB host budget the contents go to pageable memory through the staging ring,
        # four 16 MiB pieces at a time, each copy slowed to 0.5 s: 256 MiB take 2 s, and their
        # bytes move as the sleep runs.
        env = dict(self.env, FAKECUDA_COPY_DELAY_US="500000", GPUSLEEP_HOST_BUDGET="1M")
        h = self.start(tag="weights", env=env)
        h.send("alloc w 268435456 3")
        sleeper = subprocess.Popen([CLI, "sleep", "--pid", str(h.pid), "--progress"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = []
            deadline = time.time() + 60
            while sleeper.poll() is None and time.time() < deadline:
                _, status, _ = self.cli("status", "--pid", str(h.pid), env=env)
                op = only_result(status)["operation"]
                if op is not None:
                    seen.append(op)
                    if len(seen) == 1:  # the human forms, while it runs
                        _, text, _ = self.raw("status", "--pid", str(h.pid), env=env)
                        self.assertRegex(text, r"  now: sleeping weights: \S+ \S+ of 256.00 MiB, "
                                               r"[\d.]+ s so far\n")
                        _, table, _ = self.raw("ps", env=env)
                        self.assertRegex(table, r"NOW +COMMAND")
                        self.assertRegex(table, rf"{h.pid} .* sleeping \d+% ")
                time.sleep(0.05)
            out, err = sleeper.communicate(timeout=60)
        finally:
            if sleeper.poll() is None:
                sleeper.kill()
        self.assertEqual(sleeper.returncode, 0, err)
        self.assertTrue(seen, "status never answered while the sleep ran")
        for op in seen:
            self.assertEqual((op["op"], op["tags"], op["regions"], op["total_bytes"]),
                             ("sleep", ["weights"], 1, 256 * MiB))
        done = [op["done_bytes"] for op in seen]
        self.assertEqual(done, sorted(done), "progress went backwards")
        self.assertTrue(any(0 < d < 256 * MiB for d in done), done)
        # The controller's progress lines carry the bytes done, the rate and the time left.
        self.assertRegex(err, r"sleeping \S+ \S+ of 256.00 MiB \(pid \d+\), \d+ [MG]B/s, "
                              r"[\d.]+ s left: ")
        _, status, _ = self.cli("status", "--pid", str(h.pid), env=env)
        self.assertIsNone(only_result(status)["operation"])
        self.assertNotIn("NOW", self.raw("ps", env=env)[1])
        self.cli("wake", "--pid", str(h.pid), env=env)
        self.assertEqual(h.send("check w"), "OK check w match")


@unittest.skipUnless(os.geteuid() == 0, "needs root to act as another user")
class ForeignRuntime(unittest.TestCase):
    """A runtime directory or a socket that another user made is refused, at once."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        os.chmod(self.tmp.name, 0o755)
        self.env = dict(os.environ)

    def tearDown(self):
        self.tmp.cleanup()

    def run_cli(self, *args):
        return run_cli(CLI, list(args), self.env, timeout=20)

    def test_a_directory_another_user_owns_is_refused(self):
        theirs = os.path.join(self.tmp.name, "gpusleep-0")
        os.mkdir(theirs, 0o700)
        # An impostor's socket inside: it accepts and never answers.
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(os.path.join(theirs, f"{os.getpid()}.sock"))
        listener.listen(8)
        os.chown(theirs, 65534, 65534)
        self.env["GPUSLEEP_RUNTIME_DIR"] = theirs
        try:
            for args in (["status"], ["ps"], ["sleep", "--all"]):
                rc, out, _ = self.run_cli(*args)
                self.assertEqual(rc, 1, args)
                e = only_error(out)
                self.assertEqual(e["code"], "untrusted", args)
                self.assertIn("owned by uid 65534", e["message"])
            p = subprocess.run([CLI, "status"], env=self.env, capture_output=True, text=True,
                               timeout=20)
            self.assertIn("not using it", p.stderr)
        finally:
            listener.close()

    def test_a_socket_another_user_listens_on_is_refused(self):
        mine = os.path.join(self.tmp.name, "run")
        os.mkdir(mine, 0o700)
        self.env["GPUSLEEP_RUNTIME_DIR"] = mine
        # Bound in our directory, then listening as uid 65534: the credentials a client sees.
        impostor = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, time
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join({mine!r}, f"{{os.getpid()}}.sock"))
os.setgid(65534)
os.setuid(65534)
s.listen(8)
print("READY", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(impostor.stdout.readline().strip(), "READY")
            for args in (["status"], ["sleep", "--all"], ["status", "--pid", str(impostor.pid)]):
                t = time.time()
                rc, out, _ = self.run_cli(*args)
                self.assertLess(time.time() - t, 5, args)
                self.assertEqual(rc, 1, args)
                e = only_error(out)
                self.assertEqual((e["pid"], e["code"]), (impostor.pid, "untrusted"), args)
                self.assertIn("runs as uid 65534", e["message"])
        finally:
            impostor.kill()
            impostor.wait()


if __name__ == "__main__":
    unittest.main()
