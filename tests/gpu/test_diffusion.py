"""GPU test of a diffusion server (diffusion_server.py: a diffusers pipeline of PixArt-Sigma's shape
built from configs with seeded random weights, about 20 GiB, behind a small HTTP server) started
as its users start it, under `gpusleep run` with the presets Python gets, against the bare server
in the same run:
  - the images under gpusleep are the bare server's, bit for bit;
  - a full sleep (every tag offloaded) frees the memory, seen by the driver, and after wake the
    images are identical;
  - sleep + wake + refit: the weights are dropped (`policy weights discard`), the rest offloaded;
    after wake the weights' fingerprint shows them gone, the server's own load path reloads them
    in place (POST /refit), and the images are identical again;
  - kill and relaunch, the alternative: the time from kill to the relaunched server's first
    image, against sleep + wake + refit.
Prints "SUMMARY ..." and writes diffusion.json to $GPUSLEEP_RESULTS_DIR (default: the current
directory); scripts/plot_diffusion.py draws it. Exits 77 (skipped) without a GPU or without
diffusers (scripts/fetch-wheels.sh carries it). GPUSLEEP_TEST_DIFFUSION_ARGS passes sizes to
diffusion_model.py (e.g. "--layers 4 --hidden 1024" for a quick run)."""
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_case import RESULTS, ServerCase, main as server_main  # noqa: E402
from harness import nvidia_free_bytes  # noqa: E402
import serve_client as sc  # noqa: E402

MODEL_DIR = os.environ.get("GPUSLEEP_TEST_DIFFUSION_DIR",
                           os.path.join(tempfile.gettempdir(), "gpusleep-diffusion"))
MODEL_ARGS = shlex.split(os.environ.get("GPUSLEEP_TEST_DIFFUSION_ARGS", ""))
REQUEST = {"prompt": "w17 w4242 w907 w31 w12000 w5", "seed": 1234, "steps": 8, "size": 512}
GiB = 1 << 30


class DiffusionServer(ServerCase):
    def setUp(self):
        super().setUp()
        out = subprocess.run([sys.executable, os.path.join(HERE, "diffusion_model.py"), MODEL_DIR,
                              *MODEL_ARGS], env=self.env, capture_output=True, text=True,
                             timeout=1800)
        self.assertEqual(out.returncode, 0, f"building the pipeline: {out.stderr[-3000:]}")
        self.model_bytes = int(out.stdout.split()[-1])

    def serve(self, label, under=None):
        """Starts the server (under `gpusleep run` when `under` gives its arguments); returns
        (process, base URL, seconds until healthy)."""
        return self.start(f"diffusion-{label}", lambda port: [
            sys.executable, os.path.join(HERE, "diffusion_server.py"), MODEL_DIR, "--port",
            str(port)], under)

    def post(self, base, path, body=None):
        try:
            return sc.post(base + path, body or {}, timeout=1200)
        except sc.ServerError as e:
            self.fail_with_log(e)

    def image(self, base):
        out = self.post(base, "/generate", REQUEST)
        return out["sha256"], out["seconds"]

    def timed_cli(self, *args):
        t0 = time.monotonic()
        result = self.cli(*args)
        return result, time.monotonic() - t0

    def test_sleep_wake_and_refit_against_kill_and_relaunch(self):
        out = {"model_bytes": self.model_bytes, "request": REQUEST}
        # The bare server: the image every later one must equal, and its times.
        proc, base, out["bare_ready_s"] = self.serve("bare")
        self.image(base)  # warm-up
        expected, out["bare_image_s"] = self.image(base)
        self.assertEqual(self.image(base)[0], expected, "the bare server is not deterministic")
        sc.stop_server(proc)
        time.sleep(2)

        proc, base, out["ready_s"] = self.serve("gpusleep", under=["--preset", "auto"])
        self.image(base)
        image, out["image_s"] = self.image(base)
        self.assertEqual(image, expected, "the image under gpusleep differs from bare")
        status = self.cli("status", "--pid", str(proc.pid))
        tags = {t["tag"]: t["bytes"] for t in status["tags"]}
        out["tags"] = tags
        out["weights_share"] = tags.get("weights", 0) / self.model_bytes
        self.assertGreaterEqual(out["weights_share"], 0.95,
                                f"weights: {tags} of a {self.model_bytes}-byte pipeline")
        weights_digest = self.post(base, "/digest")["sha256"]

        # A full sleep: everything offloaded, the memory released, the same image after wake.
        free = nvidia_free_bytes()
        slept, out["sleep_s"] = self.timed_cli("sleep", "--pid", str(proc.pid))
        out["freed_bytes"] = nvidia_free_bytes() - free
        self.assertGreaterEqual(out["freed_bytes"], 0.95 * sum(tags.values()))
        _, out["wake_s"] = self.timed_cli("wake", "--pid", str(proc.pid))
        self.assertEqual(self.image(base)[0], expected, "the image differs after sleep and wake")

        # Sleep + wake + refit: the weights dropped, the rest offloaded; the weights come back
        # through the server's own load path.
        self.cli("policy", "--pid", str(proc.pid), "weights", "discard")
        t0 = time.monotonic()
        slept, out["refit_sleep_s"] = self.timed_cli("sleep", "--pid", str(proc.pid))
        out["refit_discarded_bytes"] = slept["discarded_bytes"]
        self.assertGreaterEqual(slept["discarded_bytes"], 0.95 * tags.get("weights", 0))
        _, out["refit_wake_s"] = self.timed_cli("wake", "--pid", str(proc.pid))
        dropped = self.post(base, "/digest")["sha256"]
        self.assertNotEqual(dropped, weights_digest, "the weights were not dropped")
        refit = self.post(base, "/refit")
        out["refit_s"], out["refit_bytes"] = refit["seconds"], refit["bytes"]
        out["sleep_wake_refit_s"] = time.monotonic() - t0
        self.assertEqual(self.post(base, "/digest")["sha256"], weights_digest)
        self.assertEqual(self.image(base)[0], expected, "the image differs after the refit")
        self.cli("policy", "--pid", str(proc.pid), "weights", "offload")

        # Kill and relaunch: from the kill to the relaunched server's first image.
        t0 = time.monotonic()
        sc.stop_server(proc)
        proc, base, ready = self.serve("relaunch", under=["--preset", "auto"])
        image, first_s = self.image(base)
        out["relaunch_s"] = time.monotonic() - t0
        out["relaunch_ready_s"], out["relaunch_first_image_s"] = ready, first_s
        self.assertEqual(image, expected, "the relaunched server's image differs")
        out["sleep_wake_refit_vs_relaunch"] = out["sleep_wake_refit_s"] / out["relaunch_s"]
        out["startup_vs_bare"] = out["ready_s"] / out["bare_ready_s"]
        out["image_time_vs_bare"] = out["image_s"] / out["bare_image_s"]

        sc.write_json(os.path.join(RESULTS, "diffusion.json"), out)
        print(f"SUMMARY diffusion: {self.model_bytes / GiB:.1f} GiB pipeline, weights tag "
              f"{out['weights_share']:.3f} of it; images identical to bare after sleep/wake, after "
              f"sleep+wake+refit and after relaunch; sleep {out['sleep_s']:.2f} s, wake "
              f"{out['wake_s']:.2f} s; sleep+wake+refit {out['sleep_wake_refit_s']:.2f} s "
              f"(refit {out['refit_s']:.2f} s) against kill+relaunch to first image "
              f"{out['relaunch_s']:.2f} s: {out['sleep_wake_refit_vs_relaunch']:.3f}x; startup "
              f"{out['startup_vs_bare']:.3f}x and image time {out['image_time_vs_bare']:.3f}x "
              f"bare", flush=True)


if __name__ == "__main__":
    server_main(("torch", "diffusers"))
