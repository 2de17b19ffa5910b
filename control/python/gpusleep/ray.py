"""gpusleep.ray: sleep, wake and swap the GPU memory of a Ray job's processes on every node with
one call and one answer. Ray is needed only here (`import gpusleep` does not import it).

    import gpusleep.ray as gsr
    rollouts = gsr.select(actors=rollout_actors)      # or placement_group=pg, nodes=[...],
                                                      # or nothing: this job's processes
    r = gsr.sleep(rollouts, tags=["weights", "kv_cache"], deadline=60, all_or_nothing=True)
    r.check()                                         # raises RayCallError unless r.ok
    ... train ...
    gsr.wake(rollouts).check()

On each node a light task (a call to a small actor pinned there with
NodeAffinitySchedulingStrategy, num_cpus=0; or a plain pinned task: configure(via="task")) talks
to that node's control sockets (gpusleep._ray_node); the nodes work in parallel and every wait is
bounded by the deadline. docs/distributed.md says what is selected, how failures are reported
and what a call costs.
"""
import time
from dataclasses import dataclass, field
from typing import List, Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import _ray_node
from ._ray_result import NodeResult, ProcessResult, RayCallError, Result
from .errors import GpusleepError

DEFAULT_DEADLINE = 120.0  # seconds for a whole call
MARGIN = 0.25  # of the deadline left to the driver for collecting the nodes' answers (at most 2 s)

__all__ = ["DEFAULT_DEADLINE", "NodeResult", "ProcessResult", "RayCallError", "Result",
           "Selection", "configure", "select", "sleep", "status", "swap", "wake", "warm_up"]


@dataclass
class Selection:
    """Which processes a call reaches: those under `actors` (each actor's process and its
    descendants), under the actors of this job in `placement_group`, every process on `nodes`,
    or (none of these) every process of this Ray job on every node. `job=True` also keeps
    only this job's processes on `nodes`. `runtime_dirs` adds socket directories to look in."""

    actors: Optional[list] = None
    placement_group: object = None
    nodes: Optional[List[str]] = None
    job: bool = False
    runtime_dirs: List[str] = field(default_factory=list)


def select(actors=None, placement_group=None, nodes=None, job=False, runtime_dirs=()):
    """A Selection (see its doc). Give at most one of actors, placement_group and nodes."""
    if sum(x is not None for x in (actors, placement_group, nodes)) > 1:
        raise ValueError("give one of actors, placement_group and nodes")
    return Selection(list(actors) if actors is not None else None, placement_group,
                     list(nodes) if nodes is not None else None, bool(job), list(runtime_dirs))


# ---------------------------------------------------------------------------------------------
# Resolution: a Selection becomes, per node, what the node task selects there.

def _alive_nodes():
    return {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes() if n.get("Alive")}


def _actor_table():
    """{actor id hex: (state, pid, node id hex, placement group id hex)} for this job's actors,
    read from the cluster's actor table (the GCS); None where this Ray does not offer it."""
    try:
        from ray._private import state as _state
        from ray.core.generated import gcs_pb2
        accessor = _state.state._connect_and_get_accessor()
        job_id = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
        rows = accessor.get_actor_table(job_id, None)
    except Exception:  # noqa: BLE001 - a Ray without this table: ask the actors instead
        return None
    table = {}
    for raw in rows:
        a = gcs_pb2.ActorTableData.FromString(raw)
        state = gcs_pb2.ActorTableData.ActorState.Name(a.state)
        table[a.actor_id.hex()] = (state, a.pid, a.address.node_id.hex(),
                                   a.placement_group_id.hex())
    return table


def _where():
    """Runs inside an actor (through __ray_call__): its pid and node."""
    import os
    return os.getpid(), ray.get_runtime_context().get_node_id()


def _locate_actors(actors, deadline):
    """{actor id: (pid, node id)} and {actor id: error message} for actor handles. The actor
    table gives pid and node without disturbing the actor; an actor it does not list (another
    job's) is asked itself, through __ray_call__, within the deadline."""
    table = _actor_table() or {}
    found, errors, ask = {}, {}, {}
    for handle in actors:
        aid = handle._actor_id.hex()
        row = table.get(aid)
        if row is None:
            ask[aid] = handle.__ray_call__.remote(lambda self: _where())
        elif row[0] != "ALIVE":
            errors[aid] = f"actor {aid} is {row[0]}"
        else:
            found[aid] = (row[1], row[2])
    for aid, ref in ask.items():
        try:
            found[aid] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - reported as this actor's failure
            errors[aid] = f"actor {aid} did not say where it runs: {type(e).__name__}: {e}"
    return found, errors


def _placement_group_actors(pg):
    """Handles cannot be listed, so the actor table is read: {actor id: (pid, node id)}."""
    table = _actor_table()
    if table is None:
        raise GpusleepError("this Ray offers no actor table to find a placement group's actors: "
                            "select the actors themselves", code="invalid_argument")
    pg_id = pg.id.hex()
    return {aid: (row[1], row[2]) for aid, row in table.items()
            if row[0] == "ALIVE" and row[3] == pg_id}


def _plan(selection, deadline):
    """{node id: select dict for _ray_node.choose} and {node id: NodeResult already decided}."""
    alive = _alive_nodes()
    plan, decided = {}, {}
    dirs = list(selection.runtime_dirs)
    job = ray.get_runtime_context().get_job_id() if selection.job else None
    if selection.actors is not None or selection.placement_group is not None:
        if selection.actors is not None:
            where, errors = _locate_actors(selection.actors, deadline)
        else:
            where, errors = _placement_group_actors(selection.placement_group), {}
            if not where:
                raise GpusleepError(f"no live actor of this job is in placement group "
                                    f"{selection.placement_group.id.hex()}",
                                    code="invalid_argument")
        for aid, message in errors.items():
            decided.setdefault("", NodeResult("", note="actors that could not be located"))
            decided[""].processes.append(ProcessResult("", 0, "", False, aid, error={
                "code": "actor_unavailable", "message": message, "details": {}}))
        for aid, (pid, node) in where.items():
            plan.setdefault(node, {"roots": {}, "job": job, "dirs": dirs})["roots"][pid] = aid
    else:
        nodes = selection.nodes if selection.nodes is not None else list(alive)
        if selection.nodes is None:
            job = ray.get_runtime_context().get_job_id()
        for node in nodes:
            plan[node] = {"roots": None, "job": job, "dirs": dirs}
    for node in list(plan):
        if node not in alive:
            decided[node] = NodeResult(node, error={
                "code": "node_died", "message": f"node {node} is not alive", "details": {}})
            del plan[node]
    return plan, decided, alive


# ---------------------------------------------------------------------------------------------
# Fan-out: one task per node, collected with ray.wait within the deadline.

@ray.remote(num_cpus=0, max_retries=0)
def _node_task(request):
    return _ray_node.run(request)


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=16)
class _NodeAgent:
    """The node task's standing form: one per node and calling process, so each call finds a
    running worker there (a plain task's worker may have been reaped while idle, and starting
    one takes seconds). Threaded: a rollback may run while a late call still ends."""

    def run(self, request):
        return _ray_node.run(request)


_VIA = {"mode": "agent", "job": None, "agents": {}}


def configure(via="agent"):
    """How a call reaches a node: "agent" (default), a small actor pinned to each node the
    first time a call reaches it (num_cpus=0, kept for later calls, gone with this process), or
    "task", a fresh task pinned to the node per call (nothing kept between calls, but a call
    may wait for Ray to start a worker there)."""
    if via not in ("agent", "task"):
        raise ValueError(f"via is 'agent' or 'task', not {via!r}")
    _VIA["mode"] = via


def _task_options(node):
    """Ray options that run the node task on `node` (scripts/bench_ray.py replaces this to put
    many simulated nodes on a few raylets)."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def _agents():
    job = ray.get_runtime_context().get_job_id()
    if _VIA["job"] != job:  # a new connection: the old handles are gone
        _VIA["job"], _VIA["agents"] = job, {}
    return _VIA["agents"]


def _submit(node, request):
    if _VIA["mode"] == "task":
        return _node_task.options(**_task_options(node)).remote(request)
    agents = _agents()
    if node not in agents:
        agents[node] = _NodeAgent.options(**_task_options(node)).remote()
    return agents[node].run.remote(request)


def _forget_agent(node):
    agent = _agents().pop(node, None)
    if agent is not None:
        try:
            ray.kill(agent)
        except Exception:  # noqa: BLE001 - already gone with its node
            pass


def _dispatch(requests, alive, start, deadline, op):
    """Runs {node id: request} on each node at once; returns {node id: NodeResult}."""
    refs = {node: _submit(node, request) for node, request in requests.items()}
    pending = list(refs.values())
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=left)
    still = set(pending)
    ready = [ref for ref in refs.values() if ref not in still]
    try:  # one fetch for all; a failed node's ref raises, and then each is fetched alone
        answers = dict(zip(ready, ray.get(ready, timeout=5.0)))
    except Exception:  # noqa: BLE001
        answers = {}
    out = {}
    for node, ref in refs.items():
        out[node] = _collect(node, ref, ref in still, answers.get(ref), alive, start, deadline,
                             op)
    return out


# How long a call whose node agent died waits for Ray to say whether its node died with it
# (the agent's death usually reaches this process before the node's does).
NODE_DEATH_SETTLE = 3.0


def _lost_worker(error):
    return isinstance(error, (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                              ray.exceptions.NodeDiedError))


def _node_gone(node, settle_until):
    """Whether `node` is no longer alive, polling until `settle_until` while it still is."""
    while True:
        if node not in _alive_nodes():
            return True
        if time.monotonic() >= settle_until:
            return False
        time.sleep(0.1)


def _collect(node, ref, unanswered, answer, alive, start, end, op):
    budget = end - start
    result = NodeResult(node, alive.get(node, ""))
    if unanswered:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 - a running actor call cannot be cancelled: it ends
            pass           # with its own socket timeouts
        gone = node not in _alive_nodes()
        if gone:
            _forget_agent(node)
        result.error = {"code": "node_died" if gone else "timed_out", "details": {},
                        "message": (f"node {node} died" if gone else
                                    f"no answer from node {node} within the deadline "
                                    f"({budget:.1f} s)")}
        return result
    try:
        answer = answer if answer is not None else ray.get(ref, timeout=5.0)
    except Exception as e:  # noqa: BLE001 - the node's failure is its entry
        _forget_agent(node)  # dead with its node, or broken: the next call makes a new one
        settle = min(end, time.monotonic() + NODE_DEATH_SETTLE) if _lost_worker(e) else 0
        gone = _node_gone(node, settle)
        result.error = {"code": "node_died" if gone else "task_failed", "details": {},
                        "message": (f"node {node} died during the {op}: " if gone else
                                    f"the task on node {node} failed: ")
                        + f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        return result
    result.seconds = answer["seconds"]
    result.processes = [ProcessResult(node_id=node, **e) for e in answer["entries"]]
    if not result.processes:
        result.note = "no process running with gpusleep selected here"
    return result


def _run(op, phases_for, selections, deadline):
    """Plans each selection, builds one request per node, dispatches, gathers one Result."""
    start = time.monotonic()
    end = start + deadline
    plans, decided, alive = {}, {}, {}
    for key, selection in selections.items():
        plan, early, alive = _plan(selection, end)
        plans[key] = plan
        decided.update(early)
    nodes = {n for plan in plans.values() for n in plan}
    node_budget = deadline - min(2.0, deadline * MARGIN) - (time.monotonic() - start)
    requests = {n: {"phases": phases_for({k: p.get(n) for k, p in plans.items()}),
                    "timeout": max(0.0, node_budget)} for n in nodes}
    requests = {n: r for n, r in requests.items() if r["phases"]}
    result = Result(op)
    result.nodes.update(decided)
    result.nodes.update(_dispatch(requests, alive, start, end, op))
    result.seconds = time.monotonic() - start
    if not result.ok:
        result.error = _describe(result)
    return result


def _describe(result):
    failures = result.failures
    head = "; ".join(f"{'node ' + n[:12] if n else 'actor'}"
                     f"{' pid ' + str(pid) if pid else ''}: {e['code']}: {e['message']}"
                     for n, pid, e in failures[:4])
    more = f" (and {len(failures) - 4} more)" if len(failures) > 4 else ""
    return f"{result.op} failed for {len(failures)} of {len(result.processes)} processes or " \
           f"nodes: {head}{more}"


def _as_selection(selection, kwargs):
    if selection is not None and kwargs:
        raise ValueError("give a Selection or actors/placement_group/nodes, not both")
    return selection if selection is not None else select(**kwargs)


def _tags(tags):
    if tags is None:
        return None
    return [tags] if isinstance(tags, str) else list(tags)


def _phase(op, select_dict, args):
    return {"op": op, "select": select_dict, "args": {k: v for k, v in args.items()
                                                       if v is not None}}


def sleep(selection=None, *, tags=None, policy=None, gate=None, deadline=DEFAULT_DEADLINE,
          all_or_nothing=False, **targets):
    """Puts `tags` (None: every tag) of every selected process to sleep, all nodes in parallel.
    `selection`: a Selection, or the keywords of select() (actors=, placement_group=, nodes=,
    job=, runtime_dirs=). `policy` and `gate` as Process.sleep. With `all_or_nothing`, a
    failure anywhere wakes again every process that slept, and the Result says why
    (`rolled_back` holds that wake). Returns a Result; `.check()` raises if it failed."""
    sel = _as_selection(selection, targets)
    args = {"tags": _tags(tags), "policy": policy, "gate": gate}
    result = _run("sleep", lambda s: [_phase("sleep", s["A"], args)] if s["A"] else [],
                  {"A": sel}, deadline)
    if all_or_nothing and not result.ok:
        _roll_back_sleep(result, _tags(tags), deadline)
    return result


def _slept(result):
    """{node: {pid: actor}} of processes that slept, or may have: ok, partial, or no reply."""
    out = {}
    for p in result.processes:
        maybe = p.ok or (p.error or {}).get("code") == "timed_out" or \
            ((p.error or {}).get("details") or {}).get("partial")
        if maybe and not p.exited and p.node_id:
            out.setdefault(p.node_id, {})[p.pid] = p.actor
    return out


def _roll_back_sleep(result, tags, deadline):
    undo = _slept(result)
    if undo:
        result.rolled_back = _exact("wake", undo, {"tags": tags}, deadline)
    woke = len(result.rolled_back.processes) if result.rolled_back else 0
    result.error += f"; all or nothing: woke again the {woke} processes that slept"
    if result.rolled_back is not None and not result.rolled_back.ok:
        result.error += f" (that wake failed too: {result.rolled_back.error})"


def _exact(op, pids_by_node, args, deadline, then=None):
    """Runs `op` on exactly these processes ({node: {pid: actor}}), and then `then` (op,
    {node: {pid: actor}}, args) on each node after it."""
    start = time.monotonic()
    alive = _alive_nodes()
    budget = deadline - min(2.0, deadline * MARGIN)
    requests = {}
    for node, pids in pids_by_node.items():
        requests.setdefault(node, {"phases": [], "timeout": budget})
        requests[node]["phases"].append(_phase(op, {"pids": pids}, args))
    if then is not None:
        then_op, then_pids, then_args = then
        for node, pids in then_pids.items():
            requests.setdefault(node, {"phases": [], "timeout": budget})
            requests[node]["phases"].append(_phase(then_op, {"pids": pids}, then_args))
    result = Result(op if then is None else f"{op}+{then[0]}")
    dead = [n for n in requests if n not in alive]
    for node in dead:
        del requests[node]
        result.nodes[node] = NodeResult(node, error={
            "code": "node_died", "message": f"node {node} is not alive", "details": {}})
    result.nodes.update(_dispatch(requests, alive, start, start + deadline, result.op))
    result.seconds = time.monotonic() - start
    if not result.ok:
        result.error = _describe(result)
    return result


def wake(selection=None, *, tags=None, wait=None, deadline=DEFAULT_DEADLINE, **targets):
    """Wakes `tags` (None: every tag) of every selected process, all nodes in parallel. Each
    process's wake is all or nothing (docs/protocol.md); `wait` (seconds) lets a process wait
    for memory still held elsewhere. Returns a Result."""
    sel = _as_selection(selection, targets)
    args = {"tags": _tags(tags), "wait": wait}
    return _run("wake", lambda s: [_phase("wake", s["A"], args)] if s["A"] else [],
                {"A": sel}, deadline)


def status(selection=None, *, deadline=30.0, **targets):
    """Every selected process's status (docs/protocol.md), as a Result."""
    sel = _as_selection(selection, targets)
    return _run("status", lambda s: [_phase("status", s["A"], {})] if s["A"] else [],
                {"A": sel}, deadline)


def swap(to_sleep, to_wake, *, sleep_tags=None, wake_tags=None, policy=None, wait=None,
         deadline=DEFAULT_DEADLINE, all_or_nothing=False):
    """Puts `to_sleep` (a Selection) to sleep and wakes `to_wake`, with one task per node that
    first sleeps that node's share of `to_sleep`, then wakes its share of `to_wake`, so the
    memory one releases is there for the other. With `all_or_nothing`, every sleep comes first
    on every node; if one fails they are undone and nothing wakes; if a wake then fails, the
    woken processes sleep again and the slept ones wake again. Returns a Result."""
    sleep_args = {"tags": _tags(sleep_tags), "policy": policy}
    wake_args = {"tags": _tags(wake_tags), "wait": wait}
    if not all_or_nothing:
        def phases(s):
            out = [_phase("sleep", s["A"], sleep_args)] if s["A"] else []
            return out + ([_phase("wake", s["B"], wake_args)] if s["B"] else [])
        return _run("swap", phases, {"A": to_sleep, "B": to_wake}, deadline)
    start = time.monotonic()
    first = sleep(to_sleep, tags=sleep_tags, policy=policy, deadline=deadline,
                  all_or_nothing=True)
    result = Result("swap", dict(first.nodes), error=first.error,
                    rolled_back=first.rolled_back)
    if first.ok:
        second = wake(to_wake, tags=wake_tags, wait=wait, deadline=deadline)
        for node, n in second.nodes.items():
            mine = result.nodes.setdefault(node, NodeResult(node, n.address, seconds=0.0))
            mine.processes += n.processes
            mine.error = mine.error or n.error
            if n.seconds is not None:
                mine.seconds = (mine.seconds or 0.0) + n.seconds
        if not second.ok:
            woke = {}
            for p in second.processes:
                if p.ok:
                    woke.setdefault(p.node_id, {})[p.pid] = p.actor
            result.rolled_back = _exact("sleep", woke, {"tags": _tags(wake_tags)}, deadline,
                                        then=("wake", _slept(first), {"tags": _tags(
                                            sleep_tags)}))
            result.error = (f"{second.error}; all or nothing: the woken processes slept "
                            "again and the slept ones woke again")
    result.seconds = time.monotonic() - start
    return result


def warm_up(selection=None, *, deadline=60.0, **targets):
    """Starts the agent (or the task's worker) on every node the selection reaches, so the
    first real call does not pay for it (a Python worker's start: a second or more per node).
    Returns the status Result."""
    return status(selection, deadline=deadline, **targets)
