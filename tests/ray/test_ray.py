"""gpusleep.ray on a real Ray cluster on one machine: a head and three nodes, each with its own
socket directory and emulated GPU, rollout-like actors running the emulated host program under
the library; job-wide sleep, wake and swap checked against each node's device memory and the
programs' data, and the failures: a node killed mid-sleep, a process that exits mid-wake, an
all-or-nothing sleep rolled back, a deadline that passes. One cluster serves every test (Ray
starts slowly); each test leaves the class's actors awake."""
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import ray  # noqa: F401
except ImportError:
    print("ray is not installed (scripts/setup-ray.sh installs it): skipped")
    sys.exit(77)

from ray_cluster import MiB, HostActor, LocalCluster, kill_pid, on_node  # noqa: E402
from ray.util.placement_group import placement_group, remove_placement_group  # noqa: E402
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: E402

import gpusleep.ray as gsr  # noqa: E402

CLUSTER = None


def setUpModule():
    global CLUSTER
    CLUSTER = LocalCluster(nodes=3)


def tearDownModule():
    if CLUSTER is not None:
        CLUSTER.shutdown()


class RayJob(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nodes = CLUSTER.nodes
        # One rollout per node, each holding 64 MiB of weights.
        cls.rollouts = [HostActor.options(**on_node(n)).remote() for n in cls.nodes]
        ray.get([a.send.remote("alloc w 67108864 1") for a in cls.rollouts])
        cls.pids = ray.get([a.pid.remote() for a in cls.rollouts])
        gsr.warm_up()

    @classmethod
    def tearDownClass(cls):
        ray.get([a.close.remote() for a in cls.rollouts])

    def tearDown(self):
        # Whatever a test did, the class's rollouts end it awake with their data.
        gsr.wake(actors=self.rollouts, deadline=60)
        for a in self.rollouts:
            self.assertEqual(ray.get(a.send.remote("check w")), "OK check w match")

    def frees(self, actors):
        return ray.get([a.free.remote() for a in actors])

    def by_pid(self, result):
        return {p.pid: p for p in result.processes}

    def test_actors_sleep_and_wake_on_every_node_with_data_kept_and_memory_released(self):
        free_awake = self.frees(self.rollouts)
        r = gsr.sleep(actors=self.rollouts, deadline=60)
        self.assertTrue(r.ok, r.summary())
        self.assertEqual(set(r.nodes), {n.node_id for n in self.nodes})
        self.assertEqual(sorted(p.pid for p in r.processes), sorted(self.pids))
        for p in r.processes:
            self.assertEqual(p.result["bytes"], 64 * MiB)
            self.assertEqual(p.actor, self.rollouts[self.pids.index(p.pid)]._actor_id.hex())
        self.assertEqual(r.bytes, 3 * 64 * MiB)
        self.assertGreaterEqual(r.seconds, r.slowest_node_seconds)
        freed = [after - before for before, after in zip(free_awake, self.frees(self.rollouts))]
        self.assertEqual(freed, [64 * MiB] * 3)  # each node's own GPU gave back its share
        for a in self.rollouts:
            self.assertEqual(ray.get(a.send.remote("touch w")), "OK touch w fault")
        r = gsr.wake(actors=self.rollouts, deadline=60)
        self.assertTrue(r.ok, r.summary())
        self.assertEqual(self.frees(self.rollouts), free_awake)
        for a in self.rollouts:
            self.assertEqual(ray.get(a.send.remote("check w")), "OK check w match")

    def test_the_whole_job_covers_every_node_and_leaves_other_jobs_processes_alone(self):
        # A process on node 0 that no Ray worker of this job started: the job does not own it.
        node = self.nodes[0]
        outsider = subprocess.Popen(
            [os.environ["GPUSLEEP_TEST_CLI"], "run", "--tag", "weights", "--",
             os.environ["GPUSLEEP_TEST_HOST"]],
            env=dict({k: v for k, v in os.environ.items() if not k.startswith("GPUSLEEP_TEST")},
                     **node.test_env, LD_LIBRARY_PATH=os.environ["GPUSLEEP_TEST_FAKE_DIR"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            self.assertEqual(outsider.stdout.readline().strip(), "READY")
            outsider.stdin.write("alloc o 4194304 9\n")
            outsider.stdin.flush()
            self.assertTrue(outsider.stdout.readline().startswith("OK alloc"))
            r = gsr.sleep(deadline=60)  # nothing selected: every process of this job
            self.assertTrue(r.ok, r.summary())
            self.assertEqual(sorted(p.pid for p in r.processes), sorted(self.pids))
            head = r.nodes[CLUSTER.head.node_id]
            self.assertEqual(head.processes, [])
            self.assertIn("no process", head.note)
            # The node's own selection takes every process there, the outsider too.
            r = gsr.status(nodes=[node.node_id])
            self.assertEqual(sorted(p.pid for p in r.processes),
                             sorted([outsider.pid, self.pids[0]]))
            states = {p.pid: p.result["tags"][0]["state"] for p in r.processes}
            self.assertEqual(states, {outsider.pid: "awake", self.pids[0]: "asleep"})
            r = gsr.wake(deadline=60)
            self.assertTrue(r.ok, r.summary())
        finally:
            outsider.kill()
            outsider.wait()

    def test_a_placement_group_selects_only_its_own_actors(self):
        pg = placement_group([{"CPU": 0.1}] * 3, strategy="STRICT_SPREAD")
        ray.get(pg.ready(), timeout=60)
        members = [HostActor.options(num_cpus=0.1, scheduling_strategy=
                                     PlacementGroupSchedulingStrategy(pg, i)).remote()
                   for i in range(3)]
        try:
            ray.get([m.send.remote(f"alloc m 8388608 {i + 5}") for i, m in enumerate(members)])
            member_pids = ray.get([m.pid.remote() for m in members])
            r = gsr.sleep(placement_group=pg, deadline=60)
            self.assertTrue(r.ok, r.summary())
            self.assertEqual(sorted(p.pid for p in r.processes), sorted(member_pids))
            self.assertEqual(len(r.nodes), 3)  # STRICT_SPREAD: one bundle per node
            r = gsr.status(actors=self.rollouts)
            self.assertTrue(all(p.result["tags"][0]["state"] == "awake" for p in r.processes))
            r = gsr.wake(placement_group=pg, deadline=60)
            self.assertTrue(r.ok, r.summary())
            for m in members:
                self.assertEqual(ray.get(m.send.remote("check m")), "OK check m match")
        finally:
            ray.get([m.close.remote() for m in members])
            for m in members:
                ray.kill(m)
            remove_placement_group(pg)

    def test_an_actor_without_a_gpusleep_process_is_an_error_entry(self):
        @ray.remote(num_cpus=0)
        class Plain:
            def ping(self):
                return os.getpid()

        plain = Plain.options(**on_node(self.nodes[1])).remote()
        plain_pid = ray.get(plain.ping.remote())
        r = gsr.sleep(actors=self.rollouts + [plain], deadline=60)
        self.assertFalse(r.ok)
        entry = self.by_pid(r)[plain_pid]
        self.assertEqual(entry.error["code"], "no_process")
        self.assertEqual(entry.node_id, self.nodes[1].node_id)
        self.assertIn(str(plain_pid), r.error)
        self.assertEqual(sum(p.ok for p in r.processes), 3)  # the others slept
        with self.assertRaises(gsr.RayCallError) as ctx:
            r.check()
        self.assertIs(ctx.exception.result, r)
        ray.kill(plain)

    def test_all_or_nothing_wakes_again_what_slept_when_one_process_fails(self):
        # A rollout whose program never had `weights` memory: its sleep of `weights` fails.
        odd = HostActor.options(**on_node(self.nodes[2])).remote(tag="kv_cache")
        try:
            ray.get(odd.send.remote("alloc kv 8388608 3"))
            odd_pid = ray.get(odd.pid.remote())
            free_awake = self.frees(self.rollouts)
            r = gsr.sleep(actors=self.rollouts + [odd], tags=["weights"], deadline=60,
                          all_or_nothing=True)
            self.assertFalse(r.ok)
            self.assertEqual(self.by_pid(r)[odd_pid].error["code"], "unknown_tag")
            self.assertIn("unknown_tag", r.error)
            self.assertIn("woke again the 3 processes", r.error)
            self.assertTrue(r.rolled_back.ok, r.rolled_back.summary())
            self.assertEqual(sorted(p.pid for p in r.rolled_back.processes), sorted(self.pids))
            self.assertEqual(self.frees(self.rollouts), free_awake)
            st = gsr.status(actors=self.rollouts)
            self.assertTrue(all(p.result["tags"][0]["state"] == "awake" for p in st.processes))
            # Without all_or_nothing the others stay asleep and only the odd one is an error.
            r = gsr.sleep(actors=self.rollouts + [odd], tags=["weights"], deadline=60)
            self.assertIsNone(r.rolled_back)
            self.assertEqual(sum(p.ok for p in r.processes), 3)
        finally:
            ray.get(odd.close.remote())
            ray.kill(odd)

    def test_swap_sleeps_one_set_and_wakes_the_other_on_each_node_in_that_order(self):
        # A trainer beside each rollout: a node's 256 MiB holds the rollout's 64 MiB or the
        # trainer's 200 MiB, not both.
        trainers = [HostActor.options(**on_node(n)).remote() for n in self.nodes]
        try:
            gsr.sleep(actors=self.rollouts, deadline=60).check()
            ray.get([t.send.remote("alloc big 209715200 7") for t in trainers])
            gsr.sleep(actors=trainers, deadline=60).check()
            gsr.wake(actors=self.rollouts, deadline=60).check()
            # The trainers' wake only fits once the rollouts' memory is released.
            r = gsr.swap(gsr.select(actors=self.rollouts), gsr.select(actors=trainers),
                         deadline=60)
            self.assertTrue(r.ok, r.summary())
            ops = sorted((p.op, p.pid) for p in r.processes)
            trainer_pids = ray.get([t.pid.remote() for t in trainers])
            self.assertEqual(ops, sorted([("sleep", p) for p in self.pids] +
                                         [("wake", p) for p in trainer_pids]))
            for t in trainers:
                self.assertEqual(ray.get(t.send.remote("check big")), "OK check big match")
            r = gsr.swap(gsr.select(actors=trainers), gsr.select(actors=self.rollouts),
                         deadline=60, all_or_nothing=True)
            self.assertTrue(r.ok, r.summary())
        finally:
            ray.get([t.close.remote() for t in trainers])
            for t in trainers:
                ray.kill(t)

    def test_a_deadline_bounds_the_call_and_names_the_late_process(self):
        # Each 2 MiB copy of this one takes 1 s: its 32 MiB sleep needs several seconds.
        slow = HostActor.options(**on_node(self.nodes[0])).remote(
            env={"FAKECUDA_COPY_DELAY_US": "1000000"})
        try:
            ray.get(slow.send.remote("alloc s 33554432 4"))
            slow_pid = ray.get(slow.pid.remote())
            t0 = time.monotonic()
            r = gsr.sleep(actors=self.rollouts + [slow], deadline=3)
            self.assertLess(time.monotonic() - t0, 4.5)
            self.assertFalse(r.ok)
            self.assertEqual(self.by_pid(r)[slow_pid].error["code"], "timed_out")
            self.assertEqual(sum(p.ok for p in r.processes), 3)
        finally:
            gsr.wake(actors=[slow], deadline=60)
            ray.get(slow.close.remote())
            ray.kill(slow)

    def test_a_process_that_exits_mid_wake_is_reported_and_the_others_wake(self):
        slow = HostActor.options(**on_node(self.nodes[1])).remote(
            env={"FAKECUDA_COPY_DELAY_US": "200000"})
        try:
            ray.get(slow.send.remote("alloc s 33554432 4"))
            slow_pid = ray.get(slow.pid.remote())
            gsr.sleep(actors=self.rollouts + [slow], deadline=60).check()
            killer = threading.Timer(0.8, kill_pid, (slow_pid,))
            killer.start()
            r = gsr.wake(actors=self.rollouts + [slow], deadline=60)
            killer.join()
            entry = self.by_pid(r)[slow_pid]
            self.assertEqual(entry.error["code"], "connection_failed")
            self.assertTrue(entry.exited)
            self.assertIn("exited", r.error)
            self.assertEqual(sorted(p.pid for p in r.processes if p.ok), sorted(self.pids))
        finally:
            ray.kill(slow)

    def test_a_node_killed_mid_sleep_is_an_entry_and_the_call_returns(self):
        doomed = CLUSTER.add_node("doomed")
        victim = HostActor.options(**on_node(doomed)).remote(
            env={"FAKECUDA_COPY_DELAY_US": "500000"})
        ray.get(victim.send.remote("alloc v 33554432 8"))
        victim_pid = ray.get(victim.pid.remote())
        gsr.warm_up(nodes=[doomed.node_id])
        killer = threading.Timer(1.0, CLUSTER.kill_node, (doomed,))
        try:
            killer.start()
            t0 = time.monotonic()
            r = gsr.sleep(deadline=30)
            took = time.monotonic() - t0
            killer.join()
            self.assertLess(took, 31)
            self.assertFalse(r.ok)
            self.assertIsNotNone(r.nodes[doomed.node_id].error, r.summary())
            self.assertEqual(r.nodes[doomed.node_id].error["code"], "node_died",
                             r.summary())
            self.assertEqual(sorted(p.pid for p in r.processes if p.ok), sorted(self.pids))
            # The dead node is left out of the next call: an entry, not a wait.
            r = gsr.wake(nodes=[n.node_id for n in self.nodes] + [doomed.node_id])
            self.assertEqual(r.nodes[doomed.node_id].error["code"], "node_died")
            self.assertEqual(sorted(p.pid for p in r.processes if p.ok), sorted(self.pids))
        finally:
            kill_pid(victim_pid)


if __name__ == "__main__":
    unittest.main()
