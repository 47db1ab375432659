"""aigw.httpx against a loopback fake provider, through Debian's python3-httpx
(a real client library), with the package installed as a user would
(run_tests.sh: a venv, pip install ./bindings/python).

The fake provider speaks for three keys: k-limited answers 429, k-stall
never answers, anything else serves (a chat completion, or for "stream":
true an SSE stream written in two parts 300 ms apart).  It records the path
and the credentials of every request it receives.
"""
import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import unittest
import _thread

import httpx

import aigw
import aigw.httpx

FIRST = (b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
         b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
REST = (b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
        b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: [DONE]\n\n')


class Fake(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []
    lock = threading.Lock()
    stall = threading.Event()  # set: the stalled requests give up

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        key = (self.headers.get("authorization", "").replace("Bearer ", "") or
               self.headers.get("x-api-key", ""))
        with Fake.lock:
            Fake.seen.append({"path": self.path, "key": key,
                              "authorization": self.headers.get("authorization"),
                              "x-api-key": self.headers.get("x-api-key")})
        doc = json.loads(body)
        if key == "k-stall":
            Fake.stall.wait(10)
            return
        if key == "k-limited":
            out = b'{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}'
            self.send_response(429)
            self.send_header("retry-after", "30")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if doc.get("stream") and key == "k-cut" and doc.get("model") == "m1":
            # a committed stream cut after its first token
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(FIRST), FIRST))
            self.wfile.flush()
            self.close_connection = True
            return
        if doc.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part, pause in ((FIRST, 0.3), (REST, 0)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps({"id": "chatcmpl-1", "object": "chat.completion",
                          "model": doc.get("model"),
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "Hello"}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("set-cookie", "a=1")
        self.send_header("set-cookie", "b=2")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def gateway(port, first="k-limited", second="k-ok", **gw):
    return {
        "providers": [{"providerId": "fake", "name": "Fake",
                       "baseUrl": "http://127.0.0.1:%d/v1" % port}],
        "providerKeys": [{"id": "first", "providerId": "fake", "value": first},
                         {"id": "second", "providerId": "fake", "value": second}],
        "accessKeyConfiguration": {"name": "py", "router": {"rules": [{
            "provider": "fake",
            "steps": [{"type": "user", "keys": [{"id": "first"}, {"id": "second"}]}]}]}},
        "gatewayConfig": dict({"perRequestTimeout": "5s", "totalTimeout": "10s"}, **gw),
    }


CHAT = {"model": "fake:m1", "messages": [{"role": "user", "content": "hi"}]}
URL = "http://aigw.invalid/v1/chat/completions"
PLACEHOLDER = {"authorization": "Bearer unused-placeholder"}


class HttpxTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
        cls.server.daemon_threads = True
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.port = cls.server.server_address[1]

    @classmethod
    def tearDownClass(cls):
        Fake.stall.set()
        cls.server.shutdown()

    def setUp(self):
        with Fake.lock:
            Fake.seen.clear()

    def keys_seen(self):
        with Fake.lock:
            return [s["key"] for s in Fake.seen]

    def assert_no_placeholder(self):
        with Fake.lock:
            for s in Fake.seen:
                self.assertNotIn("unused", json.dumps(s))

    def test_failover_inside_an_httpx_client(self):
        with httpx.Client(transport=aigw.httpx.Transport(gateway(self.port))) as hc:
            r = hc.post(URL, json=CHAT, headers=PLACEHOLDER)
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(r.json()["choices"][0]["message"]["content"], "Hello")
            self.assertEqual(r.headers["x-aigw-attempts"], "2")
            self.assertEqual(r.headers["x-aigw-provider"], "fake")
            self.assertEqual(r.headers["x-aigw-model"], "m1")
            self.assertTrue(r.headers["x-aigw-request-id"].startswith("rq_"))
            self.assertEqual(r.headers.get_list("set-cookie"), ["a=1", "b=2"])
            trace = r.extensions["aigw"]
            self.assertEqual([(a["event"]["providerKeyId"], a["retryAction"])
                              for a in trace["attempts"]],
                             [("first", "next_key"), ("second", "succeeded")])
            # the cooldown is remembered: the next call goes straight to second
            r = hc.post(URL, json=CHAT, headers=PLACEHOLDER)
            self.assertEqual(r.headers["x-aigw-attempts"], "1")
        self.assertEqual(self.keys_seen(), ["k-limited", "k-ok", "k-ok"])
        self.assert_no_placeholder()
        with Fake.lock:
            self.assertEqual({s["path"] for s in Fake.seen}, {"/v1/chat/completions"})

    def test_library_error_keeps_the_provider_shape(self):
        cfg = gateway(self.port, second="k-limited")
        with httpx.Client(transport=aigw.httpx.Transport(cfg)) as hc:
            r = hc.post(URL, json=CHAT, headers=PLACEHOLDER)
        self.assertEqual(r.status_code, 429)
        err = r.json()["error"]
        self.assertEqual(err["code"], "rate_limited")
        self.assertIn("message", err)
        self.assertTrue(int(r.headers["retry-after"]) > 0)
        self.assertEqual(r.headers["x-aigw-attempts"], "2")

    def test_anthropic_errors_in_anthropic_shape(self):
        cfg = gateway(self.port, second="k-limited")
        with httpx.Client(transport=aigw.httpx.Transport(cfg)) as hc:
            r = hc.post("http://aigw.invalid/v1/messages", json=CHAT,
                        headers={"x-api-key": "unused"})
        self.assertEqual(r.status_code, 429)
        doc = r.json()
        self.assertEqual(doc["type"], "error")
        self.assertEqual(doc["error"]["type"], "rate_limit_error")
        self.assertEqual(doc["error"]["code"], "rate_limited")

    def test_bad_body_is_a_400_in_the_provider_shape(self):
        with httpx.Client(transport=aigw.httpx.Transport(gateway(self.port))) as hc:
            r = hc.post(URL, content=b"not json")
            self.assertEqual(r.status_code, 400)
            self.assertIn("request body", r.json()["error"]["message"])
            self.assertEqual(hc.get(URL).status_code, 405)
        self.assertEqual(self.keys_seen(), [])

    def test_messages_and_responses_paths(self):
        with httpx.Client(transport=aigw.httpx.Transport(gateway(self.port, first="k-ok"))) as hc:
            for path in ("/v1/messages", "/v1/responses"):
                r = hc.post("http://aigw.invalid" + path, json=CHAT,
                            headers={"x-api-key": "unused-placeholder"})
                self.assertEqual(r.status_code, 200, r.text)
        with Fake.lock:
            self.assertEqual([s["path"] for s in Fake.seen], ["/v1/messages", "/v1/responses"])
        self.assert_no_placeholder()

    def test_stream_yields_bytes_as_they_arrive(self):
        body = dict(CHAT, stream=True)
        with httpx.Client(transport=aigw.httpx.Transport(gateway(self.port))) as hc:
            t0 = time.monotonic()
            with hc.stream("POST", URL, json=body, headers=PLACEHOLDER) as r:
                self.assertEqual(r.status_code, 200)
                self.assertEqual(r.headers["content-type"], "text/event-stream")
                got, times = b"", []
                for chunk in r.iter_raw():
                    got += chunk
                    times.append(time.monotonic() - t0)
            self.assertEqual(got, FIRST + REST)
            self.assertLess(times[0], 0.25)       # the first part, before the pause
            self.assertGreaterEqual(times[-1], 0.29)  # the rest, after it
            trace = r.extensions["aigw"]
            self.assertEqual([a["event"]["providerKeyId"] for a in trace["attempts"]],
                             ["first", "second"])
        self.assertEqual(self.keys_seen(), ["k-limited", "k-ok"])

    def test_eight_threads_share_one_transport(self):
        hc = httpx.Client(transport=aigw.httpx.Transport(gateway(self.port, first="k-ok")))
        errors, statuses = [], []

        def work():
            try:
                for _ in range(10):
                    statuses.append(hc.post(URL, json=CHAT).status_code)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hc.close()
        self.assertEqual(errors, [])
        self.assertEqual(statuses, [200] * 80)
        self.assertEqual(len(self.keys_seen()), 80)

    def test_async_client_does_not_block_the_loop(self):
        async def main():
            ticks = []

            async def ticker():
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.02)

            tick = asyncio.create_task(ticker())
            async with httpx.AsyncClient(
                    transport=aigw.httpx.AsyncTransport(gateway(self.port))) as hc:
                r = await hc.post(URL, json=CHAT, headers=PLACEHOLDER)
                self.assertEqual(r.status_code, 200)
                self.assertEqual(r.headers["x-aigw-attempts"], "2")
                chunks = []
                async with hc.stream("POST", URL, json=dict(CHAT, stream=True)) as s:
                    async for c in s.aiter_raw():
                        chunks.append(c)
                self.assertEqual(b"".join(chunks), FIRST + REST)
            tick.cancel()
            # the loop kept ticking through the 300 ms pause of the stream
            gaps = [b - a for a, b in zip(ticks, ticks[1:])]
            self.assertLess(max(gaps), 0.2)
            self.assertGreater(len(ticks), 10)

        asyncio.run(main())
        self.assert_no_placeholder()

    def test_async_cancel_stops_the_request(self):
        async def main():
            t = aigw.httpx.AsyncTransport(gateway(self.port, first="k-stall"))
            async with httpx.AsyncClient(transport=t) as hc:
                task = asyncio.create_task(hc.post(URL, json=CHAT))
                await asyncio.sleep(0.3)
                t0 = time.monotonic()
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                return time.monotonic() - t0

        took = asyncio.run(main())
        self.assertLess(took, 1.0)

    def test_per_call_timeout_is_an_httpx_timeout(self):
        cfg = gateway(self.port, first="k-stall")
        with httpx.Client(transport=aigw.httpx.Transport(cfg), timeout=0.4) as hc:
            t0 = time.monotonic()
            with self.assertRaises(httpx.ReadTimeout):
                hc.post(URL, json=CHAT)
            self.assertLess(time.monotonic() - t0, 1.5)


class ReadmeTest(unittest.TestCase):
    """The README's httpx snippet runs as written (gateway file and model
    swapped for the fake provider's)."""

    README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                          "README.md")

    @classmethod
    def setUpClass(cls):
        HttpxTest.setUpClass.__func__(cls)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def snippet(self, marker):
        text = open(self.README, encoding="utf-8").read()
        at = text.index(marker)
        start = text.index("```python\n", at) + len("```python\n")
        return text[start:text.index("```", start)]

    def test_httpx_snippet(self):
        import io
        import contextlib
        import tempfile
        code = self.snippet("The same with httpx alone")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(gateway(self.port, first="k-ok"), f)
        code = code.replace('"gateway.json"', repr(f.name)).replace('"gpt-4o"', '"fake:m1"')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        os.unlink(f.name)
        self.assertTrue(out.getvalue().startswith("200 1 {"), out.getvalue())


def without_waits(doc):
    """doc without its waits, "waitMs" (the document's name) or "wait_ms", at any depth:
    they count down between two readings."""
    if isinstance(doc, dict):
        return {k: without_waits(v) for k, v in doc.items() if k not in ("waitMs", "wait_ms")}
    if isinstance(doc, list):
        return [without_waits(v) for v in doc]
    return doc


class ClientTest(unittest.TestCase):
    """The Pythonic surface around the C client."""

    @classmethod
    def setUpClass(cls):
        HttpxTest.setUpClass.__func__(cls)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def test_ctrl_c_cancels_the_request(self):
        c = aigw.Client(gateway(self.port, first="k-stall"))
        threading.Timer(0.3, _thread.interrupt_main).start()
        t0 = time.monotonic()
        with self.assertRaises(KeyboardInterrupt):
            c.send(CHAT)
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertTrue(c.close(timeout=2))

    def test_timeout(self):
        with aigw.Client(gateway(self.port, first="k-stall")) as c:
            with self.assertRaises(aigw.Timeout):
                c.send(CHAT, timeout=0.3)
            h = c.health()
            self.assertEqual(h.key("first").failures, 0)  # a cancel says nothing of the key

    def test_close_waits_for_requests_in_flight(self):
        c = aigw.Client(gateway(self.port, first="k-stall"))
        out = []
        t = threading.Thread(target=self._send_to, args=(c, out))
        t.start()
        time.sleep(0.2)
        self.assertFalse(c.close(timeout=0.1))  # still in flight: not freed
        self.assertTrue(c.close())              # waits
        t.join()
        self.assertEqual(len(out), 1)
        with self.assertRaises(aigw.Closed):
            c.send(CHAT)

    @staticmethod
    def _send_to(c, out):
        try:
            c.send(CHAT, timeout=1.0)
        except aigw.Timeout as e:
            out.append(e)

    def test_stream_iterator_and_events(self):
        with aigw.Client(gateway(self.port)) as c:
            s = c.stream(dict(CHAT, stream=True))
            chunks = list(s)
            self.assertEqual(b"".join(chunks), FIRST + REST)
            self.assertEqual(s.response.outcome, "served")
            self.assertEqual(s.status, 200)
            events = list(c.stream(dict(CHAT, stream=True)).events())
            self.assertEqual([e["json"]["choices"][0]["delta"].get("content") for e in events],
                             [None, "Hel", "lo", None])
            self.assertIn("aigw.Stream", repr(s))
            self.assertIn("aigw.Client open", repr(c))

    def test_stream_restart_on_the_next_model(self):
        cfg = gateway(self.port, first="k-cut", streamRestart=True)
        with aigw.Client(cfg) as c:
            got, resets = [], []
            r = c.stream({"model": "fake:m1", "models": ["fake:m2"], "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]},
                         on_data=got.append,
                         on_reset=lambda reason: resets.append(reason) and False)
        self.assertEqual(r.outcome, "served")
        self.assertEqual(len(resets), 1)
        self.assertEqual(resets[0]["model"], "m1")
        # what came before the reset, then the whole answer of m2
        self.assertTrue(b"".join(got).startswith(FIRST))
        self.assertTrue(b"".join(got).endswith(FIRST + REST))
        self.assertEqual([(a["event"]["model"], a["completion"]) for a in r.attempts],
                         [("m1", "stream_failed"), ("m2", "succeeded")])

    def test_typed_stats_and_repr(self):
        with aigw.Client(gateway(self.port)) as c:
            r = c.send(CHAT)
            self.assertIn("aigw.Response 200 served", repr(r))
            self.assertEqual(r.headers.get_all("set-cookie"), ["a=1", "b=2"])
            h = c.health()
            self.assertEqual([(k.id, k.state) for k in h.keys],
                             [("first", "ready"), ("second", "ready")])
            self.assertEqual(h.key("second").successes, 1)
            self.assertEqual({(e.id, e.state) for e in h.endpoints},
                             {("first", "cooling"), ("second", "ready")})
            self.assertEqual(h.health_store["kind"], "local")
            # the same document, but for the waits: they count down between the two calls
            self.assertEqual(without_waits(h.json), without_waits(c.stats()))

    def test_library_not_found_names_what_it_tried(self):
        env = dict(os.environ, AIGW_LIBRARY="/nonexistent/libaigw.so", LD_LIBRARY_PATH="",
                   PKG_CONFIG_PATH="/nonexistent")
        p = subprocess.run([sys.executable, "-c", "import aigw"], env=env, capture_output=True,
                           text=True, cwd="/")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("libaigw not found; tried:", p.stderr)
        self.assertIn("$AIGW_LIBRARY: /nonexistent/libaigw.so", p.stderr)
        self.assertIn("the loader: libaigw.so.0", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
