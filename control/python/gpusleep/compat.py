"""The calls RL frameworks already make, on gpusleep: switching from vLLM's sleep mode, SGLang's
memory release or torch_memory_saver is a few changed lines (docs/python.md).

    compat.vllm(target).sleep(level=1) / .wake_up(tags=None)
    compat.sglang(target).release_memory_occupation(tags=None) / .resume_memory_occupation(tags=None)
    compat.torch_memory_saver.region(tag) / .pause(tag=None) / .resume(tag=None)

A target is None (this very process: its other GPU work goes on, as with the originals), a pid,
a gpusleep.Process, a gpusleep.Launched, or a list of them (tensor-parallel ranks: each request
goes to all in parallel, and the first failure, by pid, is raised once all have answered).

The program's GPU work is held while the tags woken first (the weights) sleep, as the
originals expect an idle engine; the other tags are slept without the gate, so that the
program can load weights between the two wakes of a partial wake-up (it must leave the KV cache
and graphs alone until their wake, as with the originals). In this process itself, nothing is
held."""
import contextlib
import threading

from .client import Process, attach
from .inprocess import region as _phase_region
from .inprocess import this_process
from .launch import Launched

WEIGHTS = "weights"
KV_CACHE = "kv_cache"
CUDA_GRAPH = "cuda_graph"


class _Targets:
    """One or several processes, or this process (requests without the gate)."""

    def __init__(self, target):
        self._own = target is None
        items = target if isinstance(target, (list, tuple)) else [target]
        self._procs = None if self._own else [self._resolve(t) for t in items]

    @staticmethod
    def _resolve(t):
        if isinstance(t, Process):
            return t
        if isinstance(t, Launched):
            return t.attach()
        return attach(pid=int(t))

    def processes(self):
        return [this_process()] if self._own else self._procs

    def each(self, fn):
        """Calls fn(process) on every process in parallel; returns {pid: result}."""
        procs = self.processes()
        results, errors = {}, {}

        def run(p):
            try:
                results[p.pid] = fn(p)
            except Exception as e:  # noqa: BLE001 - raised below, after every process answered
                errors[p.pid] = e

        if len(procs) == 1:
            run(procs[0])
        else:
            threads = [threading.Thread(target=run, args=(p,)) for p in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[min(errors)]
        return results

    def sleep(self, tags, policy=None, gate=True):
        gate = None if gate and not self._own else False

        def one(p):
            present = _present(p, tags)
            return p.sleep(present, policy=policy, gate=gate) if present else None

        return self.each(one)

    def wake(self, tags, wait=None):
        def one(p):
            present = _present(p, tags)
            return p.wake(present, wait=wait) if present else None

        return self.each(one)


def _present(proc, tags):
    """`tags` less those the process has never had (asking for them would be unknown_tag)."""
    known = {t["tag"] for t in proc.status()["tags"]}
    return [t for t in ([tags] if isinstance(tags, str) else tags) if t in known]


class Vllm:
    """vLLM's sleep mode (LLM.sleep / LLM.wake_up) for processes run with `--preset vllm`.
    level 1: the weights are offloaded to host memory and the KV cache is dropped; level 2: both
    are dropped (reload the weights after wake_up(tags=["weights"]), as with vLLM)."""

    def __init__(self, target=None):
        self._targets = _Targets(target)
        self.is_sleeping = False

    def sleep(self, level=1):
        if level not in (1, 2):
            raise ValueError(f"sleep level is 1 or 2, not {level!r}")
        self._targets.sleep([KV_CACHE], policy="discard", gate=False)
        self._targets.sleep([WEIGHTS], policy="offload" if level == 1 else "discard")
        self.is_sleeping = True

    def wake_up(self, tags=None):
        """Wakes `tags` (None: the weights and the KV cache)."""
        self._targets.wake([WEIGHTS, KV_CACHE] if tags is None else tags)
        if tags is None or set([tags] if isinstance(tags, str) else tags) >= {WEIGHTS, KV_CACHE}:
            self.is_sleeping = False


class Sglang:
    """SGLang's Engine.release_memory_occupation / resume_memory_occupation. tags None: the
    weights, the KV cache and the CUDA graphs. `policy` overrides the tags' policies (by default
    the KV cache is dropped and the rest kept in host memory)."""

    TAGS = (WEIGHTS, KV_CACHE, CUDA_GRAPH)

    def __init__(self, target=None):
        self._targets = _Targets(target)

    def release_memory_occupation(self, tags=None, policy=None):
        tags = list(self.TAGS) if tags is None else [tags] if isinstance(tags, str) else tags
        rest = [t for t in tags if t != WEIGHTS]
        if rest:
            self._targets.sleep(rest, policy=policy, gate=False)
        if WEIGHTS in tags:
            self._targets.sleep([WEIGHTS], policy=policy)

    def resume_memory_occupation(self, tags=None):
        self._targets.wake(list(self.TAGS) if tags is None else tags)


class TorchMemorySaver:
    """torch_memory_saver's API in this process: region(tag, enable_cpu_backup) tags the
    allocations of a block (without a backup a pause drops their contents, as there); pause(tag)
    and resume(tag) sleep and wake them (None: every tag a region named) while the process's other
    GPU work goes on."""

    def __init__(self):
        self._tags = []
        self._lock = threading.Lock()

    @property
    def enabled(self):
        try:
            this_process()
        except Exception:  # noqa: BLE001 - not running with the library
            return False
        return True

    @contextlib.contextmanager
    def region(self, tag="default", enable_cpu_backup=False):
        this_process().policy(tag, "offload" if enable_cpu_backup else "discard")
        with self._lock:
            if tag not in self._tags:
                self._tags.append(tag)
        with _phase_region(tag):
            yield

    def _chosen(self, tag):
        with self._lock:
            return list(self._tags) if tag is None else [tag]

    def pause(self, tag=None):
        tags = self._chosen(tag)
        if tags:
            this_process().sleep(tags, gate=False)

    def resume(self, tag=None):
        tags = self._chosen(tag)
        if tags:
            this_process().wake(tags)


def vllm(target=None):
    """A Vllm for `target` (see the module's documentation)."""
    return Vllm(target)


def sglang(target=None):
    """A Sglang for `target`."""
    return Sglang(target)


torch_memory_saver = TorchMemorySaver()
