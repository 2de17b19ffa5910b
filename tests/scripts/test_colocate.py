"""The co-location benchmark's parts that need no GPU (scripts/colocate.py and
scripts/colocate/turns.py): argument parsing, the server's shape per method, the turn-taking
methods' hand-overs and trainer check driven over stand-in processes, and the summary and plot
over a synthetic result. `plot` as the only argument: just the plot test, exit 77 without
matplotlib."""
import ast
import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCRIPTS = os.path.join(ROOT, "scripts")


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colocate = load("colocate_bench", os.path.join(SCRIPTS, "colocate.py"))
turns = load("colocate_turns", os.path.join(SCRIPTS, "colocate", "turns.py"))
GiB = 1 << 30


def synthetic_result():
    def cycles(free, serve):
        return [{"cycle": c + 1, "free_s": free + 0.01 * c, "serve_s": serve, "gpu_held_bytes": GiB,
                 "host_rss_asleep": 30 * GiB, "trainer": {"peak_bytes": 34 * GiB}}
                for c in range(3)]
    return {"gpu_total_bytes": 140 * GiB, "baseline_used_bytes": 0, "cycles": 3,
            "context_bytes": GiB // 2,
            "methods": {"gpusleep": {"info": {}, "cycles": cycles(0.5, 0.75)},
                        "relaunch": {"info": {}, "cycles": cycles(6.0, 51.0)},
                        "swap": {"info": {}, "cycles": cycles(0.4, 0.5)},
                        "sequential": {"info": {}, "cycles": cycles(0.7, 0.8)},
                        "checkpoint": {"error": "no checkpoint here"}}}


class Arguments(unittest.TestCase):
    def test_the_lead_command_parses_to_the_two_turn_taking_methods(self):
        args = colocate.parse_args(["--methods", "swap,sequential", "--cycles", "2"])
        self.assertEqual(args.methods, ["swap", "sequential"])
        self.assertEqual(args.cycles, 2)

    def test_an_unknown_method_or_no_cycle_is_a_usage_error(self):
        for argv in (["--methods", "swap,teleport"], ["--cycles", "0"]):
            with self.assertRaises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
                colocate.parse_args(argv)
            self.assertEqual(e.exception.code, 2)

    def test_turn_taking_methods_get_a_server_too_big_to_share_the_card_unless_told(self):
        bench = colocate.Bench(colocate.parse_args([]))
        self.addCleanup(bench.tmp.cleanup)
        self.assertEqual(bench.server_args("swap"), ["--layers", "36", "--kv-gib", "80.0"])
        self.assertEqual(bench.server_args("gpusleep"), ["--layers", "36", "--kv-gib", "40.0"])
        bench = colocate.Bench(colocate.parse_args(["--kv-gib", "50", "--layers", "4"]))
        self.addCleanup(bench.tmp.cleanup)
        self.assertEqual(bench.server_args("sequential"), ["--layers", "4", "--kv-gib", "50.0"])

    def test_the_trainer_rules_name_functions_the_trainer_defines(self):
        with open(os.path.join(SCRIPTS, "colocate", "trainer.py")) as f:
            defined = {n.name for n in ast.walk(ast.parse(f.read()))
                       if isinstance(n, ast.FunctionDef)}
        with open(turns.TRAINER_RULES) as f:
            rules = json.load(f)["rules"]
        self.assertEqual({r["tag"] for r in rules}, {"weights", "replay"})
        for r in rules:
            name = r["match"]["python"]["qualname"].strip("^$")
            self.assertIn(name, defined)


class Summary(unittest.TestCase):
    def test_swap_is_reported_as_a_ratio_of_sequential(self):
        s = colocate.summarize(synthetic_result())
        self.assertAlmostEqual(s["swap"]["cycle_s"], 0.41 + 0.5)
        self.assertAlmostEqual(s["ratios"]["swap_over_sequential"], (0.41 + 0.5) / (0.71 + 0.8))
        self.assertAlmostEqual(s["ratios"]["relaunch_over_gpusleep"], (6.01 + 51.0) / 1.26)
        self.assertEqual(s["checkpoint"], {"error": "no checkpoint here"})
        self.assertIn("swap's cycle is 0.60x sequential's (0.91 s against 1.51 s, same run)",
                      colocate.headline(s))

    def test_merge_writes_the_summary_and_prints_the_ratio(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "in.json")
            with open(path, "w") as f:
                json.dump(synthetic_result(), f)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                colocate.main(["--merge", path, "--out", os.path.join(d, "out")])
            with open(os.path.join(d, "out", "colocate.json")) as f:
                written = json.load(f)
        self.assertIn("swap_over_sequential", written["summary"]["ratios"])
        self.assertIn("swap's cycle is 0.60x sequential's", out.getvalue())


class Plot(unittest.TestCase):
    def test_the_plot_has_every_measured_method(self):
        if importlib.util.find_spec("matplotlib") is None:
            self.skipTest("matplotlib is not installed")
        result = synthetic_result()
        s = colocate.summarize(result)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "p.png")
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertTrue(colocate.plot(result, s, path))
            self.assertGreater(os.path.getsize(path), 1000)
        import matplotlib.pyplot as plt
        labels = [t.get_text() for t in plt.gcf().axes[0].get_xticklabels()]
        self.assertEqual(labels, ["gpusleep", "relaunch", "swap", "sequential"])


# -- the turn-taking methods over stand-in processes --

class StandIn:
    """A process under the library as Turns sees it: its Process and its Host in one."""

    def __init__(self, world, pid, size, lines=()):
        self.world, self.pid, self.size, self.lines = world, pid, size, list(lines)
        self.awake = True

    def sleep(self, tags=None, policy=None):
        self.awake = False
        self.world.log.append(("sleep", self.pid))
        return {"duration_ms": 1.0, "copied_bytes": 2}

    def wake(self, tags=None, wait=None):
        self.awake = True
        self.world.log.append(("wake", self.pid))
        return {"duration_ms": 1.0}

    def status(self):
        return {"tags": [{"tag": "weights", "bytes": 5, "mirror_pending_bytes": 0}]}

    def expect(self, prefix, timeout=0):
        return "READY weights_bytes=8 replay_bytes=16"

    def send(self, command, expect="OK", timeout=0):
        assert command == "train"
        return self.lines.pop(0)

    def close(self):
        self.awake = False
        self.world.log.append(("exit", self.pid))


class World:
    """Stand-ins for the harness, the package and the benchmark around Turns."""

    def __init__(self, trainers, trainer_size):
        self.log, self.procs, self.trainers = [], {}, list(trainers)
        self.trainer_size = trainer_size
        self.args = colocate.parse_args(["--cycles", "2"])
        self.env = {"GPUSLEEP_RUNTIME_DIR": "/nonexistent"}
        self.cli, self.baseline, self.total = "gpusleep", 0, 140 * GiB
        self.trainer_reference = None
        self.procs[1] = StandIn(self, 1, 118 * GiB)  # the server
        self.procs[1].awake = False

    # harness and colocate helpers
    def Host(self, cli, argv, env, extra=()):
        pid = 10 + len(self.procs)
        self.procs[pid] = StandIn(self, pid, self.trainer_size, self.trainers.pop(0))
        return self.procs[pid]

    def fields(self, line):
        return colocate.fields(line)

    def used_bytes(self):
        """Each awake process's size, and a context of 1 GiB for each running one."""
        return sum(p.size if p.awake else GiB for p in self.procs.values()
                   if p.awake or ("exit", p.pid) not in self.log)

    def rss_bytes(self, pid):
        return 0

    # the package
    def Process(self, path, pid):
        return self.procs[pid]

    def swap(self, sleep, wake, wait):
        (a,), (b,) = sleep, wake
        self.log.append(("swap", a.pid, b.pid))

        class R:
            slept, woken = {a.pid: a.sleep()}, {b.pid: b.wake()}
        return R()

    # the benchmark
    def start_server(self, managed):
        self.procs[1].awake = True
        return self.procs[1], {"tokens": "t", "weights_bytes": "1", "kv_bytes": "2"}, 1.0

    def first_token(self, h):
        self.log.append(("first", h.pid))
        return 0.1, 0.05

    def check_tokens(self, h, tokens):
        self.log.append(("generate", h.pid))


def done(checksum):
    return f"DONE checksum={checksum} losses=1.5,1.25 peak_bytes=7 seconds=0.5"


class TurnTaking(unittest.TestCase):
    def run_method(self, method, trained, trainer_size=34 * GiB):
        world = World([[done("a"), done("b")], trained], trainer_size)
        turns.gpusleep = world
        self.printed = io.StringIO()
        with contextlib.redirect_stdout(self.printed):
            info, cycles = turns.Turns(world, method, world).run()
        return world, info, cycles

    def test_swap_hands_the_card_over_in_one_swap_each_way_and_the_trainer_goes_on(self):
        world, info, cycles = self.run_method("swap", [done("a"), done("b")])
        reference, trainer = 11, 12
        self.assertEqual(world.log[:6], [("exit", reference), ("sleep", 1), ("sleep", trainer),
                                          ("wake", 1), ("swap", 1, trainer),
                                          ("sleep", 1)])
        one_cycle = [("swap", 1, trainer), ("sleep", 1), ("wake", trainer),
                     ("swap", trainer, 1), ("sleep", trainer), ("wake", 1),
                     ("first", 1), ("generate", 1)]
        self.assertEqual(world.log[4:], one_cycle * 2 + [("exit", trainer), ("exit", 1)])
        self.assertEqual([c["trainer"]["checksum"] for c in cycles], ["a", "b"])
        self.assertTrue(all(c["trainer_state"] == "identical" for c in cycles))
        self.assertEqual(info["trainer_replay_bytes"], 16)

    def test_sequential_sleeps_one_before_it_wakes_the_other(self):
        world, _, _ = self.run_method("sequential", [done("a"), done("b")])
        trainer = 12
        self.assertEqual(world.log[4:12], [("sleep", 1), ("wake", trainer), ("sleep", trainer),
                                           ("wake", 1), ("first", 1), ("generate", 1),
                                           ("sleep", 1), ("wake", trainer)])
        self.assertNotIn("swap", [e[0] for e in world.log])

    def test_a_trainer_that_came_back_changed_fails_the_cycle(self):
        with self.assertRaisesRegex(RuntimeError, "cycle 2: the trainer's parameters differ"):
            self.run_method("swap", [done("a"), done("x")])

    def test_the_sizes_say_whether_server_and_trainer_could_be_awake_together(self):
        _, info, _ = self.run_method("swap", [done("a"), done("b")])
        self.assertEqual(info["server_bytes"], 118 * GiB)
        self.assertEqual(info["trainer_bytes"], 34 * GiB)
        self.assertFalse(info["both_fit"])
        self.assertNotIn("would both fit", self.printed.getvalue())
        _, info, _ = self.run_method("swap", [done("a"), done("b")], trainer_size=10 * GiB)
        self.assertTrue(info["both_fit"])
        self.assertIn("would both fit", self.printed.getvalue())


if __name__ == "__main__":
    if sys.argv[1:] == ["plot"]:
        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not installed: skipped")
            sys.exit(77)
        sys.argv[1:] = ["Plot"]
    unittest.main()
