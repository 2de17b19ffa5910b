"""End to end, tagging: a Python program shaped like an inference server (python_host.py) runs
under the real library with a rules file and allocates through the emulated runtime from
functions named like a server's loaders; the Python client (control/python) and the CLI read
the tags, call sites and groups back, retag, replace and reload the rules."""
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
# harness puts the package under test on the path.
from harness import EmulatedCase, Host, only_error, only_result  # noqa: E402
import gpusleep as gs  # noqa: E402
from test_emulated import MiB  # noqa: E402

PYTHON_HOST = os.path.join(HERE, "python_host.py")
RULES = {"version": 1, "rules": [
    {"name": "kv", "match": {"python": {"qualname": "^KVCache\\.__init__$"}}, "tag": "kv_cache"},
    {"name": "weights", "match": {"python": {"module": "^__main__$",
                                             "qualname": "^Model\\.load_weights$"}},
     "tag": "weights"},
    {"name": "shared with a peer", "match": {"python": {"qualname": "^share_with_peer$"}},
     "passthrough": True},
]}


class Tagging(EmulatedCase):
    def setUp(self):
        super().setUp()
        self.rules_path = os.path.join(self.tmp.name, "rules.json")
        self.write_rules(RULES)
        self.env["GPUSLEEP_RUNTIME_DIR"] = self.run_dir
        os.environ["GPUSLEEP_RUNTIME_DIR"] = self.run_dir  # for the client's discovery

    def write_rules(self, rules):
        with open(self.rules_path, "w") as f:
            json.dump(rules, f)

    def start_python(self, extra=(), env=None):
        h = Host(self.cli_path, [sys.executable, PYTHON_HOST], env or self.env,
                 extra=list(extra))
        self.hosts.append(h)
        h.expect("READY", timeout=60)
        return h

    def client(self, h):
        # The library sets up (and opens its socket) at the program's first allocation.
        h.send("scratch first 2097152")
        h.send("free first")
        for _ in range(100):
            if os.path.exists(self.socket_of(h)):
                break
            time.sleep(0.05)
        return gs.attach(pid=h.pid, timeout=30)

    def by_name(self, regions):
        return {r["call_site"].split(" ")[0]: r for r in regions}

    def test_rules_tag_by_python_call_site_with_and_without_the_gil(self):
        h = self.start_python(extra=["--rules", self.rules_path])
        h.send("weights w1 4194304")
        h.send("gil weights w2 4194304")   # read on the allocating thread
        h.send("kv k1 8388608")
        h.send("gil kv k2 2097152")
        h.send("scratch s1 2097152")
        self.assertEqual(h.send("shared p 2097152"), "OK ipc 0")  # legacy IPC works on it
        proc = self.client(h)
        regions = proc.regions(stacks=True)["regions"]
        got = {(r["size"], r["tag"], r["rule"]) for r in regions}
        self.assertEqual(got, {(4 * MiB, "weights", "weights"), (4 * MiB, "weights", "weights"),
                               (8 * MiB, "kv_cache", "kv"), (2 * MiB, "kv_cache", "kv"),
                               (2 * MiB, "default", None)})
        weights = [r for r in regions if r["tag"] == "weights"]
        for r in weights:
            self.assertTrue(r["call_site"].startswith("__main__:malloc ("), r["call_site"])
            self.assertTrue(any(f.startswith("__main__:Model.load_weights (")
                                and "python_host.py:" in f for f in r["python_stack"]), r)
            self.assertTrue(r["native_stack"])
        status = proc.status()
        unsleepable = {u["kind"]: u for u in status["unsleepable"]}
        self.assertEqual(unsleepable["passthrough"]["allocations"], 1)  # the shared buffer
        # Sleeping the KV cache frees exactly its bytes, seen from outside, and nothing else.
        free_before = self.free()
        slept = proc.sleep(["kv_cache"])
        self.assertEqual(slept["bytes"], 10 * MiB)
        self.assertEqual(self.free() - free_before, 10 * MiB)
        proc.wake(["kv_cache"])
        for name in ("w1", "w2", "s1", "p"):
            self.assertEqual(h.send(f"check {name}"), "OK")

    def test_regions_group_by_call_site_and_retag_by_id_range_and_call_site(self):
        h = self.start_python(extra=["--rules", self.rules_path])
        for i in range(3):
            h.send(f"scratch s{i} 2097152")
        h.send("weights w 4194304")
        proc = self.client(h)
        groups = proc.regions(group=True, depth=2)["groups"]
        scratch = [g for g in groups if "run_step" in g["call_site"]]
        self.assertEqual(len(scratch), 1)
        self.assertEqual(scratch[0]["regions"], 3)
        self.assertEqual(scratch[0]["bytes"], 6 * MiB)
        self.assertEqual(scratch[0]["tags"], {"default": 3})
        self.assertIn(" < __main__:run_step (", scratch[0]["call_site"])
        # The CLI shows the same.
        _, out, _ = self.cli("regions", "--pid", str(h.pid), "--group", "--depth", "2")
        self.assertEqual(only_result(out)["groups"], groups)

        result = proc.retag("activations", call_site="run_step")
        self.assertEqual((result["regions"], result["bytes"]), (3, 6 * MiB))
        regions = proc.regions()["regions"]
        w = next(r for r in regions if r["tag"] == "weights")
        result = proc.retag("frozen", ids=[w["id"]])
        self.assertEqual(result["regions"], 1)
        start = int(w["address"], 16)
        result = proc.retag("weights", address_range=(hex(start), hex(start + w["mapped_bytes"])))
        self.assertEqual(result["regions"], 1)
        tags = sorted(r["tag"] for r in proc.regions()["regions"])
        self.assertEqual(tags, ["activations"] * 3 + ["weights"])
        with self.assertRaises(gs.GpusleepError) as e:
            proc.retag("x", ids=[1], call_site="y")
        self.assertEqual(e.exception.code, "invalid_argument")
        with self.assertRaises(gs.GpusleepError) as e:
            proc.retag("x", call_site="(unclosed")
        self.assertIn("regular expression at offset", e.exception.message)

    def test_native_frames_match_demangled_symbols(self):
        self.write_rules({"rules": [
            {"name": "pitched", "match": {"native": "^cudaMallocPitch$"}, "tag": "images"},
            {"name": "big", "match": {"size": {"min": "8M"}}, "tag": "big"}]})
        h = self.start_python(extra=["--rules", self.rules_path])
        h.send("pitch img 1000 1000")
        h.send("scratch s 8388608")
        h.send("scratch t 2097152")
        proc = self.client(h)
        got = sorted((r["tag"], r["rule"]) for r in proc.regions()["regions"])
        self.assertEqual(got, [("big", "big"), ("default", None), ("images", "pitched")])
        (img,) = [r for r in proc.regions(stacks=True)["regions"] if r["tag"] == "images"]
        self.assertTrue(any("(cudaMallocPitch)" in f for f in img["native_stack"]), img)

    def test_a_bad_rules_file_is_reported_and_the_program_runs_untagged(self):
        with open(self.rules_path, "w") as f:
            f.write('{"rules": [{"name": "kv", "match": {"pyton": {}}, "tag": "kv_cache"}]}')
        h = self.start_python(extra=["--rules", self.rules_path])
        h.send("kv k 2097152")
        self.assertIn('rule 1 ("kv"): match: unknown field "pyton"', h.stderr())
        proc = self.client(h)
        self.assertEqual([r["tag"] for r in proc.regions()["regions"]], ["default"])
        self.assertEqual(proc.rules()["rules"], [])

    def test_rules_are_replaced_and_reloaded_over_the_socket_and_bad_ones_refused(self):
        h = self.start_python(extra=["--rules", self.rules_path])
        proc = self.client(h)
        self.assertEqual([r["name"] for r in proc.rules()["rules"]],
                         ["kv", "weights", "shared with a peer"])
        with self.assertRaises(gs.GpusleepError) as e:
            proc.rules("set", [{"tag": "x", "match": {"size": {"min": "2G", "max": "1G"}}}])
        self.assertEqual(e.exception.code, "invalid_rules")
        self.assertIn("rule 1: match.size: min is greater than max", e.exception.message)
        self.assertEqual(len(proc.rules()["rules"]), 3)  # unchanged
        proc.rules("set", [{"name": "all", "tag": "everything", "policy": "discard"}])
        h.send("kv k 2097152")
        (r,) = proc.regions()["regions"]
        self.assertEqual((r["tag"], r["policy"], r["rule"]), ("everything", "discard", "all"))
        # The file changed on disk: reload reads it again.
        self.write_rules({"rules": [{"name": "scratch", "match": {"python": {"qualname": "run_step"}},
                                     "tag": "scratch"}]})
        self.assertEqual([x["name"] for x in proc.rules("reload")["rules"]], ["scratch"])
        h.send("scratch s 2097152")
        self.assertIn("scratch", [r["tag"] for r in proc.regions()["regions"]])
        # A broken file is refused on reload; the rules stay.
        with open(self.rules_path, "w") as f:
            f.write("{not json")
        _, out, _ = self.cli("rules", "reload", "--pid", str(h.pid), ok=False)
        self.assertEqual(only_error(out)["code"], "invalid_rules")
        self.assertEqual([x["name"] for x in proc.rules()["rules"]], ["scratch"])
        self.assertIsNotNone(proc.rules("clear"))
        self.assertEqual(proc.rules()["rules"], [])

    def test_run_with_a_preset_loads_its_rules_and_an_unknown_preset_is_refused(self):
        h = self.start_python(extra=["--preset", "transformers"])
        names = [r["name"] for r in self.client(h).rules()["rules"]]
        self.assertIn("kv caches", names)
        # The CLI and the Python package find the same file: the source tree's, or the one
        # installed inside the package.
        self.assertEqual(os.path.realpath(self.client(h).rules()["file"]),
                         gs.preset_path("transformers"))
        p = subprocess.run([self.cli_path, "run", "--preset", "no-such", "--", "true"],
                           env=self.env, capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no preset 'no-such'", p.stderr)

    def test_the_client_finds_processes_and_reports_failures(self):
        h1 = self.start_python()
        h2 = self.start_python()
        self.client(h1), self.client(h2)
        pids = sorted(p.pid for p in gs.processes())
        self.assertEqual(pids, sorted([h1.pid, h2.pid]))
        with self.assertRaises(gs.ConnectionFailedError):
            gs.attach()  # two of them: which one?
        h1.send("weights w 2097152")
        h2.send("kv k 2097152")
        results, errors = gs.sleep_all()
        self.assertEqual(errors, {})
        self.assertEqual(sorted(results), pids)
        results, errors = gs.wake_all()
        self.assertEqual(errors, {})
        with self.assertRaises(gs.GpusleepError) as e:
            gs.attach(pid=h1.pid).sleep(["no_such_tag"])
        self.assertEqual(e.exception.code, "unknown_tag")
        with self.assertRaises(gs.GpusleepError) as e:
            gs.attach(pid=h1.pid).call("no_such_op")
        self.assertEqual(e.exception.code, "unknown_op")
        h2.close()
        with self.assertRaises(gs.ConnectionFailedError):
            gs.attach(pid=h2.pid).status()


if __name__ == "__main__":
    unittest.main()
