"""gpusleep_client: a client of the gpusleep control protocol (docs/protocol.md), standard
library only, for RL frameworks and scripts that put processes to sleep and wake them.

    import gpusleep_client as gs
    proc = gs.connect(pid=1234)            # or gs.connect(socket=PATH), or gs.processes()
    proc.sleep(["kv_cache"])               # returns the reply's result (a dict)
    proc.wake()
    gs.sleep_all()                         # every process running with the library, in parallel

Failures raise GpusleepError (the process answered with an error: .code, .message, .details)
or ConnectionFailed (no process there, it closed the connection, no reply in time).
"""
import json
import os
import socket as _socket
import stat
import threading

PROTOCOL_VERSION = 1
MAX_REPLY = 64 << 20

__all__ = ["GpusleepError", "ConnectionFailed", "Process", "connect", "processes",
           "runtime_dir", "sleep_all", "wake_all"]


class GpusleepError(Exception):
    """The process answered with an error reply."""

    def __init__(self, code, message, details=None, pid=None):
        super().__init__(f"{code}: {message}" if pid is None else f"pid {pid}: {code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}
        self.pid = pid


class ConnectionFailed(GpusleepError):
    """No answer: nothing listening, the connection dropped, or no reply in time."""

    def __init__(self, message, pid=None):
        super().__init__("connection_failed", message, None, pid)


def runtime_dir():
    """Where the sockets are, as the library and the CLI choose it."""
    configured = os.environ.get("GPUSLEEP_RUNTIME_DIR", "")
    if configured.startswith("/"):
        return configured
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        try:
            st = os.stat(xdg)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                return os.path.join(xdg, "gpusleep")
        except OSError:
            pass
    return f"/tmp/gpusleep-{os.getuid()}"


class Process:
    """One process running with the library, reached through its control socket."""

    def __init__(self, socket_path, pid=None, timeout=None):
        self.socket_path = socket_path
        if pid is None:
            name = os.path.basename(socket_path).split(".")[0]
            pid = int(name) if name.isdigit() else None
        self.pid = pid
        self.timeout = timeout
        self._next_id = 0
        self._lock = threading.Lock()

    def __repr__(self):
        return f"Process(pid={self.pid}, socket={self.socket_path!r})"

    def call(self, op, **fields):
        """Sends one request and returns the reply's result; raises on an error reply."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
        request = {"v": PROTOCOL_VERSION, "op": op, "id": request_id}
        request.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise ConnectionFailed(f"nothing is listening on {self.socket_path} ({e.strerror})",
                                       self.pid) from None
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once (another user, too many connections): read its answer
            reply = _read_line(sock, self.pid)
        except _socket.timeout:
            raise ConnectionFailed("no reply in time", self.pid) from None
        except OSError as e:
            raise ConnectionFailed(f"{self.socket_path}: {e}", self.pid) from None
        finally:
            sock.close()
        try:
            message = json.loads(reply)
        except ValueError:
            raise ConnectionFailed("the reply is not JSON", self.pid) from None
        if not isinstance(message, dict) or "ok" not in message:
            raise ConnectionFailed("the reply is not a gpusleep reply", self.pid)
        if not message["ok"]:
            error = message.get("error") or {}
            raise GpusleepError(error.get("code", "unknown"), error.get("message", ""),
                                error.get("details"), self.pid)
        return message.get("result", {})

    # One method per operation (docs/protocol.md).
    def status(self):
        return self.call("status")

    def regions(self, tags=None, stacks=False, group=False, depth=None):
        return self.call("regions", tags=tags, stacks=stacks or None, group=group or None,
                         depth=depth)

    def sleep(self, tags=None, policy=None, gate=None):
        return self.call("sleep", tags=list(tags) if tags else None, policy=policy,
                         gate=gate)

    def wake(self, tags=None):
        return self.call("wake", tags=list(tags) if tags else None)

    def tag(self, tag=None, clear=False):
        return self.call("tag", tag=tag, clear=True if clear else None)

    def policy(self, tag=None, policy=None):
        return self.call("policy", tag=tag, policy=policy)

    def retag(self, tag, ids=None, address_range=None, call_site=None):
        rng = None
        if address_range is not None:
            rng = {"start": address_range[0], "end": address_range[1]}
        return self.call("retag", tag=tag, ids=list(ids) if ids else None, range=rng,
                         call_site=call_site)

    def rules(self, action="show", rules=None):
        return self.call("rules", action=action, rules=rules)


def _read_line(sock, pid):
    chunks = []
    size = 0
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionFailed("the process closed the connection", pid)
        newline = data.find(b"\n")
        if newline >= 0:
            chunks.append(data[:newline])
            return b"".join(chunks).decode("utf-8", errors="replace")
        chunks.append(data)
        size += len(data)
        if size > MAX_REPLY:
            raise ConnectionFailed("the reply is too long", pid)


def processes(directory=None, timeout=None):
    """Every process running with the library whose socket answers, by pid."""
    directory = directory or runtime_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        stem, _, ext = name.partition(".")
        if ext != "sock" or not stem.isdigit():
            continue
        path = os.path.join(directory, name)
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            continue  # its process has exited
        finally:
            probe.close()
        found.append(Process(path, int(stem), timeout))
    return found


def connect(pid=None, socket=None, timeout=None):
    """The process `pid`, the one behind `socket`, or the only one running with the library."""
    if pid is not None and socket is not None:
        raise ValueError("give pid or socket, not both")
    if socket is not None:
        return Process(socket, None, timeout)
    if pid is not None:
        return Process(os.path.join(runtime_dir(), f"{int(pid)}.sock"), int(pid), timeout)
    found = processes(timeout=timeout)
    if len(found) != 1:
        raise ConnectionFailed(
            "no process is running with gpusleep" if not found else
            "several processes run with gpusleep (" + ", ".join(str(p.pid) for p in found) +
            "); give a pid")
    return found[0]


def _all(method, *args, **kwargs):
    results, errors = {}, {}
    targets = processes(timeout=kwargs.pop("timeout", None))

    def run(p):
        try:
            results[p.pid] = getattr(p, method)(*args, **kwargs)
        except GpusleepError as e:
            errors[p.pid] = e

    threads = [threading.Thread(target=run, args=(p,)) for p in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def sleep_all(tags=None, policy=None, timeout=None):
    """Sleeps every process in parallel. Returns ({pid: result}, {pid: GpusleepError})."""
    return _all("sleep", tags, policy, timeout=timeout)


def wake_all(tags=None, timeout=None):
    """Wakes every process in parallel. Returns ({pid: result}, {pid: GpusleepError})."""
    return _all("wake", tags, timeout=timeout)
