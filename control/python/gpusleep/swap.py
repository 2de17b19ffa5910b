"""Swap: one set of processes sleeps while another wakes, at once, so that the wakes take the
memory as the sleeps release it and the two copy directions overlap (docs/python.md, `gpusleep
swap` in docs/protocol.md)."""
import threading
import time

from .client import Process, _tag_list, attach
from .errors import GpusleepError

# Seconds a swap's wakes wait for the memory the sleeps release, unless told otherwise.
SWAP_WAIT = 60.0


class SwapError(GpusleepError):
    """A swap that did not complete. `.outcome` is the SwapResult: what each process did and the
    state it was left in (every process is left either fully awake or fully asleep in the tags
    it was asked about)."""

    code = "swap_failed"

    def __init__(self, message, outcome):
        super().__init__(message)
        self.outcome = outcome

    def __reduce__(self):
        return (SwapError, (self.message, self.outcome))


class SwapResult:
    """What a swap did: `.slept` and `.woken` map pid to the operation's result, `.errors` pid to
    the GpusleepError it raised, `.states` pid to "awake" or "asleep" (in the tags asked about;
    "partly asleep" only for a process whose sleep failed part way and whose wake back failed),
    `.rolled_back` whether a failed sleep made the swap put everything back, `.seconds`."""

    def __init__(self):
        self.slept, self.woken, self.errors, self.states = {}, {}, {}, {}
        self.rolled_back = False
        self.seconds = 0.0

    @property
    def ok(self):
        return not self.errors

    def as_dict(self):
        return {"ok": self.ok, "seconds": self.seconds, "rolled_back": self.rolled_back,
                "slept": self.slept, "woken": self.woken, "states": self.states,
                "errors": {pid: {"code": e.code, "message": str(e)}
                           for pid, e in self.errors.items()}}

    def __repr__(self):
        return f"SwapResult(ok={self.ok}, states={self.states}, seconds={self.seconds:.3f})"


def _resolve(targets, what):
    if targets is None:
        raise ValueError(f"swap: name the processes to {what}")
    if isinstance(targets, (int, Process)):
        targets = [targets]
    out = [t if isinstance(t, Process) else attach(pid=t) for t in targets]
    if not out:
        raise ValueError(f"swap: no process to {what}")
    return out


def _key(p):
    return p.pid if p.pid is not None else p.socket_path


def _parallel(calls):
    """Runs each (key, function) on its own thread; returns ({key: result}, {key: error})."""
    results, errors = {}, {}

    def run(key, fn):
        try:
            results[key] = fn()
        except GpusleepError as e:
            errors[key] = e

    threads = [threading.Thread(target=run, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def swap(sleep, wake, sleep_tags=None, wake_tags=None, policy=None, wait=SWAP_WAIT):
    """Sleeps the processes `sleep` (Process objects or pids; `sleep_tags`, None: every tag,
    `policy` as in Process.sleep) while the processes `wake` wake `wake_tags`, each wake waiting
    up to `wait` seconds for the memory the sleeps release. Returns a SwapResult.

    A process in both sets, or an empty set, is a ValueError before anything moves. If a wake
    fails (its memory never came), it woke nothing and stays asleep; the rest stands. If a sleep
    fails, the swap is undone: the processes that woke sleep again, then the ones that slept wake
    again, so everything is as before. Either way SwapError carries the SwapResult."""
    sleepers = _resolve(sleep, "sleep")
    wakers = _resolve(wake, "wake")
    both = {_key(p) for p in sleepers} & {_key(p) for p in wakers}
    if both:
        raise ValueError("swap: a process cannot both sleep and wake: " +
                         ", ".join(str(k) for k in sorted(both, key=str)))
    sleep_tags, wake_tags = _tag_list(sleep_tags), _tag_list(wake_tags)
    out = SwapResult()
    t0 = time.monotonic()
    calls = [(_key(p), lambda p=p: ("sleep", p.sleep(sleep_tags, policy=policy)))
             for p in sleepers]
    calls += [(_key(p), lambda p=p: ("wake", p.wake(wake_tags, wait=wait))) for p in wakers]
    results, errors = _parallel(calls)
    for key, (kind, result) in results.items():
        (out.slept if kind == "sleep" else out.woken)[key] = result
    out.errors.update(errors)
    for p in sleepers:
        out.states[_key(p)] = "asleep" if _key(p) in out.slept else "awake"
    for p in wakers:
        out.states[_key(p)] = "awake" if _key(p) in out.woken else "asleep"

    failed_sleepers = [p for p in sleepers if _key(p) in errors]
    if failed_sleepers:
        # Undo in the order that frees memory first: the woken give theirs back, then every
        # sleeper (the failed ones too: a sleep that failed part way left some regions asleep)
        # wakes into it.
        out.rolled_back = True
        woke = [p for p in wakers if _key(p) in out.woken]
        _, undo_errors = _parallel([(_key(p), lambda p=p: p.sleep(wake_tags)) for p in woke])
        for p in woke:
            out.states[_key(p)] = "awake" if _key(p) in undo_errors else "asleep"
        _, redo_errors = _parallel([(_key(p), lambda p=p: p.wake(sleep_tags, wait=wait))
                                    for p in sleepers])
        for p in sleepers:
            if _key(p) not in redo_errors:
                out.states[_key(p)] = "awake"
            elif _key(p) in errors:  # its own sleep failed part way and could not be undone
                out.states[_key(p)] = "partly asleep"
        for key, e in list(undo_errors.items()) + list(redo_errors.items()):
            out.errors.setdefault(key, e)
    out.seconds = time.monotonic() - t0
    if out.errors:
        detail = "; ".join(f"{k}: {e}" for k, e in out.errors.items())
        states = ", ".join(f"{k} {s}" for k, s in out.states.items())
        raise SwapError(f"swap failed ({detail}); now {states}"
                        + (" (undone)" if out.rolled_back else ""), out)
    return out
