"""A small image-generation server over a diffusers pipeline, as a diffusion serving team would
write one, knowing nothing of gpusleep: it loads a local pipeline (diffusion_model.py) onto the
GPU at start and answers over HTTP.
  GET  /health    200 once the pipeline is loaded
  POST /generate  {"prompt", "seed", "steps", "size"} -> {"sha256": digest of the image's bytes,
                  "seconds"}: greedy in the sense of reproducible, one seeded generator per call
  POST /refit     reloads the transformer's and the text encoder's weights from the pipeline's
                  files into the parameters they already have (as an RL refit does after the
                  weights were dropped) -> {"tensors", "bytes", "seconds"}
  POST /digest    {"sha256"}: a fingerprint of the transformer's and text encoder's weights now
  python3 diffusion_server.py MODEL_DIR --port N [--host 127.0.0.1]
The HTTP side (Server) takes any object with generate/refit/digest, so that it is tested without
a GPU (test_diffusion_server.py)."""
import argparse
import glob
import hashlib
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_client as sc  # noqa: E402


class Pipeline:
    """The diffusers pipeline on the GPU, and what the server does with it."""

    def __init__(self, model_dir):
        import torch
        from diffusers import PixArtSigmaPipeline

        self.torch = torch
        self.model_dir = model_dir
        self.pipe = PixArtSigmaPipeline.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
        self.pipe.to("cuda")
        self.pipe.set_progress_bar_config(disable=True)

    def generate(self, prompt, seed, steps, size):
        torch = self.torch
        generator = torch.Generator("cuda").manual_seed(seed)
        with torch.inference_mode():
            image = self.pipe(prompt=prompt, negative_prompt="", num_inference_steps=steps,
                              guidance_scale=4.5, height=size, width=size, generator=generator,
                              output_type="pt", clean_caption=False,
                              use_resolution_binning=False, max_sequence_length=120).images
        torch.cuda.synchronize()
        return hashlib.sha256(image.float().cpu().numpy().tobytes()).hexdigest()

    def _parts(self):
        return {"transformer": self.pipe.transformer, "text_encoder": self.pipe.text_encoder}

    def refit(self):
        """Each part's safetensors files, read to host memory and copied into the parameters in
        place (Module.load_state_dict): the addresses the GPU work uses stay the same."""
        from safetensors.torch import load_file

        tensors = size = 0
        for name, module in self._parts().items():
            state = {}
            for path in sorted(glob.glob(os.path.join(self.model_dir, name, "*.safetensors"))):
                state.update(load_file(path, device="cpu"))
            result = module.load_state_dict(state, strict=False)
            if result.unexpected_keys:
                raise RuntimeError(f"{name}: unexpected weights {result.unexpected_keys[:4]}")
            own = dict(module.named_parameters())
            missing = [k for k in result.missing_keys if k in own and own[k].numel() > 0
                       and not self._tied(module, k)]
            if missing:
                raise RuntimeError(f"{name}: no weights for {missing[:4]}")
            tensors += len(state)
            size += sum(t.numel() * t.element_size() for t in state.values())
        self.torch.cuda.synchronize()
        return tensors, size

    @staticmethod
    def _tied(module, key):
        # T5 keeps its embedding once in the file and ties the encoder's to it.
        return key.endswith("embed_tokens.weight")

    def digest(self):
        """A fingerprint of every weight, computed on the GPU: per tensor, the sum of its bytes
        and of every 4093rd byte (enough to tell dropped weights from reloaded ones)."""
        torch = self.torch
        h = hashlib.sha256()
        with torch.inference_mode():
            for name, module in self._parts().items():
                for key, t in sorted(module.state_dict().items()):
                    raw = t.detach().contiguous().view(-1).view(torch.uint8)
                    sums = (int(raw.sum(dtype=torch.int64)),
                            int(raw[::4093].sum(dtype=torch.int64)))
                    h.update(f"{name}.{key}={sums}".encode())
        return h.hexdigest()


class Server(http.server.ThreadingHTTPServer):
    """One request's GPU work at a time, as a single-GPU server does."""

    daemon_threads = True

    def __init__(self, address, model):
        super().__init__(address, Handler)
        self.model = model
        self.lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    MAX_BODY = 1 << 16

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        sc.json_reply(self, code, body)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > self.MAX_BODY:
                raise ValueError("body too large")
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            self.reply(400, {"error": f"bad request: {e}"})
            return
        routes = {"/generate": self.generate, "/refit": self.refit, "/digest": self.digest}
        route = routes.get(self.path)
        if route is None:
            self.reply(404, {"error": f"no route {self.path}"})
            return
        try:
            with self.server.lock:
                t0 = time.monotonic()
                out = route(body)
                out["seconds"] = time.monotonic() - t0
            self.reply(200, out)
        except (KeyError, TypeError, ValueError) as e:
            self.reply(400, {"error": f"bad request: {e}"})
        except Exception as e:  # noqa: BLE001 - the server answers and lives on
            self.reply(500, {"error": f"{type(e).__name__}: {e}"})

    def generate(self, body):
        prompt = body["prompt"]
        seed, steps, size = int(body.get("seed", 0)), int(body.get("steps", 8)), \
            int(body.get("size", 512))
        if not isinstance(prompt, str) or not 1 <= steps <= 100 or size % 64 or \
                not 64 <= size <= 2048:
            raise ValueError("prompt is a string, steps 1-100, size a multiple of 64 to 2048")
        return {"sha256": self.server.model.generate(prompt, seed, steps, size)}

    def refit(self, body):
        tensors, size = self.server.model.refit()
        return {"tensors": tensors, "bytes": size}

    def digest(self, body):
        return {"sha256": self.server.model.digest()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    t0 = time.monotonic()
    model = Pipeline(a.model_dir)
    print(f"loaded {a.model_dir} in {time.monotonic() - t0:.1f} s", flush=True)
    server = Server((a.host, a.port), model)
    print(f"serving on {a.host}:{a.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
