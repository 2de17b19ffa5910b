"""End to end, the Python package (control/python/gpusleep): programs started with
gpusleep.launch() under the real library over the emulated driver, controlled with
gpusleep.attach(); a program that sleeps and wakes its own tags while its other GPU work goes on;
the error classes; and the client's refusals: a runtime directory or a server of another user,
a server that does not answer."""
import json
import os
import re
import socket
import stat
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import DEVICE_BUFFERS, EmulatedCase  # noqa: E402  (puts the package on the path)
import gpusleep  # noqa: E402

MiB = 1 << 20
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(gpusleep.__file__)))
NOBODY = 65534

# A program that allocates through the (emulated) CUDA runtime, as a framework would, and
# controls its own memory with the package. Prints one JSON line of what it saw.
SELF_CONTROL = textwrap.dedent("""
    import ctypes, json, sys, threading
    import gpusleep
    rt = ctypes.CDLL("libcudart.so.13")

""") + DEVICE_BUFFERS + textwrap.dedent("""

    with gpusleep.region("weights"):          # before the first allocation
        w = alloc(4 << 20, 0x57)
        with gpusleep.region("kv_cache"):
            k = alloc(8 << 20, 0x4B)
        w2 = alloc(2 << 20, 0x58)             # the outer region's tag again
    s = alloc(2 << 20, 0x53)                  # no region: the default tag
    slept = gpusleep.sleep("kv_cache")
    # Work on other tags goes on while kv_cache sleeps (a gated sleep would hold it until wake).
    done = []
    t = threading.Thread(target=lambda: done.append(
        rt.cudaMemset(w, 0x77, ctypes.c_size_t(4 << 20)) == 0 and read(w, 4 << 20)))
    t.start(); t.join(10)
    status = gpusleep.this_process().status()
    woke = gpusleep.wake("kv_cache")
    print(json.dumps({
        "slept_bytes": slept["bytes"], "woke_bytes": woke["bytes"],
        "work_went_on": bool(done) and done[0] == bytes([0x77]) * (4 << 20),
        "states": {t["tag"]: [t["state"], t["bytes"]] for t in status["tags"]},
        "kv_after_wake": read(k, 8 << 20) == bytes(8 << 20),
        "w2": read(w2, 2 << 20) == bytes([0x58]) * (2 << 20),
    }), flush=True)
""")


class FakeServer:
    """A socket in `directory` that records the requests it gets and answers each with `reply`
    (None: never answers)."""

    def __init__(self, directory, name, reply=None):
        self.path = os.path.join(directory, name)
        self.requests = []
        self.reply = reply
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data:
                request = json.loads(data)
                self.requests.append(request)
                if self.reply is not None:
                    answer = dict(self.reply, v=1, id=request.get("id"))
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self):
        self.listener.close()
        for c in self.conns:
            c.close()


class PythonApi(EmulatedCase):
    def setUp(self):
        super().setUp()
        self.saved_env = dict(os.environ)
        os.environ["GPUSLEEP_RUNTIME_DIR"] = self.run_dir
        os.environ["GPUSLEEP_LIBRARY"] = self.env.get("GPUSLEEP_LIBRARY") or \
            gpusleep.library_path()
        self.launched = []

    def tearDown(self):
        for h in self.launched:
            if h.poll() is None:
                h.kill()
            h.wait()
            for pipe in (h.popen.stdin, h.popen.stdout):
                if pipe:
                    pipe.close()
        os.environ.clear()
        os.environ.update(self.saved_env)
        super().tearDown()

    def launch(self, argv, **kwargs):
        env = {k: self.env[k] for k in ("LD_LIBRARY_PATH", "FAKECUDA_STATE", "FAKECUDA_MEMORY",
                                        "GPUSLEEP_RUNTIME_DIR", "GPUSLEEP_COPY_CHUNK")}
        env["PYTHONPATH"] = PACKAGE_DIR
        env.update({k: None for k in os.environ if k.startswith("GPUSLEEP_TEST_")})
        env.update(kwargs.pop("env", {}))
        h = gpusleep.launch(argv, env=env, **kwargs)
        self.launched.append(h)
        return h

    def host(self, **kwargs):
        """The emulated host program started with launch(), with its stdin and stdout."""
        import subprocess
        h = self.launch([os.environ["GPUSLEEP_TEST_HOST"]], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True, bufsize=1, **kwargs)
        self.assertEqual(h.popen.stdout.readline().strip(), "READY")
        return h

    def send(self, h, line):
        h.popen.stdin.write(line + "\n")
        h.popen.stdin.flush()
        answer = h.popen.stdout.readline().strip()
        self.assertTrue(answer.startswith("OK"), f"{line}: {answer}")
        return answer

    def private_dir(self):
        d = tempfile.mkdtemp(dir=self.tmp.name)
        os.chmod(d, 0o700)
        return d

    def test_launch_attach_sleep_and_wake_take_a_string_tag_as_one_tag(self):
        h = self.host(tag="weights")
        self.send(h, "alloc w 4194304 1")
        proc = h.attach(ready_timeout=30)
        self.assertEqual(proc.pid, h.pid)
        self.send(h, "alloc k 8388608 2")
        proc.retag("kv_cache", ids=[2])
        free = self.free()
        result = proc.sleep("weights")
        self.assertEqual([t["tag"] for t in result["tags"]], ["weights"])
        self.assertEqual(self.free() - free, 4 * MiB)
        self.assertEqual([r["tag"] for r in proc.regions(tags="kv_cache")["regions"]],
                         ["kv_cache"])
        states = {t["tag"]: t["state"] for t in proc.status()["tags"]}
        self.assertEqual(states, {"weights": "asleep", "kv_cache": "awake"})
        self.assertEqual(proc.wake("weights")["bytes"], 4 * MiB)
        self.send(h, "check w")
        self.assertEqual([p.pid for p in gpusleep.processes()], [h.pid])

    def test_each_error_code_raises_its_own_class_with_the_code(self):
        h = self.host()
        self.send(h, "alloc a 2097152 1")
        proc = h.attach(ready_timeout=30)
        with self.assertRaises(gpusleep.UnknownTagError) as e:
            proc.sleep("no_such_tag")
        self.assertEqual(e.exception.code, "unknown_tag")
        self.assertEqual(e.exception.pid, h.pid)
        self.assertIn("no_such_tag", e.exception.message)
        with self.assertRaises(gpusleep.UnknownOpError):
            proc.call("no_such_op")
        with self.assertRaises(gpusleep.InvalidArgumentError):
            proc.sleep(policy="sideways")
        with self.assertRaises(TypeError):
            proc.sleep(["default", 3])
        for code, (parent, _) in gpusleep.ERROR_CODES.items():
            cls = gpusleep.error_class(code)
            self.assertIs(getattr(gpusleep, cls.__name__), cls)
            self.assertTrue(issubclass(cls, gpusleep.GpusleepError))
            self.assertEqual(cls.code, code)
            if parent:
                self.assertTrue(issubclass(cls, gpusleep.error_class(parent)))
        self.assertIs(gpusleep.error_class("out_of_memory"), gpusleep.OutOfMemoryError)
        self.assertTrue(issubclass(gpusleep.TimedOutError, gpusleep.ConnectionFailedError))

    def test_every_failure_code_of_the_library_has_its_class(self):
        with open(os.path.join(HERE, "..", "..", "preload", "base", "failure.h")) as f:
            codes = re.findall(r'\{Failure::k\w+, "(\w+)"', f.read())
        self.assertGreater(len(codes), 10)
        for code in codes:
            self.assertIn(code, gpusleep.ERROR_CODES)
            self.assertEqual(gpusleep.error_class(code).code, code)

    def test_an_error_keeps_its_class_and_fields_through_pickling(self):
        import pickle
        e = gpusleep.errors.make_error("out_of_memory", "short", {"needed_bytes": 5}, 42)
        back = pickle.loads(pickle.dumps(e))
        self.assertIs(type(back), gpusleep.OutOfMemoryError)
        self.assertEqual((back.code, back.message, back.details, back.pid),
                         ("out_of_memory", "short", {"needed_bytes": 5}, 42))
        odd = pickle.loads(pickle.dumps(gpusleep.errors.make_error("a_new_code", "m")))
        self.assertIs(type(odd), gpusleep.GpusleepError)
        self.assertEqual(odd.code, "a_new_code")

    def test_a_program_sleeps_its_own_tags_while_its_other_work_goes_on(self):
        import subprocess
        script = os.path.join(self.tmp.name, "self_control.py")
        with open(script, "w") as f:
            f.write(SELF_CONTROL)
        h = self.launch([sys.executable, script], stdout=subprocess.PIPE, text=True)
        out, _ = h.popen.communicate(timeout=60)
        self.assertEqual(h.popen.returncode, 0, out)
        seen = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(seen["slept_bytes"], 8 * MiB)
        self.assertEqual(seen["woke_bytes"], 8 * MiB)
        self.assertTrue(seen["work_went_on"])
        self.assertEqual(seen["states"], {"weights": ["awake", 6 * MiB],
                                          "kv_cache": ["asleep", 8 * MiB],
                                          "default": ["awake", 2 * MiB]})
        self.assertTrue(seen["kv_after_wake"])  # kv_cache discards: fresh memory
        self.assertTrue(seen["w2"])

    def test_in_process_calls_outside_the_library_say_so(self):
        with self.assertRaises(gpusleep.ConnectionFailedError) as e:
            gpusleep.sleep("kv_cache")
        self.assertIn("does not run under gpusleep", str(e.exception))

    def test_environment_preloads_the_library_and_sets_the_options(self):
        env = gpusleep.environment(preset="vllm", tag="weights", policy={"kv_cache": "offload"},
                                   log_level="info", gate="wake", keep_mirrors=False,
                                   base={"LD_PRELOAD": "/opt/other.so"})
        lib = gpusleep.library_path()
        self.assertEqual(env["LD_PRELOAD"], f"{lib}:/opt/other.so")
        self.assertEqual(os.path.basename(env["GPUSLEEP_RULES"]), "vllm.json")
        with open(env["GPUSLEEP_RULES"]) as f:
            self.assertIn("rules", json.load(f))
        self.assertEqual({k: v for k, v in env.items() if k not in ("LD_PRELOAD",
                                                                    "GPUSLEEP_RULES")},
                         {"GPUSLEEP_DEFAULT_TAG": "weights", "GPUSLEEP_POLICY": "kv_cache=offload",
                          "GPUSLEEP_LOG_LEVEL": "info", "GPUSLEEP_GATE": "wake",
                          "GPUSLEEP_KEEP_MIRRORS": "0"})
        again = gpusleep.environment(base={"LD_PRELOAD": lib})
        self.assertEqual(again, {"LD_PRELOAD": lib})
        with self.assertRaises(TypeError):
            gpusleep.environment(no_such_option=1)
        with self.assertRaises(ValueError) as e:
            gpusleep.environment(preset="no-such")
        self.assertIn("vllm", str(e.exception))
        self.assertIn("vllm", gpusleep.presets())

    def test_a_launched_program_gets_the_presets_rules(self):
        h = self.host(preset="pytorch")
        self.send(h, "alloc a 2097152 1")
        rules = h.attach(ready_timeout=30).rules()
        self.assertEqual(os.path.basename(rules["file"]), "pytorch.json")
        self.assertTrue(rules["rules"])

    def test_wake_sends_wait_and_sleep_sends_gate_only_when_given(self):
        d = self.private_dir()
        server = FakeServer(d, "4242.sock", reply={"ok": True, "result": {"bytes": 0}})
        try:
            proc = gpusleep.attach(socket=server.path)
            self.assertEqual(proc.pid, 4242)
            proc.wake("weights")
            proc.wake(["weights", "kv_cache"], wait=2.5)
            proc.sleep("weights")
            proc.sleep(gate=False)
        finally:
            server.close()
        fields = [{k: v for k, v in r.items() if k not in ("v", "id")} for r in server.requests]
        self.assertEqual(fields, [
            {"op": "wake", "tags": ["weights"]},
            {"op": "wake", "tags": ["weights", "kv_cache"], "wait": 2.5},
            {"op": "sleep", "tags": ["weights"]},
            {"op": "sleep", "gate": False}])

    def test_read_only_calls_time_out_by_default_and_sleep_waits_unless_told(self):
        d = self.private_dir()
        server = FakeServer(d, "4243.sock", reply=None)
        saved = gpusleep.client.READ_TIMEOUT
        gpusleep.client.READ_TIMEOUT = 0.5
        try:
            proc = gpusleep.attach(socket=server.path)
            start = time.monotonic()
            with self.assertRaises(gpusleep.TimedOutError) as e:
                proc.status()
            self.assertLess(time.monotonic() - start, 5)
            self.assertIn("no reply to 'status' within 0.5 s", str(e.exception))
            with self.assertRaises(gpusleep.TimedOutError):
                proc.regions()
            with self.assertRaises(gpusleep.TimedOutError):
                proc.sleep("weights", timeout=0.3)
            outcome = []
            t = threading.Thread(target=lambda: outcome.append(self.catch(proc.wake)))
            t.start()
            t.join(1.5)
            self.assertTrue(t.is_alive())  # still waiting: no limit by default
        finally:
            gpusleep.client.READ_TIMEOUT = saved
            server.close()
        t.join(10)
        self.assertIsInstance(outcome[0], gpusleep.ConnectionFailedError)

    def catch(self, fn):
        try:
            return fn()
        except gpusleep.GpusleepError as e:
            return e

    def test_an_unsafe_runtime_directory_is_refused_before_anything_is_sent(self):
        d = self.private_dir()
        server = FakeServer(d, "4244.sock", reply={"ok": True, "result": {}})
        try:
            os.chmod(d, 0o755)
            with self.assertRaises(gpusleep.UnsafeRuntimeDirError) as e:
                gpusleep.attach(socket=server.path).status()
            self.assertIn("mode 755", str(e.exception))
            os.chmod(d, 0o700)
            link = os.path.join(self.tmp.name, "link")
            os.symlink(d, link)
            with self.assertRaises(gpusleep.UnsafeRuntimeDirError) as e:
                gpusleep.attach(socket=os.path.join(link, "4244.sock")).status()
            self.assertIn("symbolic link", str(e.exception))
            os.environ["GPUSLEEP_RUNTIME_DIR"] = link
            with self.assertRaises(gpusleep.UnsafeRuntimeDirError):
                gpusleep.processes()
            if os.getuid() == 0:
                os.chown(d, NOBODY, NOBODY)
                with self.assertRaises(gpusleep.UnsafeRuntimeDirError) as e:
                    gpusleep.attach(socket=server.path).status()
                self.assertIn(f"owned by uid {NOBODY}", str(e.exception))
                os.environ["GPUSLEEP_RUNTIME_DIR"] = d
                with self.assertRaises(gpusleep.UnsafeRuntimeDirError):
                    gpusleep.processes()
            self.assertEqual(server.requests, [])
        finally:
            server.close()

    def test_a_server_run_by_another_user_gets_nothing(self):
        if os.getuid() != 0:
            self.skipTest("needs root to run a server as another user")
        d = self.private_dir()
        path = os.path.join(d, "4245.sock")
        ready_r, ready_w = os.pipe()
        got_r, got_w = os.pipe()
        child = os.fork()
        if child == 0:  # the impostor: binds in our directory, then listens as nobody
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(path)
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                s.listen(1)
                os.write(ready_w, b"1")
                s.settimeout(20)
                conn, _ = s.accept()
                conn.settimeout(5)
                data = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                os.write(got_w, str(len(data)).encode())
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(got_w)
        self.assertEqual(os.read(ready_r, 1), b"1")
        with self.assertRaises(gpusleep.UntrustedPeerError) as e:
            gpusleep.attach(socket=path).sleep("weights")
        self.assertIn(f"runs as uid {NOBODY}", str(e.exception))
        self.assertEqual(os.read(got_r, 64), b"0")  # it read nothing before we hung up
        os.waitpid(child, 0)

    def test_the_package_version_is_the_projects(self):
        with open(os.path.join(HERE, "..", "..", "CMakeLists.txt")) as f:
            project = re.search(r"project\(gpusleep VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(gpusleep.__version__, project)

    def test_a_vllm_sleep_level_other_than_1_or_2_is_refused_before_anything_is_sent(self):
        d = self.private_dir()
        server = FakeServer(d, "4246.sock", reply={"ok": True, "result": {"tags": []}})
        try:
            llm = gpusleep.compat.vllm(gpusleep.attach(socket=server.path))
            with self.assertRaises(ValueError):
                llm.sleep(level=3)
        finally:
            server.close()
        self.assertEqual(server.requests, [])

    def test_the_deprecated_module_still_works(self):
        if os.environ.get("GPUSLEEP_TEST_INSTALLED"):
            self.skipTest("the deprecated module is the source tree's alone")
        import warnings
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            import gpusleep_client
        self.assertIs(gpusleep_client.connect, gpusleep.attach)
        self.assertIs(gpusleep_client.ConnectionFailed, gpusleep.ConnectionFailedError)


if __name__ == "__main__":
    unittest.main()
