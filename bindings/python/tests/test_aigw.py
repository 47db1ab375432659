"""Tests of the Python binding: a real libaigw, a real HTTP server on loopback."""
import http.server
import json
import os
import sys
import threading
import unittest

import aigw  # noqa: E402


STREAM = [b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n',
          b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
          b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']


class Fake(http.server.BaseHTTPRequestHandler):
    """Answers 429 to key 'k-primary', a chat completion to anything else."""
    seen = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        key = self.headers.get("authorization", "").replace("Bearer ", "")
        with Fake.lock:
            Fake.seen.append((self.path, key, json.loads(body)))
        if key != "k-primary" and json.loads(body).get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            for chunk in STREAM:
                self.wfile.write(chunk)
                self.wfile.flush()
            return
        if key == "k-primary":
            out, status = b'{"error":{"code":"rate_limit_exceeded"}}', 429
        else:
            out, status = json.dumps({"id": "x", "model": json.loads(body)["model"],
                                      "choices": []}).encode(), 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class BindingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        port = cls.server.server_address[1]
        cls.gateway = json.dumps({
            "providers": [{"providerId": "fake", "name": "Fake",
                           "baseUrl": "http://127.0.0.1:%d/v1" % port}],
            "providerKeys": [
                {"id": "primary", "providerId": "fake", "name": "p", "value": "k-primary"},
                {"id": "backup", "providerId": "fake", "name": "b", "value": "k-backup"}],
            "accessKeyConfiguration": {"name": "py", "router": {"rules": [
                {"provider": "fake", "steps": [{"type": "user", "keySelectionStrategy": "ordered",
                                                "keys": [{"id": "primary"}, {"id": "backup"}]}]}]}},
        })

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def setUp(self):
        Fake.seen = []

    def test_version(self):
        self.assertRegex(aigw.version(), r"^\d+\.\d+\.\d+$")

    def test_failover(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        resp = client.send({"model": "fake:m1", "models": ["fake:m2"],
                            "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.outcome, "served")
        self.assertEqual(resp.json()["model"], "m1")
        self.assertEqual([(a["event"]["providerKeyId"], a["retryAction"]) for a in resp.attempts],
                         [("primary", "next_key"), ("backup", "succeeded")])
        self.assertEqual([(p, k) for p, k, _ in Fake.seen],
                         [("/v1/chat/completions", "k-primary"), ("/v1/chat/completions", "k-backup")])
        self.assertNotIn("models", Fake.seen[1][2])
        self.assertTrue(resp.request_id.startswith("rq_"))
        client.close()

    def test_config_error_paths(self):
        bad = json.loads(self.gateway)
        bad["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"][1]["id"] = "nope"
        with self.assertRaises(aigw.ConfigError) as cm:
            aigw.Config.parse(json.dumps(bad))
        paths = [p for p, _ in cm.exception.problems]
        self.assertIn("accessKeyConfiguration.router.rules[0].steps[0].keys[1].id", paths)

    def test_request_error(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        with self.assertRaises(aigw.RequestError):
            client.send("not json")
        self.assertEqual(Fake.seen, [])

    def test_stream(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        got = []
        resp = client.stream({"model": "fake:m1", "stream": True}, got.append)
        self.assertEqual(resp.outcome, "served")
        self.assertEqual(b"".join(got), b"".join(STREAM))
        self.assertEqual([a["retryAction"] for a in resp.attempts], ["next_key", "succeeded"])
        self.assertGreaterEqual(resp.attempts[1]["timeToFirstTokenMs"], 0)

    def test_threads(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        results = []

        def work():
            for _ in range(20):
                results.append(client.send({"model": "fake:m1"}).status)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 80)
        # every request is served by the backup; the rate-limited primary is
        # tried until the client has seen its 429, then skipped while it cools
        keys = [k for _, k, _ in Fake.seen]
        self.assertEqual(keys.count("k-backup"), 80)
        self.assertGreaterEqual(keys.count("k-primary"), 1)
        self.assertLess(keys.count("k-primary"), 80)

    # ---- key health across requests ----

    def chat(self, client):
        return client.send({"model": "fake:m1", "messages": [{"role": "user", "content": "hi"}]})

    @staticmethod
    def key(stats, key_id):
        return next(k for k in stats["keys"] if k["id"] == key_id)

    @staticmethod
    def endpoint(stats, key_id, model="m1"):
        """A key's health with one model (rate limits are per model)."""
        return next(e for e in stats["endpoints"] if e["id"] == key_id and e["model"] == model)

    def test_stats_cooling_key_skipped(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        before = client.stats()
        self.assertEqual([k["id"] for k in before["keys"]], ["primary", "backup"])
        self.assertEqual(self.key(before, "primary")["state"], "ready")
        self.assertEqual(self.key(before, "primary")["requests"], 0)
        self.assertEqual(self.chat(client).status, 200)
        # a 429 naming no wait: cooling for keyCooldown (2 s, jittered down to 1 s)
        resp = self.chat(client)
        self.assertEqual(resp.status, 200)
        self.assertEqual([a["event"]["providerKeyId"] for a in resp.attempts], ["backup"])
        skipped = resp.trace["skipped"]
        self.assertEqual([(s["providerKeyId"], s["reason"]) for s in skipped],
                         [("primary", "key_cooling")])
        self.assertEqual([k for _, k, _ in Fake.seen], ["k-primary", "k-backup", "k-backup"])
        stats = client.stats()
        p, b = self.key(stats, "primary"), self.key(stats, "backup")
        self.assertEqual(p["state"], "ready")  # the key; its rate limit is for m1
        self.assertEqual((p["requests"], p["successes"], p["failures"], p["skips"]), (1, 0, 1, 1))
        pm = self.endpoint(stats, "primary")
        self.assertEqual((pm["state"], pm["reason"]), ("cooling", "rate_limit"))
        self.assertEqual((pm["requests"], pm["failures"], pm["skips"]), (1, 1, 1))
        self.assertEqual((b["state"], b["requests"], b["successes"]), ("ready", 2, 2))
        self.assertEqual(stats["retryBudget"]["requests"], 2)
        for k in stats["keys"]:  # ids, never values
            self.assertNotIn("k-primary", json.dumps(k))
        client.close()
        with self.assertRaises(aigw.Error):
            client.stats()

    def test_reset_health(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        self.chat(client)
        self.assertEqual(self.endpoint(client.stats(), "primary")["state"], "cooling")
        client.reset_health("primary")
        p = self.endpoint(client.stats(), "primary")
        self.assertEqual((p["state"], p["requests"]), ("ready", 1))  # counters kept
        self.chat(client)  # the primary is tried again (and cools again)
        self.assertEqual([k for _, k, _ in Fake.seen],
                         ["k-primary", "k-backup", "k-primary", "k-backup"])
        client.reset_health()  # every key
        self.assertEqual(self.endpoint(client.stats(), "primary")["state"], "ready")
        with self.assertRaises(aigw.Error) as cm:
            client.reset_health("no-such-key")
        self.assertEqual(cm.exception.code, aigw.AIGW_EINVAL)

    def test_set_config(self):
        client = aigw.Client(aigw.Config.parse(self.gateway))
        self.chat(client)
        swapped = json.loads(self.gateway)
        swapped["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"] = [
            {"id": "backup"}]
        client.set_config(aigw.Config.parse(json.dumps(swapped)))
        Fake.seen = []
        resp = self.chat(client)
        self.assertEqual([a["event"]["providerKeyId"] for a in resp.attempts], ["backup"])
        self.assertEqual(resp.trace["skipped"], [])
        self.assertEqual([k for _, k, _ in Fake.seen], ["k-backup"])
        # the same keys (provider, id, value): their health carried over
        stats = client.stats()
        self.assertEqual(self.endpoint(stats, "primary")["state"], "cooling")
        self.assertEqual(self.key(stats, "backup")["successes"], 2)
        # a bare configuration naming keys it does not hold: refused, unchanged
        bare = json.dumps(swapped["accessKeyConfiguration"])
        with self.assertRaises(aigw.ConfigError):
            client.set_config(aigw.Config.parse(bare))
        Fake.seen = []
        self.chat(client)
        self.assertEqual([k for _, k, _ in Fake.seen], ["k-backup"])


if __name__ == "__main__":
    unittest.main()
