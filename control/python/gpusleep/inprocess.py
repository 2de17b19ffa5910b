"""A process running under the library controlling itself: sleep or wake some of its own tags
while its other GPU work goes on, and tag the allocations of a block of code."""
import contextlib
import ctypes
import os
import threading
import time

from .client import Process, runtime_dir
from .errors import ConnectionFailedError

_lock = threading.Lock()
_own = {}  # pid -> Process (a forked child gets its own)


def this_process(timeout=None):
    """The Process for this very process (os.getpid()): its own control socket. Raises
    ConnectionFailedError, saying why, when the process does not run under the library or has
    not opened its socket yet (the library opens it at the first CUDA allocation)."""
    pid = os.getpid()
    with _lock:
        proc = _own.get(pid)
        if proc is None:
            proc = _own[pid] = Process(os.path.join(runtime_dir(), f"{pid}.sock"), pid)
    if not os.path.exists(proc.socket_path) and _start_library():
        deadline = time.monotonic() + 5
        while not os.path.exists(proc.socket_path) and time.monotonic() < deadline:
            time.sleep(0.01)
    if not os.path.exists(proc.socket_path):
        preloaded = _preloaded_library() is not None
        raise ConnectionFailedError(
            f"this process has no control socket {proc.socket_path}: " +
            ("the library opens it at the first CUDA allocation" if preloaded else
             "it does not run under gpusleep (start it with `gpusleep run` or "
             "gpusleep.launch(), or pass gpusleep.environment() to it)"), pid=pid)
    if timeout is not None:
        return Process(proc.socket_path, pid, timeout)
    return proc


def _preloaded_library():
    for path in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":"):
        if os.path.basename(path).startswith("libgpusleep"):
            return path
    return None


def _start_library():
    """Makes the preloaded library set up (and open its control socket) before the process's
    first CUDA allocation, so region() can tag that allocation: its cudaMalloc with no pointer
    to fill starts it and allocates nothing. Returns whether the library is loaded here."""
    path = _preloaded_library()
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        lib.cudaMalloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.cudaMalloc(None, 0)
    except (OSError, AttributeError):
        return False
    return True


def sleep(tags, policy=None, gate=False, timeout=None):
    """Puts this process's `tags` (one tag or a list) to sleep. With gate=False (the default
    here) the process's other GPU work goes on while they sleep: the caller promises that
    nothing touches the slept tags' memory until wake(). Returns the sleep's result."""
    return this_process().sleep(tags, policy=policy, gate=gate, timeout=timeout)


def wake(tags=None, wait=None, timeout=None):
    """Wakes this process's `tags` (None: every tag). `wait`: seconds to keep trying while the
    memory is held elsewhere (see Process.wake)."""
    return this_process().wake(tags, wait=wait, timeout=timeout)


@contextlib.contextmanager
def region(tag):
    """Tags every allocation this process makes inside the block `tag` (the phase tag,
    process-wide: other threads' allocations in the meantime get it too), then restores the
    phase tag that was set before. Nests."""
    proc = this_process()
    previous = proc.tag(tag).get("previous")
    try:
        yield
    finally:
        if previous:
            proc.tag(previous)
        else:
            proc.tag(clear=True)
