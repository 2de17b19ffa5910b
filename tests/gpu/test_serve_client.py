"""The server tests' HTTP side (serve_client.py), without a GPU: against a small OpenAI-style
HTTP server in this process whose completions are a function of the prompt, and which can be
held (as a sleeping server holds a request), the client waits for health, fails early when the
server process dies, sends greedy requests, measures a rate, and sees a held request wait."""
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_client as sc  # noqa: E402


class FakeServer(http.server.ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.released = threading.Event()
        self.released.set()
        self.bodies = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        sc.json_reply(self, code, body)

    def do_GET(self):
        self.reply(200 if self.path == "/health" else 404, {"status": "ok"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        if getattr(self.server, "dead", None):
            self.reply(503, {"error": self.server.dead})
            return
        self.server.released.wait()
        words = body["prompt"].split()[: body["max_tokens"]]
        self.reply(200, {"choices": [{"text": " ".join(reversed(words))}],
                         "usage": {"completion_tokens": len(words)}})


class ServeClient(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.client = sc.Completions(self.server.base, "/models/llama", max_tokens=5)

    def tearDown(self):
        self.server.released.set()
        self.server.shutdown()
        self.server.server_close()

    def test_requests_are_greedy_and_name_the_model(self):
        texts = self.client.texts(sc.PROMPTS[:2])
        self.assertEqual(texts[0], " ".join(reversed(sc.PROMPTS[0].split()[:5])))
        body = self.server.bodies[0]
        self.assertEqual((body["model"], body["temperature"], body["max_tokens"]),
                         ("/models/llama", 0.0, 5))

    def test_a_dead_batching_worker_is_an_error_with_the_servers_message_at_once(self):
        self.server.dead = "CB worker is dead and cannot accept request 3: CUDA error"
        t0 = time.monotonic()
        with self.assertRaises(sc.ServerError) as caught:
            self.client.one(sc.PROMPTS[0])
        self.assertLess(time.monotonic() - t0, 10, "a 503 is not asked again")
        self.assertEqual(caught.exception.code, 503)
        self.assertIn("CB worker is dead", str(caught.exception))
        self.assertEqual(len(self.server.bodies), 1)

    def test_rate_counts_completion_tokens_of_concurrent_requests(self):
        rate = self.client.rate(concurrency=4, rounds=3, max_tokens=10)
        self.assertGreater(rate, 0)
        self.assertEqual(len(self.server.bodies), 12)

    def test_a_held_request_waits_until_released_and_then_answers(self):
        self.server.released.clear()
        pending = sc.Background(lambda: self.client.one(sc.PROMPTS[1]))
        time.sleep(0.5)
        self.assertFalse(pending.done.is_set())
        self.server.released.set()
        self.assertTrue(pending.done.wait(10))
        self.assertIsNone(pending.error)
        self.assertEqual(pending.result[1], 5)

    def test_health_is_awaited_and_a_dead_server_fails_early(self):
        self.assertLessEqual(sc.wait_healthy(self.server.base, timeout=10), time.monotonic())
        proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        proc.wait()
        t0 = time.monotonic()
        with self.assertRaises(RuntimeError):
            sc.wait_healthy(f"http://127.0.0.1:{sc.free_port()}", proc, timeout=60)
        self.assertLess(time.monotonic() - t0, 5)
        with self.assertRaises(TimeoutError):
            sc.wait_healthy(f"http://127.0.0.1:{sc.free_port()}", timeout=1)

    def test_the_long_prompt_spans_more_than_one_paged_cache_block(self):
        self.assertGreater(len(sc.LONG_PROMPT.split()), 2 * 256)
        self.assertEqual(len(set(sc.PROMPTS)), len(sc.PROMPTS))
        self.assertTrue(all(int(w[1:]) < 32000 for p in sc.PROMPTS for w in p.split()))

    def test_servers_run_offline(self):
        env = sc.env_for_servers({"PATH": "/bin"})
        self.assertEqual((env["HF_HUB_OFFLINE"], env["PATH"]), ("1", "/bin"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
