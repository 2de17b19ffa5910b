"""What the real-server GPU tests (test_servers.py, test_diffusion.py) share: a test case that
starts servers as their users start them, bare or under `gpusleep run`, each test in a runtime
directory of its own, waits for their health, drives them with the gpusleep command, and fails
with the server's log when a server refuses a request."""
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import have_gpu, only_result, run_cli  # noqa: E402
import serve_client as sc  # noqa: E402

CLI = os.environ.get("GPUSLEEP_TEST_CLI", "")
RESULTS = os.environ.get("GPUSLEEP_RESULTS_DIR", os.getcwd())


class ServerCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.env = sc.env_for_servers(os.environ)
        self.env["GPUSLEEP_RUNTIME_DIR"] = os.path.join(self.tmp.name, "run")
        self.procs = []
        self.last_log = None

    def tearDown(self):
        for p in self.procs:
            sc.stop_server(p)
        self.tmp.cleanup()

    def cli(self, *args):
        rc, out, err = run_cli(CLI, args, self.env)
        self.assertEqual(rc, 0, f"gpusleep {' '.join(args)}: {err} {out}")
        return only_result(out)

    def start(self, label, argv_for_port, under=None):
        """Starts the server `argv_for_port(port)` (under `gpusleep run` when `under` gives its
        arguments), its output in RESULTS/label.log; returns (process, base URL, seconds until
        healthy)."""
        port = sc.free_port()
        argv = argv_for_port(port)
        if under is not None:
            argv = [CLI, "run"] + under + ["--"] + argv
        self.last_log = os.path.join(RESULTS, f"{label}.log")
        t0 = time.monotonic()
        proc = sc.start_server(argv, self.env, self.last_log)
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        try:
            ready = sc.wait_healthy(base, proc) - t0
        except (RuntimeError, TimeoutError) as e:
            self.fail(f"{label}: {e}\n{sc.log_tail(self.last_log)}")
        return proc, base, ready

    def fail_with_log(self, error):
        self.fail(f"{error}\n--- server log ---\n{sc.log_tail(self.last_log, 60)}")


def main(modules):
    """Runs the tests of the calling module; exits 77 (skipped) without a GPU or when one of
    `modules` cannot be imported (the serving packages travel as wheels: fetch-wheels.sh)."""
    if not have_gpu():
        print("no GPU: skipped")
        sys.exit(77)
    if not CLI:
        print("GPUSLEEP_TEST_CLI must be set")
        sys.exit(2)
    missing = [m for m in modules
               if subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True,
                                 timeout=300).returncode != 0]
    if missing:
        print(f"missing {', '.join(missing)} (scripts/fetch-wheels.sh): skipped")
        sys.exit(77)
    unittest.main(module="__main__", verbosity=2)
