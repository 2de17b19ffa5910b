"""What the server tests do over HTTP, with the standard library only: wait for a server's
health, send greedy completions (one at a time, or several at once to measure serving speed), and
start a server process as its users start it. Used by test_servers.py; tested without a GPU by
tests/gpu/test_serve_client.py against a small HTTP server."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PROMPTS = [" ".join(f"w{(i * 7919 + j * 104729) % 31000 + 3}" for j in range(24)) for i in range(8)]
# Longer than one block of transformers' paged cache (256 tokens): its prefix can be shared.
LONG_PROMPT = " ".join(f"w{(j * 7 + 11) % 31000 + 3}" for j in range(600))


def json_reply(handler, code, body):
    """Answers an http.server request with `body` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transformers_command():
    """`transformers` as its users run it: the console script, else its module."""
    exe = shutil.which("transformers")
    return [exe] if exe else [sys.executable, "-m", "transformers.cli.transformers"]


class ServerError(RuntimeError):
    """A request the server refused, with the status and the server's own message."""

    def __init__(self, url, code, message):
        super().__init__(f"{url}: HTTP {code}: {message}")
        self.code = code
        self.message = message


def post(url, body, timeout=600):
    """POSTs `body` as JSON and returns the reply. A refusal raises ServerError with the server's
    message: transformers serve answers 503 once its continuous-batching worker has died (its
    /health says so too), and it never recovers, so a 503 is not asked again."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read().decode(errors="replace")
        try:
            message = json.loads(raw).get("error", raw)
        except (ValueError, AttributeError):
            message = raw
        raise ServerError(url, e.code, str(message)[:2000]) from None


def wait_healthy(base, proc=None, timeout=900, path="/health"):
    """Waits until GET base+path answers 200; fails early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                if r.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base}{path} not healthy after {timeout} s")


class Completions:
    """Greedy completions from an OpenAI-style /v1/completions endpoint."""

    def __init__(self, base, model, max_tokens=32):
        self.url = base + "/v1/completions"
        self.model = model
        self.max_tokens = max_tokens

    def one(self, prompt, max_tokens=None, timeout=600):
        reply = post(self.url, {"model": self.model, "prompt": prompt, "temperature": 0.0,
                                "max_tokens": max_tokens or self.max_tokens, "seed": 0},
                     timeout=timeout)
        choice = reply["choices"][0]
        tokens = (reply.get("usage") or {}).get("completion_tokens")
        return choice["text"], tokens

    def texts(self, prompts=PROMPTS):
        """The completions of the prompts, one request at a time (the same batches every time)."""
        return [self.one(p)[0] for p in prompts]

    def rate(self, concurrency=8, rounds=3, max_tokens=64):
        """Completion tokens per second with `concurrency` requests in flight, the median of
        `rounds` rounds."""
        rates = []
        for r in range(rounds):
            results = [None] * concurrency
            errors = []

            def go(i):
                try:
                    results[i] = self.one(PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=go, args=(i,)) for i in range(concurrency)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            if errors:
                raise errors[0]
            tokens = sum((res[1] or max_tokens) for res in results)
            rates.append(tokens / elapsed)
        return sorted(rates)[len(rates) // 2]


class Background:
    """One request sent from a thread, to see whether it waits while the server sleeps."""

    def __init__(self, fn):
        self.result = None
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.error = e
        self.done.set()


def start_server(argv, env, log_path):
    """Starts a server process with its output in log_path."""
    log = open(log_path, "wb")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_server(proc, timeout=60):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path, n=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def env_for_servers(env):
    """No network: the hub is offline and no update check runs."""
    env = dict(env)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    return env


def write_json(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
