"""The answer of a gpusleep.ray call: per node and per process the outcome, bytes and times,
and the whole call's time. Plain data (no Ray), so it pickles and prints anywhere."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import GpusleepError


class RayCallError(GpusleepError):
    """A job-wide call did not succeed everywhere; `result` is its Result."""

    code = "ray_call_failed"

    def __init__(self, result):
        super().__init__(result.error or "failed", {"op": result.op})
        self.result = result

    def __reduce__(self):
        return (RayCallError, (self.result,))


@dataclass
class ProcessResult:
    """One process's answer: the reply's `result` when `ok`, else `error` ({code, message,
    details}; code `no_process` for an actor with no process running with gpusleep under it)."""

    node_id: str
    pid: int
    op: str
    ok: bool
    actor: Optional[str] = None  # the actor id (hex) whose process tree holds it
    result: Optional[dict] = None
    error: Optional[dict] = None
    seconds: float = 0.0
    exited: bool = False  # the process was gone after its failure

    @property
    def bytes(self):
        return (self.result or {}).get("bytes", 0)


@dataclass
class NodeResult:
    """One node's part: its processes, or a node-level `error` ({code, message}: `node_died`,
    `timed_out`, `task_failed`) when its task gave no answer. `seconds` is the node task's own
    time (None without an answer); `note` says why a node had nothing to do."""

    node_id: str
    address: str = ""
    processes: List[ProcessResult] = field(default_factory=list)
    error: Optional[dict] = None
    seconds: Optional[float] = None
    note: str = ""

    @property
    def ok(self):
        return self.error is None and all(p.ok for p in self.processes)


@dataclass
class Result:
    """The answer of one job-wide call. `ok` when every selected process answered without error
    on every node; otherwise `error` says what failed, and `rolled_back` is the wake that undid
    an all-or-nothing sleep (or the calls that undid a swap)."""

    op: str
    nodes: Dict[str, NodeResult] = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None
    rolled_back: Optional["Result"] = None

    @property
    def ok(self):
        return self.error is None and all(n.ok for n in self.nodes.values())

    @property
    def processes(self):
        return [p for n in self.nodes.values() for p in n.processes]

    @property
    def failures(self):
        """Every failed process and node: [(node_id, pid or None, error dict)]."""
        out = [(n.node_id, None, n.error) for n in self.nodes.values() if n.error]
        return out + [(p.node_id, p.pid, p.error) for p in self.processes if not p.ok]

    @property
    def bytes(self):
        return sum(p.bytes for p in self.processes if p.ok)

    @property
    def slowest_node_seconds(self):
        times = [n.seconds for n in self.nodes.values() if n.seconds is not None]
        return max(times) if times else 0.0

    def check(self):
        """Returns self when ok, else raises RayCallError with this result."""
        if not self.ok:
            raise RayCallError(self)
        return self

    def summary(self):
        """A few lines for a log: per node, each process's outcome."""
        lines = [f"{self.op}: {'ok' if self.ok else 'FAILED'} in {self.seconds * 1000:.1f} ms, "
                 f"{len(self.processes)} processes on {len(self.nodes)} nodes, "
                 f"{self.bytes / (1 << 30):.2f} GiB"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for n in self.nodes.values():
            head = f"  node {n.node_id[:12]} {n.address}"
            if n.error:
                lines.append(f"{head}: {n.error['code']}: {n.error['message']}")
                continue
            lines.append(f"{head}: {len(n.processes)} processes"
                         + (f" in {n.seconds * 1000:.1f} ms" if n.seconds is not None else "")
                         + (f" ({n.note})" if n.note else ""))
            for p in n.processes:
                what = (f"{p.bytes / (1 << 30):.2f} GiB in {p.seconds * 1000:.1f} ms" if p.ok
                        else f"{p.error['code']}: {p.error['message']}")
                lines.append(f"    pid {p.pid} {p.op}: {what}")
        if self.rolled_back is not None:
            lines.append("  rolled back:")
            lines += ["  " + line for line in self.rolled_back.summary().splitlines()]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()
