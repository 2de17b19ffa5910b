"""The node side of gpusleep.ray: on one node, find the processes a request selects (from the
control sockets there, the processes' parent chains and their Ray job) and sleep, wake or read
them in parallel, each call bounded by the request's deadline. Standard library only: it runs in
the light task gpusleep.ray starts on each node, and can be tested without Ray."""
import json
import os
import socket
import threading
import time

from .client import Process, runtime_dir

MAX_DEPTH = 64  # parent links followed from a process towards init
MAX_ENVIRON = 1 << 20  # bytes of /proc/PID/environ read
JOB_VARIABLE = "RAY_JOB_ID"  # Ray sets it in every worker's environment; children inherit it


def _stat(pid):
    """(state, parent pid) of `pid` from /proc, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def parent_of(pid):
    """The parent pid of `pid`, or None when the process is gone."""
    st = _stat(pid)
    return None if st is None else st[1]


def alive(pid):
    """Whether `pid` runs: it exists and has not exited (a zombie its parent has not reaped
    yet has)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def ancestry(pid):
    """`pid`, its parent, its parent's parent... up to init or MAX_DEPTH links; [] if gone."""
    chain = []
    while pid and pid > 1 and len(chain) < MAX_DEPTH:
        parent = parent_of(pid)
        if parent is None:
            break
        chain.append(pid)
        pid = parent
    return chain


def environ_of(pid):
    """The environment `pid` started with, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read(MAX_ENVIRON)
    except OSError:
        return None
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def job_of(pid):
    """The Ray job id of `pid`: RAY_JOB_ID in its environment or, when it has none, in its
    nearest ancestor's that has one (a program that cleared its environment). None if none."""
    for p in ancestry(pid):
        env = environ_of(p)
        if env and env.get(JOB_VARIABLE):
            return env[JOB_VARIABLE]
    return None


def sockets_in(directories):
    """{pid: socket path} for the `PID.sock` files in `directories` whose process is alive."""
    found = {}
    for d in directories:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            stem, _, ext = name.partition(".")
            if ext == "sock" and stem.isdigit() and alive(int(stem)):
                found.setdefault(int(stem), os.path.join(d, name))
    return found


def directories_for(select):
    """Where to look for sockets: this worker's runtime directory, those the request names, and
    those of the root processes' own environments (they, and what they start, put theirs there)."""
    dirs = [runtime_dir()] + list(select.get("dirs") or [])
    for pid in (select.get("roots") or {}):
        env = environ_of(pid)
        if env is not None:
            dirs.append(runtime_dir(env))
    return list(dict.fromkeys(dirs))


def choose(select):
    """The processes `select` names on this node: ([(pid, socket, actor)], [missing roots]).

    `select` is a dict: `pids` ({pid: actor}: exactly these processes), or `roots` ({pid:
    actor}: each root and its descendants), or neither (every process with a socket here);
    `job` (a Ray job id in hex) keeps only that job's processes; `dirs` adds socket directories.
    A root with no process under it is returned in `missing`, with its actor."""
    sockets = sockets_in(directories_for(select))
    if select.get("pids") is not None:
        exact = {int(p): a for p, a in select["pids"].items()}
        chosen = [(p, sockets[p], a) for p, a in exact.items() if p in sockets]
        missing = [(p, a) for p, a in exact.items() if p not in sockets]
        return sorted(chosen), missing
    roots = {int(p): a for p, a in (select.get("roots") or {}).items()}
    job = select.get("job")
    chosen, covered = [], set()
    for pid, path in sorted(sockets.items()):
        actor = None
        if roots:
            under = [p for p in ancestry(pid) if p in roots]
            if not under:
                continue
            actor = roots[under[0]]
            covered.add(under[0])
        if job is not None and job_of(pid) != job:
            continue
        chosen.append((pid, path, actor))
    missing = [(p, a) for p, a in roots.items() if p not in covered]
    return chosen, missing


def call_one(pid, path, actor, op, args, deadline):
    """One request to one process; an entry dict, never an exception."""
    start = time.monotonic()
    entry = {"pid": pid, "actor": actor, "op": op, "ok": False, "result": None, "error": None,
             "seconds": 0.0, "exited": False}
    left = deadline - start
    try:
        if left <= 0:
            raise TimeoutError("the deadline passed before the request was sent")
        proc = Process(path, pid, timeout=left)
        if op == "sleep":
            entry["result"] = proc.sleep(args.get("tags"), policy=args.get("policy"),
                                         gate=args.get("gate"), timeout=left)
        elif op == "wake":
            entry["result"] = proc.wake(args.get("tags"), wait=args.get("wait"), timeout=left)
        elif op == "status":
            entry["result"] = proc.status(timeout=left)
        else:
            raise ValueError(f"unknown operation {op!r}")
        entry["ok"] = True
    except TimeoutError as e:
        entry["error"] = {"code": "timed_out", "message": str(e), "details": {}}
    except Exception as e:  # noqa: BLE001 - every failure is this process's entry
        entry["error"] = {"code": getattr(e, "code", type(e).__name__),
                          "message": getattr(e, "message", str(e)),
                          "details": _plain(getattr(e, "details", {}))}
    entry["seconds"] = time.monotonic() - start
    if not entry["ok"] and not alive(pid):
        entry["exited"] = True
        entry["error"]["message"] += " (the process has exited)"
    return entry


def _plain(details):
    """Details as plain data, so the entry crosses Ray's serialization as it is."""
    try:
        return json.loads(json.dumps(details, default=str))
    except (TypeError, ValueError):
        return {"text": str(details)}


def run_phase(phase, deadline):
    """Runs one phase ({op, select, args}) on every process it selects, in parallel."""
    chosen, missing = choose(phase["select"])
    entries = [None] * len(chosen)

    def work(i, pid, path, actor):
        entries[i] = call_one(pid, path, actor, phase["op"], phase.get("args") or {}, deadline)

    threads = [threading.Thread(target=work, args=(i, *c), daemon=True)
               for i, c in enumerate(chosen)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 1.0)
    for i, (pid, _, actor) in enumerate(chosen):
        if entries[i] is None:  # a socket call outlived its own timeout: report, do not wait
            entries[i] = {"pid": pid, "actor": actor, "op": phase["op"], "ok": False,
                          "result": None, "seconds": deadline - time.monotonic(),
                          "error": {"code": "timed_out", "message": "no reply in time",
                                    "details": {}}, "exited": False}
    for pid, actor in missing:
        entries.append({"pid": pid, "actor": actor, "op": phase["op"], "ok": False,
                        "result": None, "seconds": 0.0, "exited": not alive(pid),
                        "error": {"code": "no_process", "message": _missing_message(pid),
                                  "details": {}}})
    return entries


def _missing_message(pid):
    if not alive(pid):
        return f"process {pid} is not running on this node"
    return (f"no process running with gpusleep is process {pid} or under it (its socket "
            "directory: " + runtime_dir(environ_of(pid) or {}) + ")")


def run(request):
    """The node task's body. `request`: {"phases": [{op, select, args}], "timeout": seconds}.
    Phases run in order (a swap: sleep, then wake). Returns {"hostname", "seconds", "entries"}."""
    start = time.monotonic()
    deadline = start + float(request["timeout"])
    entries = []
    for phase in request["phases"]:
        entries.extend(run_phase(phase, deadline))
    return {"hostname": socket.gethostname(), "seconds": time.monotonic() - start,
            "entries": entries}
