#!/usr/bin/env python3
"""test_serve.py - `aigw serve`, the local gateway, from the outside.

Starts the built binary (env AIGW_BIN) on 127.0.0.1 port 0 in front of the
fake provider (tests/support/fake_provider.py) and talks HTTP to it as
clients do: Python's http.client, raw sockets for the limits, and the
`curl` command for the shell user.  Each case checks what the client got
(status, headers, body, the bytes of a stream), what the fake provider
received (per key), and what the gateway wrote (access log, /metrics).

The secrets (provider keys, access keys) are canaries: no 8-byte piece of
any of them may show in any answer, header, log line or metrics text.

Python 3 standard library only.  Exits non-zero when a test fails.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "support"))
from fake_provider import (FakeProviderCase, SSE_OVERLOADED, completion,  # noqa: E402
                           sse_answer, sse_role, sse_token)

AIGW = os.environ.get("AIGW_BIN", "")

KA = "sk-serve-alpha-0123456789abcdef"
KB = "sk-serve-bravo-0123456789abcdef"
KC = "sk-serve-charlie-0123456789abcd"
ACCESS_A = "ak-team-alpha-9f8e7d6c5b4a3210"
ACCESS_B = "ak-team-bravo-0a1b2c3d4e5f6789"
SECRETS = [KA, KB, KC, ACCESS_A, ACCESS_B]

REQUEST = b'{"model":"fake:m1","messages":[{"role":"user","content":"hi"}]}'
STREAM_REQUEST = b'{"model":"fake:m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
RATE_LIMITED = b'{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}'
LISTENING = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))$")


def limited(wait="30"):
    return {"status": 429, "headers": {"Retry-After": wait}, "body": RATE_LIMITED}


def raw_exchange(g, data):
    """Sends raw bytes on a new connection; all that comes back until the
    gateway closes it (or resets it)."""
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(data)
    raw = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        raw += chunk
    s.close()
    return raw


class Gateway:
    """One `aigw serve` process: its URL, its stderr lines as they come."""

    def __init__(self, config_path, *args):
        self.proc = subprocess.Popen([AIGW, "serve", "-c", config_path] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = []
        self.lock = threading.Lock()
        first = self.proc.stderr.readline().decode()
        self.first_line = first.rstrip("\n")
        m = re.match(r"^listening on (http://\[?[0-9a-f.:]+\]?:(\d+))$", self.first_line)
        self.url = m.group(1) if m else None
        self.port = int(m.group(2)) if m else None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line.decode())

    def stderr(self):
        with self.lock:
            return "".join(self.lines)

    def access_log(self):
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_log(self, n, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.access_log()
            if len(log) >= n:
                return log
            time.sleep(0.02)
        return self.access_log()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return rc


class ServeBase(FakeProviderCase):
    TMP_PREFIX = "aigw-gateway-"  # not "-serve-": the secrets hold "sk-serve-b..."

    @classmethod
    def setUpClass(cls):
        if not AIGW or not os.path.exists(AIGW):
            raise unittest.SkipTest("AIGW_BIN is not set to the built aigw")
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.gateways = []
        self.seen = []  # every answer's text, for the secret check

    def tearDown(self):
        for g in self.gateways:
            rc = g.stop()
            self.assertEqual(rc, 0, "aigw serve exited %r:\n%s" % (rc, g.stderr()))
            self.seen.append(g.stderr())
        self.assert_no_secret("\n".join(self.seen))

    # -- set-up ------------------------------------------------------------

    def gateway_config(self, access_keys=None, configurations=None, **gw):
        cfg = {
            "providers": [{"providerId": "fake", "name": "Fake", "baseUrl": self.fake.base_url,
                           "models": [{"modelId": "m1"}, {"modelId": "m2"}]}],
            "providerKeys": [{"id": "a", "providerId": "fake", "value": KA},
                             {"id": "b", "providerId": "fake", "value": KB},
                             {"id": "c", "providerId": "fake", "value": KC}],
            "accessKeyConfiguration": {
                "name": "dev",
                "router": {"rules": [{"provider": "fake", "steps": [
                    {"type": "user", "keys": [{"id": "a"}, {"id": "b"}]}]}]}},
            "gatewayConfig": dict({"perRequestTimeout": "5s", "totalTimeout": "10s",
                                   "retryAfterMax": "1s", "sameBackendRetries": 0}, **gw),
        }
        if configurations is not None:
            cfg["accessKeyConfigurations"] = configurations
        if access_keys is not None:
            cfg["accessKeys"] = access_keys
        return cfg

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
        return path

    def start(self, cfg=None, *args, name="gateway.json"):
        path = self.write(name, json.dumps(cfg if cfg is not None else self.gateway_config()))
        g = Gateway(path, "--listen", "127.0.0.1:0", *args)
        self.assertIsNotNone(g.url, "no listening line; stderr:\n%s%s" % (g.first_line,
                                                                          g.stderr()))
        self.gateways.append(g)
        return g

    # -- HTTP --------------------------------------------------------------

    def request(self, g, method, path, body=None, headers=None, timeout=15):
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        self.seen.append(repr(hdrs) + data.decode("utf-8", "replace"))
        return resp.status, hdrs, data

    def post(self, g, body=REQUEST, path="/v1/chat/completions", key=None, headers=None):
        h = dict(headers or {})
        if key:
            h["Authorization"] = "Bearer " + key
        return self.request(g, "POST", path, body, h)

    def assert_no_secret(self, text):
        from secret_scan import assert_no_secret  # tests/support/secret_scan.py
        assert_no_secret(self, text, SECRETS, "an answer, header, log line or metrics text")

    def assert_error(self, data, code, type_="aigw_error"):
        doc = json.loads(data)
        self.assertEqual(doc["error"]["code"], code, data)
        self.assertEqual(doc["error"]["type"], type_, data)
        self.assertTrue(doc["error"]["message"])
        return doc


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

class CommandLine(ServeBase):
    def run_aigw(self, *args, timeout=20):
        return subprocess.run([AIGW] + list(args), capture_output=True, timeout=timeout)

    def test_help(self):
        for args in (["serve", "--help"], ["serve", "-h"], ["help", "serve"]):
            p = self.run_aigw(*args)
            self.assertEqual(p.returncode, 0, args)
            self.assertIn(b"aigw serve -c FILE [--listen HOST:PORT]", p.stdout)
        p = self.run_aigw("--help")
        self.assertIn(b"aigw serve", p.stdout)

    def test_usage_errors_exit_2(self):
        path = self.write("ok.json", json.dumps(self.gateway_config()))
        cases = [
            (["serve"], b"-c FILE is required"),
            (["serve", "-c"], b"needs a FILE"),
            (["serve", "-c", path, "--listen", "nope"], b"--listen takes HOST:PORT"),
            (["serve", "-c", path, "--listen", "127.0.0.1:99999"], b"--listen takes HOST:PORT"),
            (["serve", "-c", path, "--max-body", "0"], b"--max-body takes"),
            (["serve", "-c", path, "--max-body", "18014398509481985k"], b"--max-body takes"),
            (["serve", "-c", path, "--max-header", "17592186044417m"], b"--max-header takes"),
            (["serve", "-c", path, "--max-concurrent", "x"], b"--max-concurrent takes"),
            (["serve", "-c", path, "--bogus"], b"unknown argument '--bogus'"),
            (["serve", "-c", "-"], b"must be a file"),
        ]
        for args, text in cases:
            p = self.run_aigw(*args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(text, p.stderr, args)

    def test_bad_gateway_file_names_the_path(self):
        cfg = self.gateway_config(access_keys=[{"id": "k", "value": ACCESS_A,
                                                "configuration": "nope"}])
        path = self.write("bad.json", json.dumps(cfg))
        p = self.run_aigw("serve", "-c", path, "--listen", "127.0.0.1:0")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"accessKeys[0].configuration: no access key configuration with this name",
                      p.stderr)
        self.assert_no_secret(p.stderr.decode())
        p = self.run_aigw("serve", "-c", os.path.join(self.tmp, "missing.json"))
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"missing.json", p.stderr)

    def test_beyond_loopback_needs_access_keys(self):
        path = self.write("open.json", json.dumps(self.gateway_config()))
        p = self.run_aigw("serve", "-c", path, "--listen", "0.0.0.0:0")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"refusing to listen on 0.0.0.0:0 without access keys", p.stderr)
        # with access keys it starts (and says where)
        path = self.write("keyed.json", json.dumps(self.gateway_config(
            access_keys=[{"id": "k", "value": ACCESS_A}])))
        g = Gateway(path, "--listen", "0.0.0.0:0")
        self.gateways.append(g)
        self.assertRegex(g.first_line, r"^listening on http://0\.0\.0\.0:\d+$")
        status, _, _ = self.request(g, "GET", "/healthz")
        self.assertEqual(status, 200)

    def test_listen_ipv6_loopback(self):
        try:
            socket.socket(socket.AF_INET6).bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback here")
        path = self.write("v6.json", json.dumps(self.gateway_config()))
        g = Gateway(path, "--listen", "[::1]:0")
        self.gateways.append(g)
        m = re.match(r"^listening on http://\[::1\]:(\d+)$", g.first_line)
        self.assertIsNotNone(m, g.first_line)
        conn = http.client.HTTPConnection("::1", int(m.group(1)), timeout=10)
        conn.request("POST", "/v1/chat/completions", body=REQUEST)
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (200, completion()))
        conn.close()

    def test_listen_busy_port_fails(self):
        g = self.start()
        path = self.write("again.json", json.dumps(self.gateway_config()))
        p = self.run_aigw("serve", "-c", path, "--listen", "127.0.0.1:%d" % g.port)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"cannot listen on 127.0.0.1:%d" % g.port, p.stderr)


# ---------------------------------------------------------------------------
# what it serves
# ---------------------------------------------------------------------------

class Serving(ServeBase):
    def test_listening_line_and_healthz(self):
        g = self.start()
        self.assertRegex(g.first_line, LISTENING.pattern)
        status, h, data = self.request(g, "GET", "/healthz")
        self.assertEqual((status, json.loads(data)), (200, {"status": "ok"}))
        status, h, data = self.request(g, "HEAD", "/healthz")
        self.assertEqual(status, 200)

    def test_connections_are_kept_alive(self):
        g = self.start()
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        conn.connect()
        sock = conn.sock
        for method, path, body, status in (("GET", "/healthz", None, 200),
                                           ("POST", "/v1/chat/completions", REQUEST, 200),
                                           ("GET", "/v1/models", None, 200),
                                           ("GET", "/nope", None, 404),
                                           ("DELETE", "/v1/models", None, 405),
                                           ("POST", "/v1/chat/completions", b"{", 400)):
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, status, (method, path))
            self.assertIsNone(resp.getheader("connection"), (method, path))
            self.assertIs(conn.sock, sock, (method, path))
        conn.close()
        self.assertEqual(self.fake.count(KA), 1)

    def test_access_log_to_a_file(self):
        path = os.path.join(self.tmp, "access.log")
        if os.path.exists(path):
            os.unlink(path)
        g = self.start(None, "--access-log", path)
        self.fake.script(KA, limited())
        self.assertEqual(self.post(g)[0], 200)
        self.assertEqual(self.request(g, "GET", "/healthz")[0], 200)
        self.assertEqual(self.request(g, "HEAD", "/healthz")[0], 200)
        deadline = time.monotonic() + 5
        lines = []
        while len(lines) < 3 and time.monotonic() < deadline:
            with open(path) as f:
                lines = [json.loads(line) for line in f.read().splitlines()]
            time.sleep(0.02)
        # a line is written after its answer is sent: the client's next request
        # can be logged first, so the lines are compared as a set
        self.assertEqual(sorted((e["method"], e["route"], e["status"]) for e in lines),
                         sorted([("POST", "/v1/chat/completions", 200), ("GET", "/healthz", 200),
                                 ("HEAD", "/healthz", 200)]))
        posts = [e for e in lines if e["method"] == "POST"]
        self.assertEqual(len(posts[0]["attempts"]), 2)
        self.assertEqual(g.access_log(), [])  # nothing of it on stderr
        with open(path) as f:
            self.seen.append(f.read())

    def test_access_log_lines_are_json_whatever_the_names(self):
        cfg = self.gateway_config()
        odd = 'k "q" \\ \u00e9\t\u2603'
        cfg["providerKeys"][0]["id"] = odd
        cfg["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"] = [{"id": odd}]
        g = self.start(cfg)
        self.assertEqual(self.post(g)[0], 200)
        log = g.wait_log(1)
        self.assertEqual(log[0]["attempts"][0]["key"], odd)

    def test_failover_whole(self):
        g = self.start()
        self.fake.script(KA, limited())
        status, h, data = self.post(g)
        self.assertEqual(status, 200)
        self.assertEqual(data, completion())
        self.assertRegex(h["x-aigw-request-id"], r"^rq_[0-9A-Za-z]{26}$")
        self.assertEqual((h["x-aigw-attempts"], h["x-aigw-provider"], h["x-aigw-model"]),
                         ("2", "fake", "m1"))
        self.assertEqual((self.fake.count(KA), self.fake.count(KB)), (1, 1))
        # the next caller: the limited key is cooling, skipped without a call
        status, h, data = self.post(g)
        self.assertEqual((status, h["x-aigw-attempts"]), (200, "1"))
        self.assertEqual((self.fake.count(KA), self.fake.count(KB)), (1, 2))
        log = g.wait_log(2)
        self.assertEqual([e["status"] for e in log], [200, 200])
        self.assertEqual([[(a["key"], a["status"], a["verdict"]) for a in e["attempts"]]
                          for e in log],
                         [[("a", 429, "next_key"), ("b", 200, "succeeded")],
                          [("b", 200, "succeeded")]])
        self.assertEqual(log[0]["outcome"], "served")
        self.assertFalse(log[0]["stream"])

    def test_model_fallback(self):
        g = self.start()
        body = b'{"model":"fake:m1","models":["fake:m2"],"messages":[]}'
        # m1 fails on both keys (server errors); m2, the fallback, on key a
        self.fake.script(KA, {"status": 500, "body": b'{"error":{"message":"boom"}}'},
                         {"body": completion("m2")})
        self.fake.script(KB, {"status": 500, "body": b'{"error":{"message":"boom"}}'})
        status, h, data = self.post(g, body)
        self.assertEqual(status, 200, data)
        self.assertEqual(h["x-aigw-model"], "m2")
        ups = [(k, json.loads(b)["model"]) for k, _, b in self.fake.requests]
        self.assertEqual(ups, [(KA, "m1"), (KB, "m1"), (KA, "m2")])

    def test_all_limited_is_429_with_retry_after_and_no_new_calls(self):
        g = self.start()
        self.fake.script(KA, limited("7"))
        self.fake.script(KB, limited("7"))
        status, h, data = self.post(g)
        self.assertEqual(status, 429)
        self.assertIn("retry-after", h)
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        self.assert_error(data, "rate_limited")
        self.assertEqual(h["x-aigw-attempts"], "2")
        self.assertEqual((self.fake.count(KA), self.fake.count(KB)), (1, 1))
        # an SDK retrying: answered from what the gateway remembers
        for _ in range(3):
            status, h, data = self.post(g)
            self.assertEqual(status, 429)
            self.assertIn("retry-after", h)
        self.assertEqual((self.fake.count(KA), self.fake.count(KB)), (1, 1))

    def test_anthropic_shape_on_messages(self):
        g = self.start()
        self.fake.script(KA, limited("7"))
        self.fake.script(KB, limited("7"))
        status, h, data = self.post(g, path="/v1/messages")
        self.assertEqual(status, 429)
        doc = json.loads(data)
        self.assertEqual(doc["type"], "error")
        self.assertEqual(doc["error"]["type"], "rate_limit_error")
        self.assertEqual(doc["error"]["code"], "rate_limited")

    def test_bad_body_is_400_and_nothing_sent(self):
        g = self.start()
        for body, text in ((b"not json", "JSON"), (b'{"messages":[]}', "model"),
                           (b'{"model":"fake:m1","x":"\xff"}', "UTF-8")):
            status, h, data = self.post(g, body)
            self.assertEqual(status, 400, body)
            doc = self.assert_error(data, "invalid_request", "invalid_request_error")
            self.assertIn(text, doc["error"]["message"])
        self.assertEqual(self.fake.count(), 0)

    def test_unknown_route_and_wrong_method(self):
        g = self.start()
        status, h, data = self.post(g, path="/v1/embeddingz")
        self.assertEqual(status, 404)
        self.assert_error(data, "not_found", "invalid_request_error")
        status, h, data = self.request(g, "GET", "/v1/chat/completions")
        self.assertEqual((status, h["allow"]), (405, "POST"))
        self.assert_error(data, "method_not_allowed", "invalid_request_error")
        status, h, data = self.request(g, "POST", "/healthz", b"{}")
        self.assertEqual((status, h["allow"]), (405, "GET, HEAD"))
        self.assertEqual(self.fake.count(), 0)

    def test_models_of_the_configuration(self):
        g = self.start()
        status, h, data = self.request(g, "GET", "/v1/models")
        self.assertEqual(status, 200)
        doc = json.loads(data)
        self.assertEqual(doc["object"], "list")
        self.assertEqual([(m["id"], m["owned_by"]) for m in doc["data"]],
                         [("fake:m1", "fake"), ("fake:m2", "fake")])
        # Anthropic's SDK sends anthropic-version: its shape
        status, h, data = self.request(g, "GET", "/v1/models",
                                       headers={"anthropic-version": "2023-06-01"})
        doc = json.loads(data)
        self.assertEqual([(m["type"], m["id"]) for m in doc["data"]],
                         [("model", "fake:m1"), ("model", "fake:m2")])
        self.assertEqual((doc["has_more"], doc["first_id"], doc["last_id"]),
                         (False, "fake:m1", "fake:m2"))


# ---------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------

class Streams(ServeBase):
    def open_stream(self, g, body=STREAM_REQUEST, path="/v1/chat/completions", key=None):
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = "Bearer " + key
        conn.request("POST", path, body=body, headers=h)
        return conn, conn.getresponse()

    def read_all(self, resp):
        out = b""
        try:
            while True:
                chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                if not chunk:
                    break
                out += chunk
        except http.client.IncompleteRead as e:
            e.partial = out + e.partial  # everything read, for the caller
            raise
        return out

    def test_stream_through_failover(self):
        g = self.start()
        # key a: Anthropic-style in-band overload before any content
        self.fake.script(KA, {"stream": [sse_role(), SSE_OVERLOADED]})
        self.fake.script(KB, {"stream": sse_answer("Hel", "lo"), "chunk_delay": 0.02})
        conn, resp = self.open_stream(g)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("content-type"), "text/event-stream")
        self.assertEqual(resp.getheader("transfer-encoding"), "chunked")
        self.assertEqual(resp.getheader("x-aigw-attempts"), "2")
        self.assertEqual(resp.getheader("x-aigw-provider"), "fake")
        rid = resp.getheader("x-aigw-request-id")
        data = self.read_all(resp)
        conn.close()
        self.assertEqual(data, b"".join(sse_answer("Hel", "lo")))
        self.assertEqual((self.fake.count(KA), self.fake.count(KB)), (1, 1))
        log = g.wait_log(1)
        self.assertEqual(log[0]["requestId"], rid)
        self.assertTrue(log[0]["stream"])
        self.assertEqual(log[0]["outcome"], "served")
        self.assertEqual(log[0]["bytes"], len(data))

    def test_bytes_arrive_as_the_upstream_sends_them(self):
        g = self.start()
        self.fake.script(KA, {"stream": sse_answer("a", "b", "c", "d"), "chunk_delay": 0.3})
        conn, resp = self.open_stream(g)
        t0 = time.monotonic()
        first = resp.read1(65536)
        t_first = time.monotonic() - t0
        rest = self.read_all(resp)
        total = time.monotonic() - t0
        conn.close()
        self.assertTrue(first.startswith(b"data: "))
        self.assertLess(t_first, total - 0.5, "the first bytes waited for the whole answer")
        self.assertEqual(first + rest, b"".join(sse_answer("a", "b", "c", "d")))

    def test_nothing_committed_answers_whole(self):
        g = self.start()
        self.fake.script(KA, limited("9"))
        self.fake.script(KB, limited("9"))
        conn, resp = self.open_stream(g)
        data = resp.read()
        conn.close()
        self.assertEqual(resp.status, 429)
        self.assertIsNotNone(resp.getheader("retry-after"))
        self.assertEqual(resp.getheader("content-type"), "application/json")
        self.assert_error(data, "rate_limited")

    def broken_stream(self, g, head):
        """Reads a stream that breaks after the events `head`: what the client
        got must be those, then one OpenAI-shaped error event, and no clean
        end (no last chunk). Returns the bytes."""
        conn, resp = self.open_stream(g)
        self.assertEqual(resp.status, 200)
        with self.assertRaises(http.client.IncompleteRead) as cm:
            self.read_all(resp)
        conn.close()
        data = cm.exception.partial
        self.assertTrue(data.startswith(head), data)
        m = re.fullmatch(rb"data: (\{.*\})\n\n", data[len(head):])
        self.assertIsNotNone(m, data)
        self.assertEqual(json.loads(m.group(1))["error"]["code"], "stream_failed")
        return data

    def test_cut_stream_ends_with_an_error_event(self):
        g = self.start()
        self.fake.script(KA, {"stream": [sse_role(), sse_token("Hel")], "end": "cut"})
        data = self.broken_stream(g, sse_role() + sse_token("Hel"))
        log = g.wait_log(1)
        self.assertEqual(log[0]["outcome"], "stream_failed")
        self.assertEqual(log[0]["bytes"], len(data))
        self.assertEqual(self.fake.count(KA), 1)
        self.assertEqual(self.fake.count(KB), 0)

    def test_cut_mid_event_drops_the_partial_event(self):
        # the upstream dies inside an event: what the client gets is whole
        # events, then the error event, never a half line glued to it
        g = self.start()
        self.fake.script(KA, {"stream": [sse_role(), sse_token("Hel"), sse_token("lo")[:-9]],
                              "end": "cut"})
        data = self.broken_stream(g, sse_role() + sse_token("Hel"))
        self.assertEqual(g.wait_log(1)[0]["bytes"], len(data))

    def test_events_split_across_chunks_arrive_whole(self):
        g = self.start()
        whole = b"".join(sse_answer("Hel", "lo"))
        pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
        self.fake.script(KA, {"stream": pieces})
        conn, resp = self.open_stream(g)
        data = self.read_all(resp)
        conn.close()
        self.assertEqual(data, whole)
        self.assertEqual(g.wait_log(1)[0]["outcome"], "served")

    def test_quiet_upstream_outlives_the_idle_timeout(self):
        # --idle-timeout is about clients that do not talk; an upstream that
        # thinks for longer than it (before or inside a stream) is not one
        g = self.start(None, "--idle-timeout", "1")
        self.fake.script(KA, {"sleep": 2.5, "stream": [sse_role(), 2.5, sse_token("late"),
                                                       b"data: [DONE]\n\n"]})
        conn, resp = self.open_stream(g)
        self.assertEqual(resp.status, 200)
        data = self.read_all(resp)
        conn.close()
        self.assertEqual(data, sse_role() + sse_token("late") + b"data: [DONE]\n\n")
        log = g.wait_log(1)[0]
        self.assertEqual(log["outcome"], "served")
        self.assertNotIn("errorCode", log)

    def test_cut_stream_error_event_bytes(self):
        g = self.start()
        self.fake.script(KA, {"stream": [sse_role(), sse_token("Hel")], "end": "cut"})
        raw = raw_exchange(g, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(STREAM_REQUEST), STREAM_REQUEST))
        self.assertIn(b"HTTP/1.1 200", raw)
        self.assertIn(b'"content":"Hel"', raw)
        m = re.search(rb'data: (\{"error":.*?\})\n\n', raw)
        self.assertIsNotNone(m, raw)
        err = json.loads(m.group(1))
        self.assertEqual(err["error"]["code"], "stream_failed")
        self.assertEqual(err["error"]["type"], "aigw_error")
        self.assertNotIn(b"\r\n0\r\n\r\n", raw, "a broken stream must not end cleanly")

    def test_stream_restart_after_a_cut_mid_event(self):
        g = self.start(self.gateway_config(streamRestart=True))
        body = b'{"model":"fake:m1","models":["fake:m2"],"stream":true,"messages":[]}'
        self.fake.script(KA, {"stream": [sse_role(), sse_token("par"),
                              b'data: {"choices":[{"delta":{"con'], "end": "cut"},
                         {"stream": sse_answer("whole")})
        conn, resp = self.open_stream(g, body)
        data = self.read_all(resp)
        conn.close()
        head = sse_role() + sse_token("par")
        self.assertTrue(data.startswith(head), data)
        m = re.match(rb": aigw\.reset (\{.*?\})\n\n", data[len(head):])
        self.assertIsNotNone(m, data)
        json.loads(m.group(1))
        self.assertEqual(data[len(head) + m.end():], b"".join(sse_answer("whole")))
        self.assertEqual(self.fake.count(KA), 2)

    def test_stream_restart_on_the_next_candidate(self):
        g = self.start(self.gateway_config(streamRestart=True))
        body = b'{"model":"fake:m1","models":["fake:m2"],"stream":true,"messages":[]}'
        self.fake.script(KA, {"stream": [sse_role(), sse_token("par")], "end": "cut"},
                         {"stream": sse_answer("whole")})
        conn, resp = self.open_stream(g, body)
        self.assertEqual(resp.status, 200)
        data = self.read_all(resp)
        conn.close()
        head = sse_role() + sse_token("par")
        self.assertTrue(data.startswith(head), data)
        rest = data[len(head):]
        m = re.match(rb": aigw\.reset (\{.*?\})\n\n", rest)
        self.assertIsNotNone(m, rest)
        reason = json.loads(m.group(1))
        self.assertEqual(reason["attempt"], 1)
        self.assertEqual(rest[m.end():], b"".join(sse_answer("whole")))
        ups = [(k, json.loads(b)["model"]) for k, _, b in self.fake.requests]
        self.assertEqual(ups, [(KA, "m1"), (KA, "m2")])  # restarted on the next model
        self.assertEqual(g.wait_log(1)[0]["outcome"], "served")

    def test_client_leaving_mid_stream_cancels_the_upstream(self):
        g = self.start()
        self.fake.script(KA, {"stream": [sse_role(), sse_token("Hel")], "end": "stall"})
        conn, resp = self.open_stream(g)
        self.assertEqual(resp.status, 200)
        # the role event and the first token may come in one write or two
        first = resp.read1(65536)
        while b"Hel" not in first:
            more = resp.read1(65536)
            self.assertTrue(more, "the stream ended before its first token")
            first += more
        t0 = time.monotonic()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        deadline = t0 + 5
        while not self.fake.client_closed and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(self.fake.client_closed, "the upstream call went on")
        self.assertLess(self.fake.client_closed[0] - t0, 2.0)
        log = g.wait_log(1)
        self.assertEqual(log[0]["outcome"], "cancelled")
        self.assertEqual(log[0]["errorCode"], "client_closed")

    def leave_once_upstream_answers(self, g, body):
        """Sends body, closes the connection once key a's call is under way;
        the upstream call must end within 2 s and key b stay untouched."""
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        deadline = time.monotonic() + 5
        while self.fake.count(KA) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        t0 = time.monotonic()
        s.close()
        while not self.fake.client_closed and time.monotonic() < t0 + 5:
            time.sleep(0.02)
        self.assertTrue(self.fake.client_closed, "the upstream call went on")
        self.assertLess(self.fake.client_closed[0] - t0, 2.0)
        self.assertEqual(self.fake.count(KB), 0)

    def test_client_leaving_a_whole_request_cancels_the_upstream(self):
        g = self.start()
        # a whole (not SSE) answer that starts and never ends
        self.fake.script(KA, {"headers": {"Content-Type": "application/json"},
                              "stream": [b'{"id":"chatcmpl-1",'], "end": "stall"})
        self.leave_once_upstream_answers(g, REQUEST)
        log = g.wait_log(1)
        self.assertEqual((log[0]["outcome"], log[0]["status"]), ("cancelled", 499))

    def test_client_leaving_before_commit_cancels_the_upstream(self):
        g = self.start()
        # nothing but the role event, then silence: not committed yet
        self.fake.script(KA, {"stream": [sse_role()], "end": "stall"})
        self.leave_once_upstream_answers(g, STREAM_REQUEST)


# ---------------------------------------------------------------------------
# access keys
# ---------------------------------------------------------------------------

class AccessKeys(ServeBase):
    def keyed(self):
        return self.gateway_config(
            configurations=[{"name": "prod",
                             "access": {"models": {"allow": ["fake:m2"]}},
                             "router": {"rules": [{"provider": "fake", "steps": [
                                 {"type": "user", "keys": [{"id": "c"}]}]}]}}],
            access_keys=[{"id": "team-a", "value": ACCESS_A, "configuration": "prod"},
                         {"id": "team-b", "valueFrom": {"env": "AIGW_TEST_ACCESS_B"},
                          "configuration": "dev"}])

    def start_keyed(self, *args):
        os.environ["AIGW_TEST_ACCESS_B"] = ACCESS_B
        try:
            return self.start(self.keyed(), *args)
        finally:
            del os.environ["AIGW_TEST_ACCESS_B"]

    def test_missing_or_unknown_key_is_401(self):
        g = self.start_keyed()
        for headers in ({}, {"Authorization": "Bearer " + ACCESS_A[:-1]},
                        {"Authorization": "Bearer " + ACCESS_A + "x"},
                        {"Authorization": "Basic " + ACCESS_A},
                        {"x-api-key": "nope-nope-nope"}):
            status, h, data = self.post(g, headers=headers)
            self.assertEqual(status, 401, headers)
            self.assert_error(data, "invalid_api_key", "invalid_request_error")
        status, h, data = self.post(g, path="/v1/messages")
        self.assertEqual(status, 401)
        doc = json.loads(data)
        self.assertEqual((doc["type"], doc["error"]["type"]), ("error", "authentication_error"))
        for path in ("/v1/models", "/metrics"):
            status, h, data = self.request(g, "GET", path)
            self.assertEqual(status, 401, path)
        self.assertEqual(self.fake.count(), 0)
        status, _, _ = self.request(g, "GET", "/healthz")
        self.assertEqual(status, 200)

    def test_bearer_scheme_is_case_insensitive(self):
        g = self.start_keyed()
        for scheme in ("bearer", "BEARER", "Bearer"):
            status, _, data = self.post(g, headers={"Authorization": scheme + " " + ACCESS_B})
            self.assertEqual(status, 200, (scheme, data))
        self.assertEqual(self.fake.count(KA), 3)

    def test_each_key_its_configuration(self):
        g = self.start_keyed()
        # team-b: dev (keys a, b; any model)
        status, h, data = self.post(g, key=ACCESS_B)
        self.assertEqual((status, h["x-aigw-model"]), (200, "m1"))
        self.assertEqual(self.fake.count(KA), 1)
        # team-a: prod (key c; only fake:m2), by either header
        status, h, data = self.post(g, b'{"model":"fake:m2","messages":[]}',
                                    headers={"x-api-key": ACCESS_A})
        self.assertEqual((status, h["x-aigw-model"]), (200, "m2"))
        self.assertEqual(self.fake.count(KC), 1)
        status, h, data = self.post(g, key=ACCESS_A)
        self.assertEqual(status, 403)
        self.assert_error(data, "model_not_allowed")
        self.assertEqual(self.fake.count(), 2)
        status, h, data = self.request(g, "GET", "/v1/models",
                                       headers={"Authorization": "Bearer " + ACCESS_A})
        self.assertEqual([m["id"] for m in json.loads(data)["data"]], ["fake:m2"])
        # A line is written once its answer went out, by the connection's
        # thread: two requests in a row may be logged in either order.
        log = g.wait_log(4)
        self.assertEqual(sorted((e.get("accessKey"), e.get("configuration"), e["status"])
                                for e in log[:4]),
                         [("team-a", "prod", 200), ("team-a", "prod", 200),
                          ("team-a", "prod", 403), ("team-b", "dev", 200)])


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

class Limits(ServeBase):
    def test_body_size(self):
        g = self.start(None, "--max-body", "1k")
        big = b'{"model":"fake:m1","messages":[],"pad":"' + b"x" * 2000 + b'"}'
        status, h, data = self.post(g, big)
        self.assertEqual(status, 413)
        doc = self.assert_error(data, "request_too_large", "invalid_request_error")
        self.assertIn("1024 bytes", doc["error"]["message"])
        # chunked, with no Content-Length to go by
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=iter([big[:600], big[600:]]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        resp.read()
        conn.close()
        status, h, data = self.post(g)  # a body within the limit
        self.assertEqual(status, 200)
        self.assertEqual(self.fake.count(), 1)

    def test_header_size(self):
        g = self.start(None, "--max-header", "4k")
        raw = raw_exchange(g, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " +
                           b"y" * 8192 + b"\r\nContent-Length: 2\r\n\r\n{}")
        self.assertRegex(raw.split(b"\r\n", 1)[0], rb"^HTTP/1\.1 431 ")
        self.assertEqual(self.fake.count(), 0)

    def test_concurrent_requests(self):
        g = self.start(None, "--max-concurrent", "1")
        self.fake.script(KA, {"sleep": 1.0, "body": completion()}, {"body": completion()})
        results = {}

        def slow():
            results["slow"] = self.post(g)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 5
        while self.fake.count(KA) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, h, data = self.post(g)
        self.assertEqual(status, 503)
        self.assertEqual(h["retry-after"], "1")
        self.assert_error(data, "overloaded", "server_error")
        t.join()
        self.assertEqual(results["slow"][0], 200)
        self.assertEqual(self.fake.count(KA), 1)
        # the slot is let go when the request is done, after its answer is
        # sent: the client can be quicker (under ThreadSanitizer it was), so
        # wait (briefly) until /metrics shows none in flight
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.request(g, "GET", "/metrics")[2].decode()
            if re.search(r"^aigw_serve_requests_in_flight 0$", text, re.M):
                break
            time.sleep(0.02)
        status, h, data = self.post(g)  # the slot is free again
        self.assertEqual(status, 200)

    def test_slow_whole_answer_outlives_the_idle_timeout(self):
        g = self.start(None, "--idle-timeout", "1")
        self.fake.script(KA, {"sleep": 2.2})
        status, h, data = self.post(g)
        self.assertEqual(status, 200, data)
        self.assertEqual(json.loads(data)["choices"][0]["message"]["content"], "Hello")
        self.assertEqual(self.fake.count(KA), 1)

    def test_descriptors_past_fd_setsize(self):
        # poll(), not select(): a connection whose descriptor is past 1024
        # is served like any other
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1400
        if hard != resource.RLIM_INFINITY and hard < want:
            self.skipTest("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
        try:
            g = self.start(None, "--max-connections", "2000")  # inherits the limit
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        socks = [socket.create_connection(("127.0.0.1", g.port), timeout=10)
                 for _ in range(1100)]
        try:
            status, _, data = self.request(g, "GET", "/healthz")
            self.assertEqual((status, data), (200, b'{"status":"ok"}'))
        finally:
            for x in socks:
                x.close()

    def test_idle_connection_is_closed(self):
        g = self.start(None, "--idle-timeout", "1")
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        t0 = time.monotonic()
        data = s.recv(1024)
        waited = time.monotonic() - t0
        s.close()
        self.assertEqual(data, b"")
        self.assertLess(waited, 5)
        self.assertGreater(waited, 0.5)


# ---------------------------------------------------------------------------
# signals: reload, drain
# ---------------------------------------------------------------------------

class Signals(ServeBase):
    def test_sighup_reloads_and_a_bad_file_keeps_the_old(self):
        cfg = self.gateway_config()
        g = self.start(cfg)
        status, h, _ = self.post(g)
        self.assertEqual((status, self.fake.count(KA)), (200, 1))
        # the new file: access keys, and key c first
        cfg2 = self.gateway_config(access_keys=[{"id": "k", "value": ACCESS_A}])
        cfg2["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"] = [{"id": "c"}]
        self.write("gateway.json", json.dumps(cfg2))
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reloaded" not in g.stderr() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIn("aigw: serve: reloaded %s" % os.path.join(self.tmp, "gateway.json"),
                      g.stderr())
        status, _, _ = self.post(g)
        self.assertEqual(status, 401)
        status, _, _ = self.post(g, key=ACCESS_A)
        self.assertEqual((status, self.fake.count(KC)), (200, 1))
        # a broken file: said why, the old one stays
        self.write("gateway.json", '{"providerKeys":[{"id":"x"}]}')
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "the previous configuration stays" not in g.stderr() and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        err = g.stderr()
        self.assertIn("providerKeys[0].providerId: required", err)
        self.assertIn("reload of %s failed; the previous configuration stays"
                      % os.path.join(self.tmp, "gateway.json"), err)
        status, _, _ = self.post(g, key=ACCESS_A)
        self.assertEqual((status, self.fake.count(KC)), (200, 2))
        status, _, text = self.request(g, "GET", "/metrics",
                                       headers={"Authorization": "Bearer " + ACCESS_A})
        self.assertIn(b'aigw_serve_config_reloads_total{result="ok"} 1', text)
        self.assertIn(b'aigw_serve_config_reloads_total{result="failed"} 1', text)

    def test_sigterm_lets_a_stream_finish(self):
        g = self.start()
        self.fake.script(KA, {"stream": sse_answer(*"abcdefgh"), "chunk_delay": 0.1})
        idle = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
        idle.request("GET", "/healthz")
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
        conn.request("POST", "/v1/chat/completions", body=STREAM_REQUEST)
        resp = conn.getresponse()
        first = resp.read1(65536)
        g.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while "SIGTERM" not in g.stderr() and time.monotonic() < deadline:
            time.sleep(0.01)
        # no new connection is taken while the stream drains
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", g.port), timeout=2).close()
        # a connection kept alive from before is told no, and to go
        hz = idle.getresponse()
        self.assertEqual(hz.read(), b'{"status":"ok"}')
        idle.request("POST", "/v1/chat/completions", body=REQUEST)
        late = idle.getresponse()
        self.assertEqual(late.status, 503)
        self.assertEqual(late.getheader("retry-after"), "1")
        self.assertEqual(late.getheader("connection"), "close")
        self.assert_error(late.read(), "shutting_down", "server_error")
        idle.close()
        rest = b""
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            rest += chunk
        conn.close()
        self.assertEqual(first + rest, b"".join(sse_answer(*"abcdefgh")))
        self.assertEqual(g.proc.wait(timeout=10), 0)
        self.assertIn("SIGTERM: finishing the requests in flight", g.stderr())

    def test_drain_timeout_cancels(self):
        g = self.start(None, "--drain-timeout", "1")
        self.fake.script(KA, {"stream": [sse_role(), sse_token("x")], "end": "stall"})
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
        conn.request("POST", "/v1/chat/completions", body=STREAM_REQUEST)
        resp = conn.getresponse()
        resp.read1(65536)
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGINT)
        self.assertEqual(g.proc.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 5)
        conn.close()
        self.assertIn("still in flight after the drain timeout", g.stderr())


# ---------------------------------------------------------------------------
# /metrics, and curl
# ---------------------------------------------------------------------------

METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")*)?\})? '
                         r'[-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)$')


class Metrics(ServeBase):
    def test_prometheus_text(self):
        g = self.start()
        self.fake.script(KA, limited())
        self.assertEqual(self.post(g)[0], 200)
        self.assertEqual(self.post(g)[0], 200)
        # a request is counted after its answer is sent: the client can ask
        # for /metrics before the second one is, so poll (briefly) for it
        served = re.compile(r'^aigw_serve_requests_total\{route="/v1/chat/completions",'
                            r'code="200"\} 2$', re.M)
        deadline = time.monotonic() + 5
        while True:
            status, h, data = self.request(g, "GET", "/metrics")
            self.assertEqual(status, 200)
            text = data.decode()
            if served.search(text) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
        typed, series = {}, set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                self.assertNotIn(name, typed, "TYPE twice: " + name)
                typed[name] = kind
                continue
            if line.startswith("#"):
                continue
            self.assertRegex(line, METRIC_LINE)
            key = line.rsplit(" ", 1)[0]
            self.assertNotIn(key, series, "a series twice: " + key)
            series.add(key)
            base = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            family = re.sub(r"_(bucket|sum|count)$", "", base)
            self.assertTrue(base in typed or family in typed, "no TYPE for " + base)

        def value(series_text):
            m = re.search("^" + re.escape(series_text) + r" (\S+)$", text, re.M)
            self.assertIsNotNone(m, series_text)
            return float(m.group(1))

        labels = 'kind="key",name="%s",provider="fake",model=""'
        self.assertEqual(value("aigw_upstream_requests_total{%s}" % (labels % "a")), 1)
        self.assertEqual(value("aigw_upstream_requests_total{%s}" % (labels % "b")), 2)
        self.assertEqual(value("aigw_upstream_failures_by_class_total{%s,class=\"rate_limit\"}"
                               % (labels % "a")), 1)
        self.assertEqual(value('aigw_serve_requests_total{route="/v1/chat/completions",'
                               'code="200"}'), 2)
        self.assertEqual(typed["aigw_upstream_latency_seconds"], "histogram")
        ep = 'kind="endpoint",name="b",provider="fake",model="m1"'
        buckets = [float(v) for v in re.findall(
            r'^aigw_upstream_latency_seconds_bucket\{' + re.escape(ep) + r',le="[^"]+"\} (\S+)$',
            text, re.M)]
        self.assertEqual(buckets, sorted(buckets))
        self.assertEqual(buckets[-1], 2)
        self.assertEqual(value("aigw_upstream_latency_seconds_count{%s}" % ep), 2)
        self.assertEqual(value('aigw_health_state{kind="endpoint",name="a",provider="fake",'
                               'model="m1",state="cooling",reason="rate_limit"}'), 1)


@unittest.skipUnless(shutil.which("curl"), "curl is not installed")
class Curl(ServeBase):
    def test_curl_whole_and_streamed(self):
        cfg = self.gateway_config(access_keys=[{"id": "k", "value": ACCESS_A}])
        g = self.start(cfg)
        self.fake.script(KA, limited())
        p = subprocess.run(["curl", "-sS", "-D", "-", g.url + "/v1/chat/completions",
                            "-H", "Authorization: Bearer " + ACCESS_A,
                            "-H", "Content-Type: application/json", "-d", REQUEST.decode()],
                           capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        head, body = p.stdout.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertIn(b"x-aigw-attempts: 2", head)
        self.assertEqual(body, completion())
        self.fake.script(KB, {"stream": sse_answer("Hi"), "chunk_delay": 0.02})
        p = subprocess.run(["curl", "-sSN", g.url + "/v1/chat/completions",
                            "-H", "Authorization: Bearer " + ACCESS_A,
                            "-d", STREAM_REQUEST.decode()], capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(sse_answer("Hi")))
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            g.url + "/v1/chat/completions", "-d", REQUEST.decode()],
                           capture_output=True, timeout=20)
        self.assertEqual(p.stdout, b"401")


if __name__ == "__main__":
    unittest.main(verbosity=2)
