"""Tests of the Python binding: a real libaigw, a real HTTP server on loopback."""
import http.server
import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
        self.assertEqual(len(Fake.seen), 160)


if __name__ == "__main__":
    unittest.main()
