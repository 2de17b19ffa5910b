"""The client side of the control protocol (docs/protocol.md): find the processes running with
the library, check that their sockets are ours, send one request, read one reply."""
import json
import os
import socket as _socket
import stat
import struct
import threading
import time

from .errors import (ConnectionFailedError, TimedOutError, UnsafeRuntimeDirError,
                     UntrustedPeerError, make_error)

PROTOCOL_VERSION = 1
MAX_REPLY = 64 << 20
# Seconds a read-only request (status, regions, discovery) waits for its reply unless told
# otherwise. Requests that change state (sleep, wake, ...) wait as long as they take by default.
READ_TIMEOUT = 30.0
_DEFAULT = object()


def runtime_dir(env=None):
    """Where the sockets are, chosen as the library and the CLI choose it from `env` (default
    os.environ): $GPUSLEEP_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpusleep (when that directory is
    ours), else /tmp/gpusleep-UID."""
    env = os.environ if env is None else env
    configured = env.get("GPUSLEEP_RUNTIME_DIR", "")
    if configured.startswith("/"):
        return configured
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        try:
            st = os.stat(xdg)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                return os.path.join(xdg, "gpusleep")
        except OSError:
            pass
    return f"/tmp/gpusleep-{os.getuid()}"


def check_runtime_dir(directory, pid=None):
    """Raises UnsafeRuntimeDirError unless `directory` is a directory (not a link) owned by this
    user and closed to group and others, the checks the library makes before it listens there:
    anyone who can write into it could put their own socket in place of a process's.
    Raises ConnectionFailedError when it does not exist."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise ConnectionFailedError(f"no runtime directory {directory}: no process is running "
                                    "with gpusleep there", pid=pid) from None
    except OSError as e:
        raise ConnectionFailedError(f"runtime directory {directory}: {e.strerror}",
                                    pid=pid) from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRuntimeDirError(f"runtime directory {directory} is a symbolic link; "
                                    "refusing to talk through it", pid=pid)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDirError(f"runtime directory {directory} is not a directory", pid=pid)
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDirError(
            f"runtime directory {directory} is owned by uid {st.st_uid}, not by this user "
            f"({os.getuid()}); refusing to talk through it", pid=pid)
    if st.st_mode & 0o077:
        raise UnsafeRuntimeDirError(
            f"runtime directory {directory} has mode {st.st_mode & 0o777:03o}; it must not be "
            "open to group or others (chmod 700)", pid=pid)


def _check_peer(sock, path, pid):
    """Raises UntrustedPeerError unless the process that listens on `sock` runs as this user
    or as root, as the server checks its clients."""
    fmt = "3i"  # struct ucred: pid, uid, gid
    data = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize(fmt))
    peer_pid, peer_uid, _ = struct.unpack(fmt, data)
    if peer_uid not in (os.getuid(), 0):
        raise UntrustedPeerError(
            f"the process behind {path} (pid {peer_pid}) runs as uid {peer_uid}, not as this "
            f"user ({os.getuid()}) or root; nothing was sent", pid=pid)


def _tag_list(tags):
    """None, one tag (a string: never split into characters) or an iterable of tags."""
    if tags is None:
        return None
    if isinstance(tags, str):
        return [tags]
    out = list(tags)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"a tag is a string, not {type(t).__name__} ({t!r})")
    return out


class Process:
    """One process running with the library, reached through its control socket. Every method
    sends one request and returns the reply's `result` (a dict), or raises a GpusleepError
    subclass: the error reply's code (e.g. OutOfMemoryError), ConnectionFailedError,
    TimedOutError, UnsafeRuntimeDirError or UntrustedPeerError.

    `timeout` (seconds) bounds every call of this object when given; otherwise read-only calls
    (status, regions) wait at most READ_TIMEOUT and the others as long as they take. Each
    method's own `timeout` argument wins over both. Safe to use from several threads."""

    def __init__(self, socket_path, pid=None, timeout=None):
        self.socket_path = os.path.abspath(socket_path)
        if pid is None:
            stem = os.path.basename(socket_path).split(".")[0]
            pid = int(stem) if stem.isdigit() else None
        self.pid = pid
        self.timeout = timeout
        self._next_id = 0
        self._lock = threading.Lock()

    def __repr__(self):
        return f"Process(pid={self.pid}, socket={self.socket_path!r})"

    def _timeout(self, timeout, read_only):
        if timeout is not _DEFAULT:
            return timeout
        if self.timeout is not None:
            return self.timeout
        return READ_TIMEOUT if read_only else None

    def call(self, op, timeout=None, **fields):
        """Sends the request `op` with `fields` (None values are left out) and returns the
        result. `timeout`: seconds for the whole exchange, None for no limit."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
        request = {"v": PROTOCOL_VERSION, "op": op, "id": request_id}
        request.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        check_runtime_dir(os.path.dirname(self.socket_path), self.pid)
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            reply = self._exchange(sock, line, op, deadline, timeout)
        finally:
            sock.close()
        try:
            message = json.loads(reply)
        except ValueError:
            raise ConnectionFailedError("the reply is not JSON", pid=self.pid) from None
        if not isinstance(message, dict) or "ok" not in message:
            raise ConnectionFailedError("the reply is not a gpusleep reply", pid=self.pid)
        if not message["ok"]:
            error = message.get("error") or {}
            details = dict(error.get("details") or {})
            if "partial" in message:
                details.setdefault("partial", message["partial"])
            raise make_error(error.get("code", "unknown"), error.get("message", ""), details,
                             self.pid)
        return message.get("result", {})

    def _exchange(self, sock, line, op, deadline, timeout):
        def left():
            if deadline is None:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _socket.timeout()
            return remaining

        try:
            try:
                st = os.lstat(self.socket_path)
            except FileNotFoundError:
                raise ConnectionFailedError(f"no socket {self.socket_path}: no process with the "
                                            "library there (or it has not allocated GPU memory "
                                            "yet)", pid=self.pid) from None
            if not stat.S_ISSOCK(st.st_mode):
                raise UnsafeRuntimeDirError(f"{self.socket_path} is not a socket", pid=self.pid)
            sock.settimeout(left())
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise ConnectionFailedError(f"nothing is listening on {self.socket_path} "
                                            f"({e.strerror})", pid=self.pid) from None
            _check_peer(sock, self.socket_path, self.pid)
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once (too many connections): read its answer
            return self._read_line(sock, left)
        except _socket.timeout:
            raise TimedOutError(f"no reply to '{op}' within {timeout:g} s", pid=self.pid) from None
        except OSError as e:
            raise ConnectionFailedError(f"{self.socket_path}: {e}", pid=self.pid) from None

    def _read_line(self, sock, left):
        chunks = []
        size = 0
        while True:
            sock.settimeout(left())
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionFailedError("the process closed the connection", pid=self.pid)
            newline = data.find(b"\n")
            if newline >= 0:
                chunks.append(data[:newline])
                return b"".join(chunks).decode("utf-8", errors="replace")
            chunks.append(data)
            size += len(data)
            if size > MAX_REPLY:
                raise ConnectionFailedError("the reply is too long", pid=self.pid)

    # One method per operation (docs/protocol.md).
    def status(self, timeout=_DEFAULT):
        """Tags, their states and bytes, devices, the gate: docs/protocol.md `status`."""
        return self.call("status", timeout=self._timeout(timeout, True))

    def regions(self, tags=None, stacks=False, group=False, depth=None, timeout=_DEFAULT):
        """Every region (or those of `tags`); `group`: bytes per call site."""
        return self.call("regions", timeout=self._timeout(timeout, True), tags=_tag_list(tags),
                         stacks=stacks or None, group=group or None, depth=depth)

    def sleep(self, tags=None, policy=None, gate=None, timeout=_DEFAULT):
        """Puts `tags` (one tag, a list, or None: every tag) to sleep. `policy` ("offload" or
        "discard") overrides every tag's policy for this request. `gate=False`: the process's
        GPU work is not held while they sleep (the caller promises it leaves them alone)."""
        return self.call("sleep", timeout=self._timeout(timeout, False), tags=_tag_list(tags),
                         policy=policy, gate=None if gate is None else bool(gate))

    def wake(self, tags=None, wait=None, timeout=_DEFAULT):
        """Wakes `tags` (None: every tag), all or nothing. `wait` (seconds): when the memory is
        not free, keep trying until this deadline instead of failing at once with
        OutOfMemoryError; sent only when given (processes whose library predates it refuse the
        field with InvalidArgumentError)."""
        return self.call("wake", timeout=self._timeout(timeout, False), tags=_tag_list(tags),
                         wait=wait)

    def tag(self, tag=None, clear=False, timeout=_DEFAULT):
        """Sets the phase tag (the tag of later allocations), clears it, or reports it."""
        return self.call("tag", timeout=self._timeout(timeout, False), tag=tag,
                         clear=True if clear else None)

    def policy(self, tag=None, policy=None, timeout=_DEFAULT):
        """Reports the per-tag policies, or sets `tag`'s."""
        return self.call("policy", timeout=self._timeout(timeout, False), tag=tag, policy=policy)

    def retag(self, tag, ids=None, address_range=None, call_site=None, timeout=_DEFAULT):
        """Gives regions (by ids, (start, end) address range, or call-site pattern) the tag."""
        rng = None
        if address_range is not None:
            rng = {"start": address_range[0], "end": address_range[1]}
        return self.call("retag", timeout=self._timeout(timeout, False), tag=tag,
                         ids=list(ids) if ids else None, range=rng, call_site=call_site)

    def rules(self, action="show", rules=None, timeout=_DEFAULT):
        """Shows, sets (`rules`: a rule set), reloads or clears the tagging rules."""
        return self.call("rules", timeout=self._timeout(timeout, False), action=action,
                         rules=rules)


def processes(directory=None, timeout=READ_TIMEOUT):
    """Every process running with the library whose socket answers, by pid. The runtime
    directory is checked first (UnsafeRuntimeDirError); none there: []."""
    directory = directory or runtime_dir()
    if not os.path.lexists(directory):
        return []
    check_runtime_dir(directory)
    found = []
    for name in sorted(os.listdir(directory), key=lambda n: (len(n), n)):
        stem, _, ext = name.partition(".")
        if ext != "sock" or not stem.isdigit():
            continue
        path = os.path.join(directory, name)
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        probe.settimeout(timeout)
        try:
            probe.connect(path)
        except OSError:
            continue  # its process has exited
        finally:
            probe.close()
        found.append(Process(path, int(stem)))
    return found


def attach(pid=None, socket=None, timeout=None):
    """The process `pid`, the one behind `socket`, or (neither given) the only process running
    with the library. `timeout`: see Process."""
    if pid is not None and socket is not None:
        raise ValueError("give pid or socket, not both")
    if socket is not None:
        return Process(socket, None, timeout)
    if pid is not None:
        return Process(os.path.join(runtime_dir(), f"{int(pid)}.sock"), int(pid), timeout)
    found = processes()
    if len(found) != 1:
        raise ConnectionFailedError(
            f"no process is running with gpusleep (sockets in {runtime_dir()})" if not found else
            "several processes run with gpusleep (" + ", ".join(str(p.pid) for p in found) +
            "); give a pid")
    found[0].timeout = timeout
    return found[0]


def _targets(targets):
    if targets is None:
        return processes()
    out = []
    for t in targets:
        out.append(t if isinstance(t, Process) else attach(pid=t))
    return out


def _all(method, targets, **kwargs):
    results, errors = {}, {}

    def run(p):
        try:
            results[p.pid] = getattr(p, method)(**kwargs)
        except Exception as e:  # noqa: BLE001 - each process's failure is reported, not raised
            errors[p.pid] = e

    threads = [threading.Thread(target=run, args=(p,)) for p in _targets(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def sleep_all(tags=None, policy=None, gate=None, timeout=None, processes=None):
    """Sleeps every process running with the library (or `processes`: Process objects or pids)
    in parallel. Returns ({pid: result}, {pid: GpusleepError})."""
    return _all("sleep", processes, tags=tags, policy=policy, gate=gate, timeout=timeout)


def wake_all(tags=None, wait=None, timeout=None, processes=None):
    """Wakes every process running with the library (or `processes`) in parallel. Returns
    ({pid: result}, {pid: GpusleepError})."""
    return _all("wake", processes, tags=tags, wait=wait, timeout=timeout)
