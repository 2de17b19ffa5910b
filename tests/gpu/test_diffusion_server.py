"""The diffusion server's HTTP side (diffusion_server.py), without a GPU: over a stand-in pipeline
it answers health, generation, refit and digest, refuses bad requests with 400 and lives on,
answers a failing pipeline with 500, and runs one request's GPU work at a time. And the plot of
its benchmark (scripts/plot_diffusion.py) over a synthetic result."""
import importlib.util
import json
import os
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusion_server as ds  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


class StandIn:
    def __init__(self):
        self.busy = 0
        self.overlapped = False
        self.fail = False
        self.weights = "w1"

    def generate(self, prompt, seed, steps, size):
        self.busy += 1
        self.overlapped = self.overlapped or self.busy > 1
        time.sleep(0.05)
        self.busy -= 1
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return f"{prompt}|{seed}|{steps}|{size}|{self.weights}"

    def refit(self):
        self.weights = "w1"
        return 12, 4096

    def digest(self):
        return self.weights


class DiffusionServer(unittest.TestCase):
    def setUp(self):
        self.model = StandIn()
        self.server = ds.Server(("127.0.0.1", 0), self.model)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def post(self, path, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_health_generate_refit_and_digest(self):
        with urllib.request.urlopen(self.base + "/health", timeout=10) as r:
            self.assertEqual(r.status, 200)
        code, out = self.post("/generate", {"prompt": "w1 w2", "seed": 7, "steps": 4,
                                            "size": 256})
        self.assertEqual(code, 200)
        self.assertEqual(out["sha256"], "w1 w2|7|4|256|w1")
        self.assertGreater(out["seconds"], 0)
        code, out = self.post("/generate", {"prompt": "w1 w2"})
        self.assertEqual(out["sha256"], "w1 w2|0|8|512|w1")  # the defaults
        self.model.weights = "dropped"
        self.assertEqual(self.post("/digest", {})[1]["sha256"], "dropped")
        code, out = self.post("/refit", {})
        self.assertEqual((code, out["tensors"], out["bytes"]), (200, 12, 4096))
        self.assertEqual(self.post("/digest", {})[1]["sha256"], "w1")

    def test_bad_requests_get_400_and_the_server_lives_on(self):
        for body in ({}, {"prompt": 3}, {"prompt": "x", "size": 100}, {"prompt": "x", "steps": 0},
                     {"prompt": "x", "seed": "many"}, b"[1, 2]", b"{not json",
                     b"x" * (ds.Handler.MAX_BODY + 1)):
            code, out = self.post("/generate", body)
            self.assertEqual(code, 400, f"{body!r:.60}: {out}")
            self.assertIn("bad request", out["error"])
        self.assertEqual(self.post("/nowhere", {})[0], 404)
        self.assertEqual(self.post("/generate", {"prompt": "x"})[0], 200)

    def test_a_failing_pipeline_is_a_500_with_its_message(self):
        self.model.fail = True
        code, out = self.post("/generate", {"prompt": "x"})
        self.assertEqual(code, 500)
        self.assertIn("illegal memory access", out["error"])
        self.model.fail = False
        self.assertEqual(self.post("/generate", {"prompt": "x"})[0], 200)

    def test_requests_run_one_at_a_time(self):
        threads = [threading.Thread(target=self.post, args=("/generate", {"prompt": f"w{i}"}))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertFalse(self.model.overlapped)


class Plot(unittest.TestCase):
    RESULT = {"model_bytes": 20 << 30, "sleep_s": 0.45, "wake_s": 0.5, "refit_sleep_s": 0.1,
              "refit_wake_s": 0.12, "refit_s": 6.5, "relaunch_ready_s": 41.0,
              "relaunch_first_image_s": 9.0, "sleep_wake_refit_vs_relaunch": 0.134}

    def load(self):
        spec = importlib.util.spec_from_file_location(
            "plot_diffusion", os.path.join(ROOT, "scripts", "plot_diffusion.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def test_each_way_back_to_serving_is_split_into_its_parts(self):
        rows = dict(self.load().bars(self.RESULT))
        self.assertEqual(rows["sleep + wake + refit"],
                         [("sleep", 0.1), ("wake", 0.12), ("refit", 6.5)])
        self.assertEqual(sum(s for _, s in rows["kill + relaunch"]), 50.0)

    def test_the_plot_is_drawn(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("no matplotlib")
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "r.json"), os.path.join(d, "r.png")
            with open(src, "w") as f:
                json.dump(self.RESULT, f)
            argv = sys.argv
            sys.argv = ["plot_diffusion.py", src, dst]
            try:
                self.load().main()
            finally:
                sys.argv = argv
            with open(dst, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
