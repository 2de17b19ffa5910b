"""Shared helpers for the end-to-end tests (stdlib only): programs started under `gpusleep run`
and driven line by line, the CLI called with --json, and the device's free memory read from
outside the process (the emulated driver's fakecuda-smi, or nvidia-smi)."""
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# The Python package under test: the source tree's, unless GPUSLEEP_TEST_INSTALLED=1, where it is
# the one installed for the interpreter running the tests (scripts/test-wheel.sh).
PACKAGE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "control",
                              "python")
if not os.environ.get("GPUSLEEP_TEST_INSTALLED"):
    sys.path.insert(0, os.path.normpath(PACKAGE_SOURCE))


# For programs that tests write: alloc(size, fill) and read(p, size) over the CUDA runtime `rt`
# (ctypes.CDLL("libcudart.so.13"), which the program defines before this).
DEVICE_BUFFERS = """
def alloc(size, fill):
    p = ctypes.c_void_p()
    assert rt.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(size)) == 0
    assert rt.cudaMemset(p, fill, ctypes.c_size_t(size)) == 0
    return p

def read(p, size):
    host = ctypes.create_string_buffer(size)
    assert rt.cudaMemcpy(host, p, ctypes.c_size_t(size), 2) == 0
    return host.raw
"""


class Host:
    """A program started under `gpusleep run`, answering one line per command on stdout."""

    def __init__(self, cli, argv, env, tag=None, extra=(), raw=False):
        """Starts `cli run [--tag TAG] EXTRA -- ARGV`; with `raw`, `cli ARGV` (no library)."""
        if raw:
            cmd = [cli] + list(argv)
        else:
            cmd = [cli, "run"]
            if tag:
                cmd += ["--tag", tag]
            cmd += list(extra) + ["--"] + list(argv)
        self.stderr_path = tempfile.mktemp(prefix="gpusleep-host-", suffix=".err")
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)
        self.pid = self.proc.pid
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix, timeout=120):
        """Waits for a line starting with `prefix` and returns it."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no '{prefix}' line within {timeout}s; stderr: {self.stderr()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"program ended before '{prefix}'; stderr: {self.stderr()}")
            if line.startswith(prefix):
                return line
            if line.startswith("ERR"):
                raise AssertionError(f"program said {line!r} while waiting for '{prefix}'")

    def send(self, command, expect="OK", timeout=120):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(expect, timeout) if expect else None

    def ask(self, command, timeout=120):
        """Sends a command and returns the next line, whatever it says."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"program ended; stderr: {self.stderr()}")
        return line

    def stderr(self):
        self._stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()[-4000:]

    def close(self, timeout=60):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class EmulatedCase(unittest.TestCase):
    """A test over the emulated driver: programs under `gpusleep run` with the emulated CUDA
    libraries, a private runtime directory and device state, the CLI, and the device's free
    memory read from outside. Reads GPUSLEEP_TEST_CLI, GPUSLEEP_TEST_FAKE_DIR and
    GPUSLEEP_TEST_HOST."""

    memory = 1 << 30  # bytes of emulated device memory

    def setUp(self):
        self.cli_path = os.environ["GPUSLEEP_TEST_CLI"]
        fake_dir = os.environ["GPUSLEEP_TEST_FAKE_DIR"]
        self.smi = os.path.join(fake_dir, "fakecuda-smi")
        self.tmp = tempfile.TemporaryDirectory()
        self.run_dir = os.path.join(self.tmp.name, "run")
        self.env = dict(os.environ)
        self.env.update({
            "LD_LIBRARY_PATH": fake_dir,
            "FAKECUDA_STATE": os.path.join(self.tmp.name, "gpu-state"),
            "FAKECUDA_MEMORY": str(self.memory),
            "GPUSLEEP_RUNTIME_DIR": self.run_dir,
            "GPUSLEEP_COPY_CHUNK": "2M",
        })
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.close()
        self.tmp.cleanup()

    def start(self, tag=None, env=None, extra=(), argv=None):
        """Starts ARGV (default: the emulated host program) and waits for its READY."""
        h = Host(self.cli_path, argv or [os.environ["GPUSLEEP_TEST_HOST"]], env or self.env,
                 tag=tag, extra=extra)
        self.hosts.append(h)
        h.expect("READY", timeout=30)
        return h

    def cli(self, *args, ok=True, env=None):
        rc, out, err = run_cli(self.cli_path, args, env or self.env)
        if ok:
            self.assertEqual(rc, 0, f"gpusleep {' '.join(args)}: {err} {out}")
        return rc, out, err

    def free(self):
        return fake_free_bytes(self.smi, self.env)

    def socket_of(self, host):
        return os.path.join(self.run_dir, f"{host.pid}.sock")


def read_progress(path):
    """(iterations, mismatches) that tests/gpu/busy_program.py publishes in `path`."""
    with open(path, "rb") as f:
        data = f.read(16)
    return struct.unpack("<QQ", data) if len(data) == 16 else (0, 0)


def wait_progress(path, beyond, timeout=60):
    """Waits until busy_program.py has done more than `beyond` iterations; returns
    (iterations, mismatches)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        it, bad = read_progress(path)
        if it > beyond:
            return it, bad
        time.sleep(0.001)
    raise AssertionError(f"no progress beyond {beyond} iterations in {timeout} s")


def run_cli(cli, args, env, timeout=300):
    """Runs `gpusleep ARGS --json`; returns (exit status, parsed output or None, stderr). The
    output is the CLI's envelope: {"processes": [{"pid", "result"}...], "errors": [{"pid",
    "code", "message", and the error's other fields}...]} (docs/protocol.md)."""
    p = subprocess.run([cli] + list(args) + ["--json"], env=env, capture_output=True, text=True,
                       timeout=timeout)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    return p.returncode, out, p.stderr


def only_result(envelope):
    """The result of the one process a --json envelope holds, which must hold no error."""
    assert envelope is not None and not envelope["errors"] and len(envelope["processes"]) == 1, \
        envelope
    return envelope["processes"][0]["result"]


def only_error(envelope):
    """The one error a --json envelope holds, which must hold no result."""
    assert envelope is not None and not envelope["processes"] and len(envelope["errors"]) == 1, \
        envelope
    return envelope["errors"][0]


def fake_free_bytes(smi, env, device=0):
    out = subprocess.run([smi], env=env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        d, free, _total = line.split()
        if int(d) == device:
            return int(free)
    raise AssertionError(f"device {device} not listed by {smi}: {out!r}")


def nvidia_free_bytes(device=0):
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits",
                          "-i", str(device)], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[0]) << 20


def gpu_count():
    """GPUs nvidia-smi lists (0 without a driver)."""
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if p.returncode != 0:
        return 0
    return sum(1 for line in p.stdout.splitlines() if line.startswith("GPU "))


def have_gpu():
    return gpu_count() > 0


def rss_bytes(pid):
    """The resident host memory of process `pid` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0
