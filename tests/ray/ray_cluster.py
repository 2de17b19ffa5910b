"""A Ray cluster on one machine for the gpusleep.ray tests and example: a head and several nodes
(ray.cluster_utils.Cluster), each node with its own socket directory and its own emulated GPU,
and an actor that runs the emulated host program under `gpusleep run` (as a rollout actor runs
its server) and relays its commands. Reads GPUSLEEP_TEST_CLI, GPUSLEEP_TEST_FAKE_DIR and
GPUSLEEP_TEST_HOST."""
import os
import signal
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "control", "python"))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from harness import Host, fake_free_bytes  # noqa: E402

MiB = 1 << 20


class LocalCluster:
    """A head (no GPU, no gpusleep process) and `nodes` nodes, each with GPUSLEEP_RUNTIME_DIR
    and FAKECUDA_STATE of its own: on one machine, each node looks like a separate host."""

    def __init__(self, nodes=3, memory=256 * MiB):
        self.tmp = tempfile.TemporaryDirectory(prefix="gpusleep-ray-")
        self.memory = memory
        # Workers import gpusleep and this helper; each raylet passes its environment on.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [HERE, os.path.join(ROOT, "tests"), os.path.join(ROOT, "control", "python")] +
            [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "env_vars": self.node_env("head"),
            # A killed node is declared dead within about 2 s instead of the default 30 s.
            "_system_config": {"health_check_period_ms": 500,
                               "health_check_failure_threshold": 3}})
        self.head = self.cluster.head_node
        self.nodes = [self.add_node(f"node{i}") for i in range(nodes)]
        ray.init(address=self.cluster.address, log_to_driver=False)

    def node_env(self, name):
        return {"GPUSLEEP_RUNTIME_DIR": os.path.join(self.tmp.name, name, "run"),
                "FAKECUDA_STATE": os.path.join(self.tmp.name, name, "gpu"),
                "FAKECUDA_MEMORY": str(self.memory)}

    def add_node(self, name):
        os.makedirs(os.path.join(self.tmp.name, name), exist_ok=True)
        node = self.cluster.add_node(num_cpus=1, env_vars=self.node_env(name))
        node.test_name = name
        node.test_env = self.node_env(name)
        return node

    def kill_node(self, node):
        """A machine dying: every process under the node's raylet (its workers, the actors'
        children) is killed with the raylet. Ray's remove_node kills the raylet alone, and a
        worker may then run on for seconds and answer, which a dead machine never does."""
        raylets = node.all_processes.get("raylet", [])
        doomed = [d for info in raylets for d in descendants(info.process.pid)]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self):
        ray.shutdown()
        self.cluster.shutdown()
        self.tmp.cleanup()


def descendants(pid):
    """Every process below `pid`, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo and len(out) < 100000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def on_node(node):
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}


@ray.remote(num_cpus=0)
class HostActor:
    """A stand-in rollout worker: runs the emulated host program under `gpusleep run` as its
    child (its socket lands in this node's runtime directory) and relays commands to it."""

    def __init__(self, tag="weights", env=None):
        self.fake_dir = os.environ["GPUSLEEP_TEST_FAKE_DIR"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUSLEEP_TEST")}
        self.env.update(LD_LIBRARY_PATH=self.fake_dir, GPUSLEEP_COPY_CHUNK="2M")
        self.env.update(env or {})
        self.host = Host(os.environ["GPUSLEEP_TEST_CLI"], [os.environ["GPUSLEEP_TEST_HOST"]],
                         self.env, tag=tag)
        self.host.expect("READY", timeout=60)

    def pid(self):
        return self.host.pid

    def send(self, command, expect="OK"):
        return self.host.send(command, expect=expect, timeout=60)

    def free(self):
        """This node's emulated GPU's free bytes."""
        return fake_free_bytes(os.path.join(self.fake_dir, "fakecuda-smi"), self.env)

    def close(self):
        self.host.close(timeout=10)


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
