"""The co-location benchmark's hand-overs (scripts/colocate/turns.py, methods swap and
sequential) against real processes under the library over the emulated driver, on a device that
cannot hold both awake: each hand-over leaves the one asleep released and the one awake whole."""
import importlib.util
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import EmulatedCase  # noqa: E402  (puts the package under test on the path)

spec = importlib.util.spec_from_file_location(
    "colocate_turns", os.path.join(HERE, "..", "..", "scripts", "colocate", "turns.py"))
turns = importlib.util.module_from_spec(spec)
spec.loader.exec_module(turns)

MiB = 1 << 20


class Bench:
    """What Turns.hand_over reads of the benchmark."""

    class args:
        swap_wait = 30.0

    def __init__(self, run_dir):
        self.env = {"GPUSLEEP_RUNTIME_DIR": run_dir}


class HandOver(EmulatedCase):
    memory = 256 * MiB

    def side(self, name, seed):
        """A process holding 160 MiB (more than half the device) of `weights`, then asleep."""
        h = self.start(tag="weights")
        h.send(f"alloc {name} {160 * MiB} {seed}")
        self.cli("sleep", "--pid", str(h.pid))
        return h

    def check_turns(self, method):
        server, trainer = self.side("s", 1), self.side("t", 2)
        t = turns.Turns(Bench(self.run_dir), method, None)
        sp, tp = t.process(server), t.process(trainer)
        sp.wake()
        for _ in range(2):
            seconds, slept, woke = t.hand_over(sp, tp)
            self.assertGreater(seconds, 0)
            self.assertEqual(slept["copied_bytes"], 160 * MiB)
            self.assertEqual(trainer.send("check t"), "OK check t match")
            self.assertLess(self.free(), 160 * MiB)  # no room for the server beside it
            self.assertEqual(sp.status()["tags"][0]["state"], "asleep")
            t.hand_over(tp, sp)
            self.assertEqual(server.send("check s"), "OK check s match")
            self.assertEqual(tp.status()["tags"][0]["state"], "asleep")

    def test_swap_hands_over_both_ways_with_contents_intact(self):
        self.check_turns("swap")

    def test_sequential_hands_over_both_ways_with_contents_intact(self):
        self.check_turns("sequential")


if __name__ == "__main__":
    unittest.main()
