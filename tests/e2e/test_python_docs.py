"""The examples of docs/python.md, run: each block marked `<!-- tested: NAME -->` is executed as
written against programs shaped like servers (python_host.py) under the real library over the
emulated driver, with the names it leaves to the reader (server_pid, train_step, ...) supplied
here, and what it claims is checked: memory released while asleep, contents kept or dropped as
the policy says, everything awake afterwards."""
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import DEVICE_BUFFERS, EmulatedCase, Host  # noqa: E402  (puts the package on the path)
import gpusleep  # noqa: E402
from test_tagging import PYTHON_HOST, RULES  # noqa: E402

MiB = 1 << 20
DOC = os.path.join(ROOT, "docs", "python.md")


def examples():
    """{name: code} of the tested blocks of docs/python.md."""
    with open(DOC) as f:
        text = f.read()
    return dict(re.findall(r"<!-- tested: (\w+) -->\n```python\n(.*?)```", text, re.S))


# Runs inside the program started under the library: what the torch_memory_saver example leaves
# to the reader, the example itself, then one JSON line of what happened.
TMS_PRELUDE = textwrap.dedent("""
    import ctypes, json, os, subprocess
    rt = ctypes.CDLL("libcudart.so.13")
    MiB = 1 << 20

""") + DEVICE_BUFFERS + textwrap.dedent("""

    def free_bytes():
        out = subprocess.run([os.environ["SMI"]], capture_output=True, text=True).stdout
        return int(out.split()[1])

    def load_weights():
        return alloc(4 * MiB, 0x57)

    def allocate_kv_cache():
        return alloc(8 * MiB, 0x4B)

    seen = {}

    def train_step():
        seen["free_while_paused"] = free_bytes()
        scratch = alloc(2 * MiB, 0x21)      # the trainer's own GPU work
        seen["work_went_on"] = read(scratch, 2 * MiB) == bytes([0x21]) * (2 * MiB)
        rt.cudaFree(scratch)
""")
TMS_EPILOGUE = textwrap.dedent("""
    import gpusleep
    seen["free_after"] = free_bytes()
    seen["weights_kept"] = read(weights, 4 * MiB) == bytes([0x57]) * (4 * MiB)
    seen["kv_dropped"] = read(kv_cache, 8 * MiB) != bytes([0x4B]) * (8 * MiB)
    seen["tags"] = {t["tag"]: [t["state"], t["policy"]]
                    for t in gpusleep.this_process().status()["tags"] if t["regions"]}
    print(json.dumps(seen), flush=True)
""")


class PythonDocs(EmulatedCase):
    def setUp(self):
        super().setUp()
        self.saved_env = dict(os.environ)
        os.environ["GPUSLEEP_RUNTIME_DIR"] = self.run_dir
        self.rules_path = os.path.join(self.tmp.name, "rules.json")
        with open(self.rules_path, "w") as f:
            json.dump(RULES, f)

    def tearDown(self):
        os.environ.clear()
        os.environ.update(self.saved_env)
        super().tearDown()

    def server(self):
        """A server-shaped program with 4 MiB of weights and an 8 MiB KV cache, tagged by rules."""
        h = Host(self.cli_path, [sys.executable, PYTHON_HOST], self.env,
                 extra=["--rules", self.rules_path])
        self.hosts.append(h)
        h.expect("READY", timeout=60)
        h.send(f"weights w {4 * MiB}")
        h.send(f"kv k {8 * MiB}")
        for _ in range(200):
            if os.path.exists(self.socket_of(h)):
                break
            time.sleep(0.02)
        return h

    def asleep_regions(self, h):
        return {r["tag"]: r["policy"] for r in gpusleep.attach(pid=h.pid).regions()["regions"]
                if r["state"] == "asleep"}

    def test_the_vllm_example_offloads_then_drops_and_reloads_the_weights(self):
        h = self.server()
        before = self.free()
        steps = []

        def train_step():
            steps.append((self.free() - before, self.asleep_regions(h)))

        def reload_weights():
            steps.append(("weights before reload", h.ask("check w")))
            h.send("refill w")

        exec(examples()["vllm"], {"server_pid": h.pid, "train_step": train_step,
                                  "reload_weights": reload_weights})
        self.assertEqual(steps, [
            (12 * MiB, {"weights": "offload", "kv_cache": "discard"}),
            (12 * MiB, {"weights": "discard", "kv_cache": "discard"}),
            ("weights before reload", "ERR mismatch")])
        self.assertEqual(self.free(), before)
        self.assertEqual(h.ask("check w"), "OK")
        self.assertEqual(self.asleep_regions(h), {})

    def test_the_sglang_example_releases_and_resumes_every_rank(self):
        ranks = [self.server(), self.server()]
        before = self.free()
        steps = []

        def train_step():
            steps.append((self.free() - before, [self.asleep_regions(h) for h in ranks]))

        exec(examples()["sglang"], {"rank_pids": [h.pid for h in ranks],
                                    "train_step": train_step})
        asleep = {"weights": "offload", "kv_cache": "discard"}
        self.assertEqual(steps, [(24 * MiB, [asleep, asleep])])
        self.assertEqual(self.free(), before)
        for h in ranks:
            self.assertEqual(h.ask("check w"), "OK")
            self.assertEqual(self.asleep_regions(h), {})

    def test_the_torch_memory_saver_example_pauses_its_regions_while_other_work_goes_on(self):
        script = os.path.join(self.tmp.name, "tms_example.py")
        with open(script, "w") as f:
            f.write(TMS_PRELUDE + examples()["torch_memory_saver"] + TMS_EPILOGUE)
        env = {k: v for k, v in self.env.items() if not k.startswith("GPUSLEEP_TEST_")}
        env.update(PYTHONPATH=os.path.dirname(os.path.dirname(gpusleep.__file__)), SMI=self.smi)
        p = subprocess.run([self.cli_path, "run", "--", sys.executable, script], env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        seen = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(seen["free_while_paused"] - seen["free_after"], 12 * MiB)
        self.assertTrue(seen["work_went_on"])
        self.assertTrue(seen["weights_kept"])
        self.assertTrue(seen["kv_dropped"])
        self.assertEqual(seen["tags"], {"weights": ["awake", "offload"],
                                        "kv_cache": ["awake", "discard"]})

    def test_every_example_of_the_page_is_tested(self):
        self.assertEqual(sorted(examples()), ["sglang", "torch_memory_saver", "vllm"])


if __name__ == "__main__":
    unittest.main()
