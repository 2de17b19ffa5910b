"""End to end over the emulated driver: what a controller can send a real host (the library
preloaded into a real process) without hanging, stalling or killing it: pathological regular
expressions in rules and in retag, JSON nested as deep as a message allows, lenient framing,
retagging regions that do not exist."""
import json
import os
import resource
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import EmulatedCase  # noqa: E402

# Sends a backtracking matcher into exponential time on any text without a '!'.
PATHOLOGICAL = "^(.|.|.|.)*!"


class Connection:
    """One raw control connection: a line out, a line back."""

    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def ask_raw(self, data):
        self.sock.sendall(data)
        line = self.file.readline()
        if not line:
            raise AssertionError("the host closed the connection without a reply")
        return json.loads(line)

    def ask(self, request):
        return self.ask_raw((json.dumps(dict(request, v=1)) + "\n").encode())

    def close(self):
        self.file.close()
        self.sock.close()


class ControllerLimits(EmulatedCase):
    def connect(self, host, timeout=60):
        c = Connection(self.socket_of(host), timeout)
        self.addCleanup(c.close)
        return c

    def test_pathological_patterns_neither_stall_allocations_nor_delay_a_wake(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 7")
        c = self.connect(h)
        rules = [{"tag": "x", "match": {"native": PATHOLOGICAL}},
                 {"tag": "y", "match": {"phase": PATHOLOGICAL}},
                 {"tag": "z", "match": {"python": {"module": PATHOLOGICAL}}}]
        reply = c.ask({"op": "rules", "action": "set", "rules": rules})
        self.assertTrue(reply["ok"], reply)
        # Allocations are tagged through every rule (none matches) and return.
        started = time.time()
        h.send("alloc a 4194304 1", timeout=60)
        h.send("alloc b 4194304 2", timeout=60)
        self.assertLess(time.time() - started, 30)
        # A retag whose pattern would never finish under backtracking, while the memory sleeps,
        # from a controller that then leaves; a wake from another controller goes through.
        self.cli("sleep")
        retag = self.connect(h)
        retag.sock.sendall((json.dumps({"v": 1, "op": "retag", "tag": "t",
                                        "call_site": PATHOLOGICAL}) + "\n").encode())
        retag.close()
        started = time.time()
        self.cli("wake")  # exits 0
        self.assertLess(time.time() - started, 30)
        for name in ("w", "a", "b"):
            self.assertEqual(h.send(f"check {name}"), f"OK check {name} match")
        reply = c.ask({"op": "retag", "tag": "t", "call_site": PATHOLOGICAL})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["result"]["regions"], 0)
        # Syntax the matcher does not have is refused, naming what.
        reply = c.ask({"op": "rules", "action": "set",
                       "rules": [{"tag": "x", "match": {"native": "(a)\\1"}}]})
        self.assertEqual(reply["error"]["code"], "invalid_rules")
        self.assertIn("backreferences are not supported", reply["error"]["message"])

    def test_json_nested_as_deep_as_a_message_allows_does_not_kill_the_host(self):
        saved = resource.getrlimit(resource.RLIMIT_STACK)
        # The host's threads get 2 MiB stacks (the default thread stack follows this limit).
        resource.setrlimit(resource.RLIMIT_STACK, (2 << 20, saved[1]))
        try:
            h = self.start(tag="weights", env=dict(self.env, GPUSLEEP_MAX_MESSAGE="16M"))
        finally:
            resource.setrlimit(resource.RLIMIT_STACK, saved)
        h.send("alloc w 4194304 7")
        c = self.connect(h)
        depth = (16 << 20) - 200
        for body in (b"[" * depth,
                     b'{"v":1,"op":"status","x":' + b"[" * depth + b"]" * 0 + b"}",
                     b'{"v":1,"op":"rules","action":"set","rules":' + b"[" * (depth // 2) +
                     b"]" * (depth // 2) + b"}",
                     b'{"v":' + b"[" * 100000 + b"]" * 100000 + b',"op":"status"}'):
            reply = c.ask_raw(body + b"\n")
            self.assertEqual(reply["error"]["code"], "bad_request", reply)
            self.assertIn("nested deeper", reply["error"]["message"])
        self.assertTrue(c.ask({"op": "status"})["ok"])
        self.assertEqual(h.send("check w"), "OK check w match")

    def test_repeated_keys_and_nul_bytes_are_refused_and_an_empty_line_is_answered(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 7")
        c = self.connect(h)
        reply = c.ask_raw(b'{"v":1,"op":"status","op":"sleep"}\n')
        self.assertEqual(reply["error"]["code"], "bad_request")
        self.assertIn('"op" appears twice', reply["error"]["message"])
        reply = c.ask_raw(b'{"v":1,"op":"status"}\x00{"v":1,"op":"sleep"}\n')
        self.assertEqual(reply["error"]["code"], "bad_request")
        self.assertIn("NUL", reply["error"]["message"])
        reply = c.ask_raw(b"\n")
        self.assertEqual(reply["error"]["code"], "bad_request")
        self.assertIn("empty line", reply["error"]["message"])
        _, out, _ = self.cli("status")
        self.assertEqual(out["processes"][0]["result"]["tags"][0]["state"], "awake")  # nothing slept

    def test_retagging_a_region_that_does_not_exist_is_an_error_and_creates_no_tag(self):
        h = self.start(tag="weights")
        h.send("alloc w 4194304 7")
        rc, out, err = self.cli("retag", "foo", "--id", "99", ok=False)
        self.assertNotEqual(rc, 0)
        self.assertEqual(out["errors"][0]["code"], "invalid_argument", (out, err))
        self.assertIn("no region with id 99", out["errors"][0]["message"])
        _, out, _ = self.cli("status")
        tags = [t["tag"] for t in out["processes"][0]["result"]["tags"]]
        self.assertEqual(tags, ["weights"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
