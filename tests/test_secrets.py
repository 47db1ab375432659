#!/usr/bin/env python3
"""test_secrets.py - every output surface, scanned for every secret.

SECURITY.md promises that no secret, nor any 8-byte window of one, shows in
any output: `aigw request`'s answer, trace and statistics (human and JSON),
`aigw validate`'s problems, `aigw serve`'s answers (bodies and headers),
access log, /metrics and reload messages, and the Redis health store's key
names and values.  This test configures a distinct, random secret in every
place a secret can be (providerKeys value / valueFrom env / valueFrom file,
inline step keys, the ngrok access key, access keys inline and from the
environment, the Redis password in the file and in the URL, the salt, and
the broken values of bad gateway files), drives the built aigw (env AIGW_BIN)
through the failover scenarios against the fake provider
(tests/support/fake_provider.py) and a real redis-server started here, and
scans everything it captured with tests/support/secret_scan.py.  Each
surface is also checked for what it must hold (key ids, statuses, paths) so
that the scan cannot pass on an empty capture, and the fake provider's
per-key counts are checked for each scenario.

Where a secret may legitimately be echoed by an upstream (the fake echoes
the Authorization header it received as $AUTH), the whole answer must carry
"[REDACTED]" instead.  The committed bytes of a stream are passed through
unscanned (README, "Streaming"): no scenario echoes a key after a stream's
commit point.

Exits 77 (skipped) when redis-server is not installed (scripts/deps.sh
installs it).  AIGW_REDIS=0 (a build without hiredis) skips the Redis
store's class only.  Python 3 standard library only.
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
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "support"))
from fake_provider import (FakeProvider, completion, sse, sse_answer, sse_role,  # noqa: E402
                           sse_token)
from secret_scan import Scanner, as_bytes, collisions, make_secret  # noqa: E402
from redis_server import RedisServer, free_port  # noqa: E402

AIGW = os.environ.get("AIGW_BIN", "")
HAVE_REDIS_STORE = os.environ.get("AIGW_REDIS", "1") != "0"
REDIS_SERVER = shutil.which("redis-server")

REQUEST = '{"model":"fake:m1","messages":[{"role":"user","content":"hi"}]}'
REQUEST_FALLBACK = ('{"model":"fake:m1","models":["fake:m2"],'
                    '"messages":[{"role":"user","content":"hi"}]}')
STREAM = '{"model":"fake:m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
STREAM_FALLBACK = ('{"model":"fake:m1","models":["fake:m2"],"stream":true,'
                   '"messages":[{"role":"user","content":"hi"}]}')
OPENAI = '{"model":"openai:gpt-4o","messages":[{"role":"user","content":"hi"}]}'
MESSAGES = '{"model":"fake:m1","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
MESSAGES_STREAM = ('{"model":"fake:m1","max_tokens":16,"stream":true,'
                   '"messages":[{"role":"user","content":"hi"}]}')
RESPONSES = '{"model":"fake:m1","input":"hi"}'

# Upstream answers that echo the key they were sent ($AUTH: "Bearer <key>").
ECHO_RATE_LIMITED = b'{"error":{"message":"Rate limit for $AUTH","code":"rate_limit_exceeded"}}'
ECHO_AUTH = b'{"error":{"message":"Incorrect API key provided: $AUTH","code":"invalid_api_key"}}'
ECHO_SERVER = b'{"error":{"message":"internal error serving $AUTH"}}'
ECHO_OK = b'{"id":"chatcmpl-echo","choices":[{"message":{"content":"you are $AUTH"}}]}'
QUOTA = b'{"error":{"message":"You exceeded your quota","code":"insufficient_quota"}}'
# Anthropic's in-band error, echoing the key, before any content: fails over unseen
ECHO_INBAND = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
               b'"message":"overloaded for $AUTH"}}\n\n')


def limited(wait="30", body=ECHO_RATE_LIMITED):
    return {"status": 429, "headers": {"Retry-After": wait, "X-Echo": "$AUTH"}, "body": body}


def failing(status, body=ECHO_SERVER):
    return {"status": status, "headers": {"X-Echo": "$AUTH"}, "body": body}


def anthropic_stream(text):
    ev = []
    for name, obj in (
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": "m1",
                "content": [], "usage": {"input_tokens": 1, "output_tokens": 0}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 1}}),
            ("message_stop", {"type": "message_stop"})):
        ev.append(b"event: " + name.encode() + b"\n" + sse(obj))
    return ev


# ---------------------------------------------------------------------------
# the world every class shares: secrets, files, the fake provider, the scan
# ---------------------------------------------------------------------------

class World:
    tmp = None
    fake = None
    secrets = {}   # label -> value (str or bytes): every secret any file holds
    keyval = {}    # key id -> the value the fake provider sees
    env = {}       # the environment of every aigw run
    scanner = None
    surfaces = []  # (name, bytes scanned)
    paths = {}
    written = []   # every file the test wrote: its path holds no window either

    @classmethod
    def setup(cls):
        for _ in range(5):
            cls.tmp = tempfile.mkdtemp(prefix="aigw-sectest-")
            cls.secrets = cls.new_secrets()
            if not collisions(cls.secrets, cls.plain_texts()):
                break
            shutil.rmtree(cls.tmp, ignore_errors=True)
        else:
            raise RuntimeError("the secrets keep meeting the test's own names: %r" % (
                collisions(cls.secrets, cls.plain_texts()),))
        cls.scanner = Scanner(cls.secrets)
        cls.fake = FakeProvider()
        s = cls.secrets
        cls.keyval = {"alpha": s["ALPHA"], "bravo": s["BRAVO"], "charlie": s["CHARLIE"],
                      "delta": s["DELTA"], "echo": s["ECHO"], "oscar": s["OSCAR"],
                      "xray": s["XRAY"], "ngrok": s["NGROK"]}
        cls.paths = {"charlie": cls.write("charlie.key", s["CHARLIE"] + "\n"),
                     "salt": cls.write("store-salt.key", s["SALT_FILE"] + "\n")}
        cls.env = dict(os.environ)
        cls.env.update({"AIGW_SECTEST_BRAVO": s["BRAVO"], "AIGW_SECTEST_NGROK": s["NGROK"],
                        "AIGW_SECTEST_TWO": s["TWO"], "AIGW_SECTEST_REDIS_PW": s["REDIS_PW"]})

    @staticmethod
    def new_secrets():
        s = {}
        for name, label in (("ALPHA", "sk-ALPHA"), ("BRAVO", "sk-BRAVO"),
                            ("CHARLIE", "sk-CHARLIE"), ("DELTA", "sk-DELTA"),
                            ("ECHO", "sk-ECHO"), ("OSCAR", "sk-OSCAR"), ("XRAY", "sk-XRAY"),
                            ("NGROK", "ngk-NGROK"), ("ONE", "ak-ONE"), ("TWO", "ak-TWO"),
                            ("REDIS_PW", "rp-PASSWD"), ("WRONG_PW", "rp-WRONG"),
                            ("REDIS_SALT", "rs-SALT"), ("SALT_FILE", "rs-SALTFILE"),
                            ("DUP", "ak-DUP"), ("FILE2", "sk-FILE2")):
            s[name] = make_secret(label)
        # the broken values of bad gateway files: the whole value is the secret
        s["LONG"] = make_secret("sk-LONG", groups=1200)  # > 8192 bytes
        base = make_secret("sk-CTRL")
        s["CTRL"] = base[:20] + "\x01" + base[20:]
        base = make_secret("ak-CRLF")
        s["CRLF"] = base[:20] + "\r\nX-Injected: 1" + base[20:]
        base = make_secret("ngk-LF")
        s["NGROK_LF"] = base + "\n"
        base = make_secret("sk-NUL")
        s["NUL"] = base[:20] + "\x00" + base[20:]
        base = make_secret("rs-DEL")
        s["DEL"] = base[:20] + "\x7f" + base[20:]
        base = as_bytes(make_secret("sk-UTF"))
        s["NONUTF8"] = base[:20] + b"\xff\xfe" + base[20:]
        base = as_bytes(make_secret("sk-UTFENV"))
        s["NONUTF8_ENV"] = base[:20] + b"\xc3\x28" + base[20:]
        s["ENV_CRLF"] = make_secret("sk-ENVCRLF") + "\r\nX: y"
        return s

    @classmethod
    def plain_texts(cls):
        """What the test writes that is not secret: a window of a secret in
        one of these would fail the scan for nothing (a temporary folder
        "aigw-serve-b..." once matched a canary "sk-serve-bravo")."""
        return [cls.tmp, os.path.realpath(cls.tmp), tempfile.gettempdir(), AIGW,
                " ".join(NAMES), REQUEST, REQUEST_FALLBACK, STREAM, STREAM_FALLBACK, OPENAI,
                MESSAGES, MESSAGES_STREAM, RESPONSES, ECHO_RATE_LIMITED, ECHO_AUTH, ECHO_SERVER,
                ECHO_OK, QUOTA, ECHO_INBAND, completion(), b"".join(sse_answer("hello", "world")),
                b"".join(anthropic_stream("hello"))]

    @classmethod
    def write(cls, name, data):
        path = os.path.join(cls.tmp, name)
        cls.written.append(path)
        with open(path, "wb") as f:
            f.write(as_bytes(data))
        return path

    @classmethod
    def teardown(cls):
        if cls.fake:
            cls.fake.stop()
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)


# Every name the test gives files, variables, ids and prefixes: checked
# against the secrets' windows (World.plain_texts).
NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "oscar", "xray", "ngrok", "first",
         "second", "third", "team-one", "team-two", "sectest", "fake", "dead", "openai",
         "m1", "m2", "m3", "gpt-4o", "charlie.key", "store-salt.key", "access.log",
         "AIGW_SECTEST_BRAVO", "AIGW_SECTEST_NGROK", "AIGW_SECTEST_TWO",
         "AIGW_SECTEST_REDIS_PW", "AIGW_SECTEST_BAD_CRLF", "AIGW_SECTEST_BAD_LONG",
         "AIGW_SECTEST_BAD_UTF8", "sectest:", "sectest-url:", "sectest-wrong:",
         "sectest-serve:", "two-lines.key", "not-utf8.key", "too-long.key", "huge.key",
         "ctrl-salt.key", "request-", "validate-", "serve-", "gateway.json", "redis"]


def setUpModule():
    World.setup()


def tearDownModule():
    sc = World.scanner
    if sc is not None and World.surfaces:
        n = len(World.surfaces)
        size = sum(b for _, b in World.surfaces)
        sys.stderr.write(
            "\nsecret scan: %d secrets, %d distinct %d-byte windows, %d surfaces (%d bytes): "
            "%d window x surface checks, each surface clean\n" % (
                sc.count, sc.windows, sc.n, n, size, sc.windows * n))
    World.teardown()


class SecretsCase(unittest.TestCase):
    """Runs aigw, registers each captured surface and scans it."""

    @classmethod
    def setUpClass(cls):
        if not AIGW or not os.access(AIGW, os.X_OK):
            raise unittest.SkipTest("AIGW_BIN is not an executable: %r" % AIGW)
        cls.fake = World.fake
        cls.S = World.secrets

    def setUp(self):
        self.fake.reset()

    # ---- the scan ----

    def surface(self, name, data, expect=()):
        """A captured output: not empty, holding what it must, and free of
        every secret's windows."""
        data = as_bytes(data)
        self.assertTrue(data, "%s: nothing was captured" % name)
        for m in expect:
            if as_bytes(m) not in data:
                self.fail("%s lacks %r:\n%s" % (name, m, data[:4000].decode("utf-8", "replace")))
        World.scanner.assert_clean(self, data, name)
        World.surfaces.append((name, len(data)))

    # ---- running aigw ----

    def aigw(self, *args, stdin=b"", env=None, timeout=30):
        p = subprocess.run([AIGW] + list(args), input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env or World.env, timeout=timeout)
        for out in (p.stdout, p.stderr):
            self.assertNotIn(b"Sanitizer", out, out.decode("utf-8", "replace"))
            self.assertNotIn(b"runtime error:", out, out.decode("utf-8", "replace"))
        return p

    def counts(self, want):
        """The fake provider saw each key as often as want says (a number or
        (low, high)); every key not named, never; nothing else at all."""
        got = {k: self.fake.count(v) for k, v in World.keyval.items()}
        for k, n in got.items():
            w = want.get(k, 0)
            lo, hi = w if isinstance(w, tuple) else (w, w)
            self.assertTrue(lo <= n <= hi, "key %s: %d upstream requests, want %r (all: %r)"
                            % (k, n, w, got))
        self.assertEqual(self.fake.count(), sum(got.values()),
                         "the fake saw a credential that is no configured key")
        return got

    # ---- gateway files ----

    def providers(self):
        return [{"providerId": "fake", "name": "Fake", "baseUrl": self.fake.base_url,
                 "models": [{"modelId": "m1"}, {"modelId": "m2"}]},
                {"providerId": "openai", "name": "OpenAI", "baseUrl": self.fake.base_url}]

    def provider_keys(self):
        S = self.S
        return [{"id": "alpha", "providerId": "fake", "name": "first", "value": S["ALPHA"]},
                {"id": "bravo", "providerId": "fake", "name": "second",
                 "valueFrom": {"env": "AIGW_SECTEST_BRAVO"}},
                {"id": "charlie", "providerId": "fake", "name": "third",
                 "valueFrom": {"file": World.paths["charlie"]}},
                {"id": "oscar", "providerId": "openai", "name": "openai", "value": S["OSCAR"]}]

    def rules(self):
        S = self.S
        return [{"provider": "fake", "steps": [
                    {"type": "user", "keySelectionStrategy": "ordered",
                     "keys": [{"id": "alpha"}, {"id": "bravo"}]},
                    {"type": "user", "keys": [{"id": "charlie"}]}]},
                {"model": "fake:m2", "steps": [
                    {"type": "user", "keys": [{"name": "delta", "value": S["DELTA"]},
                                              {"name": "echo", "value": S["ECHO"]}]}]},
                {"provider": "openai", "steps": [
                    {"type": "user", "keys": [{"id": "oscar"}]}, {"type": "ngrok"}]}]

    def gateway(self, **gw):
        return {
            "providers": self.providers(),
            "providerKeys": self.provider_keys(),
            "accessKeyConfiguration": {"name": "sectest", "router": {"rules": self.rules()}},
            "ngrokAccessKey": {"valueFrom": {"env": "AIGW_SECTEST_NGROK"}},
            "ngrokGatewayUrl": self.fake.base_url,
            "gatewayConfig": dict({"perRequestTimeout": "1s", "totalTimeout": "8s",
                                   "firstTokenTimeout": "1s", "streamIdleTimeout": "1s",
                                   "retryAfterMax": "1s", "sameBackendRetries": 0}, **gw),
        }

    def config_file(self, name, cfg):
        return World.write(name, json.dumps(cfg, indent=1))


# ---------------------------------------------------------------------------
# aigw request: the answer (stdout), the trace and the statistics (stderr)
# ---------------------------------------------------------------------------

class Request(SecretsCase):
    MODES = {
        # what the trace and the statistics look like, each way
        "human": ("  attempt 1  ", "aigw: request rq_", "retry budget: requests"),
        "json": ('"attemptNumber":1', '"requestId":"rq_', '"retryBudget":{'),
    }

    def scenario(self, name, scripts, counts, body=REQUEST, repeat=1, rc=0, out=(), err=(),
                 cfg=None, modes=("human", "json")):
        """Runs one scenario once per mode (--trace M --stats M), the fake
        scripted afresh each time, and scans stdout and stderr."""
        path = self.config_file("request-%s.json" % name, cfg or self.gateway())
        for mode in modes:
            self.fake.reset()
            for key, acts in scripts.items():
                self.fake.script(World.keyval[key], *acts)
            args = ["request", "-c", path, "-d", body, "--trace", mode, "--stats", mode]
            if repeat > 1:
                args += ["--repeat", str(repeat)]
            p = self.aigw(*args)
            where = "aigw request (%s) --trace %s --stats %s" % (name, mode, mode)
            self.assertEqual(p.returncode, rc, "%s: exit %d\n%s" % (
                where, p.returncode, p.stderr.decode("utf-8", "replace")))
            self.surface(where + ": stdout", p.stdout, out)
            self.surface(where + ": stderr", p.stderr, tuple(err) + self.MODES[mode])
            self.counts(counts)

    def test_rate_limited_key_cools(self):
        self.scenario("429", {"alpha": [limited()],
                              "bravo": [{"status": 200, "headers": {"X-Echo": "$AUTH"},
                                         "body": ECHO_OK}]},
                      {"alpha": 1, "bravo": 3}, repeat=3,
                      out=[b"you are Bearer [REDACTED]"],
                      err=["alpha", "bravo", "429", "key_cooling", "cooling"])

    def test_unauthorized_key_is_benched(self):
        self.scenario("401", {"alpha": [failing(401, ECHO_AUTH)]}, {"alpha": 1, "bravo": 2},
                      repeat=2, out=[b"chatcmpl-fake"],
                      err=["alpha", "401", "auth", "key_benched", "benched"])

    def test_forbidden_keys_are_benched(self):
        self.scenario("403", {"alpha": [failing(403, ECHO_AUTH)],
                              "bravo": [failing(403, ECHO_AUTH)]},
                      {"alpha": 1, "bravo": 1, "charlie": 2}, repeat=2, out=[b"chatcmpl-fake"],
                      err=["alpha", "bravo", "charlie", "403", "key_benched"])

    def test_quota_keys_are_benched(self):
        self.scenario("quota", {"alpha": [failing(402, QUOTA)],
                                "bravo": [failing(429, QUOTA)]},
                      {"alpha": 1, "bravo": 1, "charlie": 2}, repeat=2, out=[b"chatcmpl-fake"],
                      err=["alpha", "bravo", "402", "quota", "key_benched"])

    def test_server_errors(self):
        self.scenario("500-503", {"alpha": [failing(500)], "bravo": [failing(503)]},
                      {"alpha": 2, "bravo": 2, "charlie": 2}, repeat=2, out=[b"chatcmpl-fake"],
                      err=["alpha", "bravo", "charlie", "500", "503", "server"])

    def test_connection_closed_without_answer(self):
        # libcurl resends once when a kept-alive connection turns out closed
        self.scenario("closed", {"alpha": [{"close": True}]},
                      {"alpha": (1, 2), "charlie": 1}, out=[b"chatcmpl-fake"],
                      err=["alpha", "charlie", "network"])

    def test_attempt_timeout(self):
        self.scenario("timeout", {"alpha": [{"sleep": 2.5}]}, {"alpha": 1, "charlie": 1},
                      out=[b"chatcmpl-fake"], err=["alpha", "charlie", "timeout"])

    def test_stream_failover_before_the_commit_point(self):
        """Failures before the commit point (an in-band error echoing the key,
        a 429 echoing it) fail over unseen."""
        self.scenario("stream-failover",
                      {"alpha": [{"stream": [ECHO_INBAND], "headers": {"X-Echo": "$AUTH"}}],
                       "bravo": [limited()],
                       "charlie": [{"stream": sse_answer("hello", "world")}]},
                      {"alpha": 1, "bravo": 1, "charlie": 1}, body=STREAM,
                      out=[b"".join(sse_answer("hello", "world"))],
                      err=["alpha", "bravo", "charlie", "overloaded", "429"])

    def test_stream_cut_mid_body(self):
        self.scenario("stream-cut", {"alpha": [{"stream": [sse_role(), sse_token("partial")],
                                                "end": "cut"}]},
                      {"alpha": 1}, body=STREAM, rc=1, out=[b"partial"],
                      err=["alpha", "stream_failed"])

    def test_stream_stalls(self):
        self.scenario("stream-stall", {"alpha": [{"stream": [sse_role(), sse_token("slow")],
                                                  "end": "stall"}]},
                      {"alpha": 1}, body=STREAM, rc=1, out=[b"slow"],
                      err=["alpha", "stream_failed"])

    def test_stream_restart_on_the_fallback_model(self):
        self.scenario("stream-restart",
                      {"alpha": [{"stream": [sse_role(), sse_token("partial")], "end": "cut"}],
                       "delta": [{"stream": sse_answer("again")}]},
                      {"alpha": 1, "delta": 1}, body=STREAM_FALLBACK,
                      cfg=self.gateway(streamRestart=True),
                      out=[b"partial", b"aigw.reset", b"again"],
                      err=["alpha", "delta", "m2"])

    def test_fallback_model_and_inline_keys(self):
        self.scenario("fallback", {"alpha": [failing(500)], "bravo": [failing(500)],
                                   "charlie": [failing(500)], "delta": [limited()],
                                   "echo": [{"status": 200, "body": ECHO_OK}]},
                      {"alpha": 1, "bravo": 1, "charlie": 1, "delta": 1, "echo": 1},
                      body=REQUEST_FALLBACK, out=[b"you are Bearer [REDACTED]"],
                      err=["alpha", "bravo", "charlie", "delta", "echo", "m2"])

    def test_every_key_unauthorized(self):
        self.scenario("all-401", {k: [failing(401, ECHO_AUTH)] for k in
                                  ("alpha", "bravo", "charlie")},
                      {"alpha": 1, "bravo": 1, "charlie": 1}, rc=1,
                      out=[b'"code":"unauthorized"', b"aigw_error"],
                      err=["alpha", "bravo", "charlie", "401"])

    def test_every_key_rate_limited(self):
        # the second request is answered from memory: no upstream call
        self.scenario("all-429", {k: [limited()] for k in ("alpha", "bravo", "charlie")},
                      {"alpha": 1, "bravo": 1, "charlie": 1}, repeat=2, rc=1,
                      out=[b'"code":"rate_limited"'],
                      err=["alpha", "bravo", "charlie", "429", "key_cooling"])

    def test_every_key_failing(self):
        self.scenario("all-500", {k: [failing(500)] for k in ("alpha", "bravo", "charlie")},
                      {"alpha": 1, "bravo": 1, "charlie": 1}, rc=1,
                      out=[b'"code":"upstream_error"'], err=["alpha", "bravo", "charlie", "500"])

    def test_fail_fast_answer_echoing_the_key(self):
        self.scenario("fail-fast", {"alpha": [failing(400, b'{"error":{"message":"bad $AUTH"}}')]},
                      {"alpha": 1}, rc=1, out=[b'{"error":{"message":"bad Bearer [REDACTED]"}}'],
                      err=["alpha", "400", "fail_fast"])

    def test_ngrok_step(self):
        self.scenario("ngrok", {"oscar": [failing(401, ECHO_AUTH)],
                                "ngrok": [{"status": 200, "body": ECHO_OK}]},
                      {"oscar": 1, "ngrok": 1}, body=OPENAI, out=[b"you are Bearer [REDACTED]"],
                      err=["oscar", "ngrok", "managed_fallback"])
        self.scenario("ngrok-fails", {"oscar": [limited()], "ngrok": [failing(500)]},
                      {"oscar": 1, "ngrok": 1}, body=OPENAI, rc=1, out=[b'"error"'],
                      err=["oscar", "ngrok", "500"])

    def test_gateway_file_on_stdin(self):
        self.fake.script(self.S["ALPHA"], limited())
        text = json.dumps(self.gateway()).encode()
        p = self.aigw("request", "-c", "-", "-d", REQUEST, "--trace", "json", "--stats", "json",
                      stdin=text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.surface("aigw request -c - (stdin): stdout", p.stdout, [b"chatcmpl-fake"])
        self.surface("aigw request -c - (stdin): stderr", p.stderr,
                     ['"providerKeyId":"alpha"', '"providerKeyId":"bravo"', '"keys":['])
        self.counts({"alpha": 1, "bravo": 1})


# ---------------------------------------------------------------------------
# aigw validate (and request / serve on the same files): problems name
# paths, never values
# ---------------------------------------------------------------------------

class Validate(SecretsCase):

    def base(self):
        cfg = self.gateway()
        cfg["accessKeys"] = [{"id": "team-one", "value": self.S["ONE"],
                              "configuration": "sectest"},
                             {"id": "team-two", "valueFrom": {"env": "AIGW_SECTEST_TWO"},
                              "configuration": "sectest"}]
        cfg["gatewayConfig"]["healthStore"] = {"redis": {
            "url": "redis://127.0.0.1:6379/0", "keyPrefix": "sectest:",
            "password": {"valueFrom": {"env": "AIGW_SECTEST_REDIS_PW"}},
            "salt": self.S["REDIS_SALT"]}}
        return cfg

    @staticmethod
    def inline(cfg, i=0):
        return cfg["accessKeyConfiguration"]["router"]["rules"][1]["steps"][0]["keys"][i]

    INLINE = "accessKeyConfiguration.router.rules[1].steps[0].keys[%d]"

    def broken(self):
        """(name, file bytes, paths its problems must name, extra env)."""
        S = self.S
        out = []

        cfg = self.base()  # control characters inside values
        cfg["providerKeys"][0]["value"] = S["CTRL"]
        cfg["accessKeys"][0]["value"] = S["CRLF"]
        cfg["ngrokAccessKey"] = {"value": S["NGROK_LF"]}
        cfg["gatewayConfig"]["healthStore"]["redis"]["salt"] = S["DEL"]
        self.inline(cfg)["value"] = S["CRLF"]
        out.append(("control", json.dumps(cfg),
                    ["providerKeys[0].value", "accessKeys[0].value", "ngrokAccessKey.value",
                     "gatewayConfig.healthStore.redis.salt", self.INLINE % 0 + ".value"], {}))

        cfg = self.base()  # a NUL, escaped: the file is refused whole
        cfg["providerKeys"][0]["value"] = S["NUL"]
        out.append(("nul", json.dumps(cfg), ["invalid JSON (a NUL character)"], {}))

        cfg = self.base()  # longer than 8192 bytes
        cfg["providerKeys"][0]["value"] = S["LONG"]
        cfg["accessKeys"][0]["value"] = S["LONG"]
        cfg["gatewayConfig"]["healthStore"]["redis"]["password"] = {"value": S["LONG"]}
        cfg["ngrokAccessKey"] = S["LONG"]
        self.inline(cfg, 1)["value"] = S["LONG"]
        out.append(("too-long", json.dumps(cfg),
                    ["providerKeys[0].value", "accessKeys[0].value",
                     "gatewayConfig.healthStore.redis.password.value", "ngrokAccessKey",
                     self.INLINE % 1 + ".value"], {}))

        cfg = self.base()  # not UTF-8 (raw bytes in the file)
        cfg["providerKeys"][0]["value"] = "@@NONUTF8@@"
        cfg["accessKeys"][0]["value"] = "@@NONUTF8@@"
        cfg["gatewayConfig"]["healthStore"]["redis"]["salt"] = "@@NONUTF8@@"
        self.inline(cfg)["value"] = "@@NONUTF8@@"
        text = json.dumps(cfg).encode().replace(b"@@NONUTF8@@", S["NONUTF8"])
        out.append(("not-utf8", text,
                    ["providerKeys[0].value", "accessKeys[0].value",
                     "gatewayConfig.healthStore.redis.salt", self.INLINE % 0 + ".value"], {}))

        cfg = self.base()  # two access keys with one value
        cfg["accessKeys"][0]["value"] = S["DUP"]
        cfg["accessKeys"][1] = {"id": "team-two", "value": S["DUP"], "configuration": "sectest"}
        out.append(("duplicate-access-keys", json.dumps(cfg), ["accessKeys[1].value"], {}))

        cfg = self.base()  # wrong types right next to values
        cfg["providerKeys"][0] = {"id": "alpha", "providerId": "fake", "value": 12345,
                                  "valeu": S["ALPHA"]}
        cfg["providerKeys"][1] = {"id": "bravo", "providerId": "fake", "valueFrom": S["BRAVO"]}
        cfg["providerKeys"][2] = {"id": "charlie", "providerId": "fake", "value": S["CHARLIE"],
                                  "valueFrom": {"env": "AIGW_SECTEST_BRAVO"}}
        cfg["providerKeys"][3]["value"] = [S["OSCAR"]]
        cfg["ngrokAccessKey"] = [S["NGROK"]]
        cfg["accessKeys"][0] = {"id": "team-one", "value": S["ONE"], "configuration": 5}
        cfg["accessKeys"][1] = {"id": "team-two", "value": {"env": S["TWO"]},
                                "configuration": "sectest"}
        cfg["gatewayConfig"]["healthStore"]["redis"]["password"] = {
            "value": S["REDIS_PW"], "valueFrom": {"env": "AIGW_SECTEST_REDIS_PW"}}
        cfg["gatewayConfig"]["healthStore"]["redis"]["salt"] = {
            "value": S["REDIS_SALT"], "extra": S["REDIS_SALT"]}
        self.inline(cfg)["value"] = {"value": S["DELTA"]}
        self.inline(cfg, 1)["vaule"] = S["ECHO"]
        out.append(("types", json.dumps(cfg),
                    ["providerKeys[0].valeu", "providerKeys[0].value", "providerKeys[1].valueFrom",
                     "providerKeys[2]", "providerKeys[3].value", "ngrokAccessKey",
                     "accessKeys[0].configuration", "accessKeys[1].value",
                     "gatewayConfig.healthStore.redis.password",
                     "gatewayConfig.healthStore.redis.salt.extra",
                     self.INLINE % 0 + ".value", self.INLINE % 1 + ".vaule"], {}))

        cfg = self.base()  # bad values from the environment and from files
        cfg["providerKeys"][1]["valueFrom"] = {"env": "AIGW_SECTEST_BAD_CRLF"}
        cfg["providerKeys"][2]["valueFrom"] = {"file": World.write(
            "two-lines.key", S["CHARLIE"] + "\n" + S["FILE2"] + "\n")}
        cfg["providerKeys"][3] = {"id": "oscar", "providerId": "openai",
                                  "valueFrom": {"file": World.write("not-utf8.key",
                                                                    S["NONUTF8"])}}
        cfg["providerKeys"].append({"id": "xray", "providerId": "fake",
                                    "valueFrom": {"file": World.write("too-long.key",
                                                                      S["LONG"])}})
        cfg["providerKeys"].append({"id": "yankee", "providerId": "fake",
                                    "valueFrom": {"env": "AIGW_SECTEST_BAD_UTF8"}})
        cfg["accessKeys"][1]["valueFrom"] = {"env": "AIGW_SECTEST_BAD_LONG"}
        cfg["gatewayConfig"]["healthStore"]["redis"]["salt"] = {"valueFrom": {
            "file": World.write("huge.key", (S["LONG"] + "\n") * 8)}}
        cfg["gatewayConfig"]["healthStore"]["redis"]["password"] = {"valueFrom": {
            "file": World.write("ctrl-salt.key", S["CTRL"])}}
        env = {"AIGW_SECTEST_BAD_CRLF": S["ENV_CRLF"], "AIGW_SECTEST_BAD_LONG": S["LONG"],
               "AIGW_SECTEST_BAD_UTF8": S["NONUTF8_ENV"]}
        out.append(("env-and-files", json.dumps(cfg),
                    ["providerKeys[1].valueFrom.env", "providerKeys[2].valueFrom.file",
                     "providerKeys[3].valueFrom.file", "providerKeys[4].valueFrom.file",
                     "providerKeys[5].valueFrom.env", "accessKeys[1].valueFrom.env",
                     "gatewayConfig.healthStore.redis.salt.valueFrom.file",
                     "gatewayConfig.healthStore.redis.password.valueFrom.file"], env))

        for name, url in (("url-query", "redis://:%s@127.0.0.1:6379/0?db=1"),
                          ("url-tls", "rediss://aigw:%s@127.0.0.1:6379/0"),
                          ("url-port", "redis://:%s@127.0.0.1:99999/0")):
            cfg = self.base()
            redis = cfg["gatewayConfig"]["healthStore"]["redis"]
            redis["url"] = url % S["REDIS_PW"]
            del redis["password"]
            out.append((name, json.dumps(cfg), ["gatewayConfig.healthStore.redis.url"], {}))

        cfg = self.base()  # an ngrok access key next to a refused gateway URL
        cfg["ngrokAccessKey"] = S["NGROK"]
        cfg["ngrokGatewayUrl"] = "http://example.com/v1"
        out.append(("ngrok-url", json.dumps(cfg), ["ngrokGatewayUrl"], {}))

        # JSON syntax errors right after, and inside, a value
        text = json.dumps(self.base(), indent=1)
        out.append(("syntax", text.replace('"%s"' % S["ALPHA"], '"%s" oops' % S["ALPHA"]),
                    ["invalid JSON at line"], {}))
        out.append(("unterminated", text[:text.index(S["ONE"]) + len(S["ONE"])],
                    ["invalid JSON at line"], {}))
        return out

    def check_problems(self, where, p, paths, fname):
        self.assertEqual(p.returncode, 2, "%s: exit %d\n%s" % (where, p.returncode, p.stderr))
        self.assertEqual(p.stdout, b"", where)
        text = p.stderr.decode("utf-8", "replace")
        for path in paths:
            if path.startswith("invalid JSON"):
                self.assertIn("%s: %s" % (fname, path), text, where)
                continue
            pattern = re.escape(path)
            if not HAVE_REDIS_STORE and path.startswith("gatewayConfig.healthStore.redis"):
                # or "built without the Redis health store" at the section
                pattern = "(?:%s|gatewayConfig\\.healthStore\\.redis)" % pattern
            self.assertRegex(text, r"(?m)^%s: \S" % pattern, where)
        self.surface(where + ": stderr", p.stderr, [])

    def test_broken_files(self):
        for name, text, paths, extra in self.broken():
            with self.subTest(name):
                path = World.write("validate-%s.json" % name, text)
                env = dict(World.env)
                env.update(extra)
                p = self.aigw("validate", path, env=env)
                self.check_problems("aigw validate (%s)" % name, p, paths, path)
                p = self.aigw("validate", "-", stdin=as_bytes(text), env=env)
                self.check_problems("aigw validate - (%s)" % name, p, paths, "<stdin>")
                p = self.aigw("request", "-c", path, "-d", REQUEST, "--trace", "json",
                              "--stats", "json", env=env)
                self.check_problems("aigw request -c (%s)" % name, p, paths, path)
                p = self.aigw("serve", "-c", path, "--listen", "127.0.0.1:0", env=env,
                              timeout=10)
                self.check_problems("aigw serve -c (%s)" % name, p, paths, path)
        self.counts({})


# ---------------------------------------------------------------------------
# aigw serve: answers, headers, the access log, /metrics, reloads
# ---------------------------------------------------------------------------

class Gateway:
    """One `aigw serve` process; its stderr read as it comes."""

    def __init__(self, tc, config_path, *args):
        self.tc = tc
        self.proc = subprocess.Popen([AIGW, "serve", "-c", config_path, "--listen",
                                      "127.0.0.1:0"] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=World.env)
        self.err = [self.proc.stderr.readline()]
        m = re.match(rb"^listening on http://127\.0\.0\.1:(\d+)\n$", self.err[0])
        self.port = int(m.group(1)) if m else None
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stdout = b""
        if not m:
            self.stop()
            tc.fail("aigw serve did not start: %r" % self.stderr())

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.err.append(line)

    def stderr(self):
        with self.lock:
            return b"".join(self.err)

    def wait_stderr(self, what, timeout=5):
        deadline = time.monotonic() + timeout
        while what not in self.stderr() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stderr()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        self.reader.join(timeout=5)
        self.stdout = self.proc.stdout.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        for bad in (b"Sanitizer", b"runtime error:"):
            self.tc.assertNotIn(bad, self.stderr(), self.stderr().decode("utf-8", "replace"))
        return rc


class ServeCase(SecretsCase):

    def serve_gateway(self, **gw):
        cfg = self.gateway(**gw)
        cfg["accessKeys"] = [{"id": "team-one", "value": self.S["ONE"],
                              "configuration": "sectest"},
                             {"id": "team-two", "valueFrom": {"env": "AIGW_SECTEST_TWO"},
                              "configuration": "sectest"}]
        return cfg

    def near_miss(self, key):
        """A wrong access key sharing all but its last group with a real
        one: an answer or a log line that quoted it would show windows."""
        return key[:-6] + ("000000" if not key.endswith("000000") else "111111")

    def call(self, g, method, path, body=None, key=None, header="Authorization", extra=None,
             expect_status=None, expect=(), label=None):
        """One exchange; its status line, headers and body are one surface."""
        h = {"Content-Type": "application/json"}
        if key is not None:
            h[header] = ("Bearer " + key) if header == "Authorization" else key
        h.update(extra or {})
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
        conn.request(method, path, body=body.encode() if body else None, headers=h)
        resp = conn.getresponse()
        try:
            data = resp.read()
        except http.client.IncompleteRead as e:  # a broken stream has no clean end
            data = e.partial
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        if expect_status is not None:
            self.assertEqual(resp.status, expect_status, "%s %s: %r %r" % (
                method, path, hdrs, data[:2000]))
        text = ("HTTP %d\n" % resp.status).encode() + b"".join(
            ("%s: %s\n" % (k, v)).encode("utf-8", "surrogateescape")
            for k, v in resp.getheaders()) + b"\n" + data
        self.surface("aigw serve %s %s (%s): status, headers, body" % (
            method, path, label or resp.status), text, expect)
        return resp.status, hdrs, data


class Serve(ServeCase):

    def test_answers_log_metrics_and_reload(self):
        S, fake = self.S, self.fake
        cfg_path = self.config_file("serve-gateway.json", self.serve_gateway())
        log_path = os.path.join(World.tmp, "access.log")
        g = Gateway(self, cfg_path, "--access-log", log_path)
        try:
            self.exchanges(g, S, fake)
            self.reloads(g, cfg_path)
            self.call(g, "GET", "/metrics", key=S["ONE"], expect_status=200, expect=[
                'aigw_serve_requests_total{route="/v1/chat/completions",code="200"}',
                'aigw_serve_requests_total{route="/v1/chat/completions",code="401"}',
                'aigw_serve_requests_total{route="/v1/messages",code="502"}',
                'aigw_serve_config_reloads_total{result="failed"} 1',
                'aigw_serve_config_reloads_total{result="ok"} 1',
                'name="alpha"', 'name="bravo"', 'name="charlie"', 'name="delta"'],
                label="metrics")
        finally:
            rc = g.stop()
        self.assertEqual(rc, 0, g.stderr())
        self.assertEqual(g.stdout, b"")
        with open(log_path, "rb") as f:
            log = f.read()
        for line in log.splitlines():
            json.loads(line)
        self.surface("aigw serve --access-log FILE: the log", log, [
            '"accessKey":"team-one"', '"accessKey":"team-two"', '"status":401',
            '"status":429', '"status":502', '"key":"alpha"', '"key":"bravo"', '"key":"charlie"',
            '"key":"delta"', '"errorCode":"invalid_api_key"', '"outcome":"stream_failed"',
            '"route":"/metrics"', '"route":"/v1/models"'])
        self.surface("aigw serve --access-log FILE: stderr", g.stderr(), [
            "listening on http://127.0.0.1:", "reload of", "failed", "reloaded",
            "providerKeys[0].value", "accessKeys[0].value", "ngrokAccessKey"])

    def exchanges(self, g, S, fake):
        ONE, TWO = S["ONE"], S["TWO"]
        self.call(g, "GET", "/healthz", expect_status=200)
        # failover, whole: a 429 and a 200 that both echo the key
        fake.script(S["ALPHA"], limited())
        fake.script(S["BRAVO"], {"status": 200, "headers": {"X-Echo": "$AUTH"}, "body": ECHO_OK})
        _, h, data = self.call(g, "POST", "/v1/chat/completions", REQUEST, key=ONE,
                               expect_status=200, expect=[b"you are Bearer [REDACTED]"])
        self.assertEqual((h["x-aigw-attempts"], h["x-echo"]), ("2", "[REDACTED]"))
        self.counts({"alpha": 1, "bravo": 1})
        # wrong access keys, near misses of the real ones: 401, nothing sent
        fake.reset()
        self.call(g, "POST", "/v1/chat/completions", REQUEST, key=self.near_miss(ONE),
                  expect_status=401, expect=[b"invalid_api_key"], label="401 near miss")
        self.call(g, "POST", "/v1/messages", MESSAGES, key=self.near_miss(TWO),
                  header="x-api-key", extra={"anthropic-version": "2023-06-01"},
                  expect_status=401, expect=[b"authentication_error"], label="401 near miss")
        self.call(g, "POST", "/v1/chat/completions", REQUEST, expect_status=401,
                  label="401 no key")
        self.call(g, "GET", "/metrics", key=self.near_miss(ONE), expect_status=401,
                  label="401 near miss")
        # a real key in the wrong place: neither answers nor the log quote it
        self.call(g, "GET", "/v1/models?api_key=" + ONE, expect_status=401,
                  label="401 key in the query")
        self.call(g, "GET", "/v1/models", extra={"Authorization": "Token " + TWO},
                  expect_status=401, label="401 key with another scheme")
        self.call(g, "GET", "/v1/%s/models" % ONE, key=ONE, expect_status=404,
                  expect=[b'"code":"not_found"'], label="404 key in the path")
        self.counts({})
        # every key rate limited: 429 with Retry-After (alpha cools from before)
        fake.script(S["BRAVO"], limited())
        fake.script(S["CHARLIE"], limited())
        _, h, _ = self.call(g, "POST", "/v1/chat/completions", REQUEST, key=TWO,
                            expect_status=429, expect=[b'"code":"rate_limited"'])
        self.assertIn("retry-after", h)
        self.counts({"bravo": 1, "charlie": 1})
        # streams on the fallback model's inline keys: through failover before
        # the commit point (an in-band error echoing the key), then cut after it
        fake.reset()
        fake.script(S["DELTA"], {"stream": [ECHO_INBAND], "headers": {"X-Echo": "$AUTH"}})
        fake.script(S["ECHO"], {"stream": sse_answer("hello", "world")})
        m2_stream = json.dumps({"model": "fake:m2", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]})
        self.call(g, "POST", "/v1/chat/completions", m2_stream, key=ONE, expect_status=200,
                  expect=[b"".join(sse_answer("hello", "world"))], label="stream")
        self.counts({"delta": 1, "echo": 1})
        fake.reset()
        fake.script(S["DELTA"], {"stream": [sse_role(), sse_token("partial")], "end": "cut"})
        self.call(g, "POST", "/v1/chat/completions", m2_stream, key=TWO, expect_status=200,
                  expect=[b"partial", b"stream_failed"], label="stream cut")
        self.counts({"delta": 1})
        # every key failing: 502, OpenAI and Anthropic shapes
        fake.reset()
        fake.script(S["DELTA"], failing(500))
        fake.script(S["ECHO"], failing(503))
        body = json.dumps({"model": "fake:m2", "messages": [{"role": "user", "content": "hi"}]})
        self.call(g, "POST", "/v1/chat/completions", body, key=ONE, expect_status=502,
                  expect=[b'"code":"upstream_error"'])
        body = json.dumps({"model": "fake:m2", "max_tokens": 16,
                           "messages": [{"role": "user", "content": "hi"}]})
        self.call(g, "POST", "/v1/messages", body, key=TWO, header="x-api-key",
                  extra={"anthropic-version": "2023-06-01"}, expect_status=502,
                  expect=[b'"type":"error"', b"api_error"])
        self.counts({"delta": 2, "echo": 2})
        # an Anthropic stream after a 429 that echoes the key
        fake.reset()
        fake.script(S["DELTA"], failing(429, ECHO_RATE_LIMITED))
        fake.script(S["ECHO"], {"stream": anthropic_stream("bonjour")})
        body = json.dumps({"model": "fake:m2", "max_tokens": 16, "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        self.call(g, "POST", "/v1/messages", body, key=TWO, header="x-api-key",
                  extra={"anthropic-version": "2023-06-01"}, expect_status=200,
                  expect=[b"bonjour", b"message_stop"], label="anthropic stream")
        self.counts({"delta": 1, "echo": 1})
        # the openai rule: a fail-fast answer echoing the key, then every key
        # (the user key and the ngrok step) unauthorized, on /v1/responses
        fake.reset()
        fake.script(S["OSCAR"], failing(400, b'{"error":{"message":"bad $AUTH"}}'))
        self.call(g, "POST", "/v1/chat/completions", OPENAI, key=ONE, expect_status=400,
                  expect=[b"bad Bearer [REDACTED]"])
        self.counts({"oscar": 1})
        fake.reset()
        fake.script(S["OSCAR"], failing(401, ECHO_AUTH))
        fake.script(S["NGROK"], failing(401, ECHO_AUTH))
        self.call(g, "POST", "/v1/responses", json.dumps({"model": "openai:gpt-4o",
                                                          "input": "hi"}),
                  key=TWO, expect_status=401, expect=[b'"code":"unauthorized"'])
        self.counts({"oscar": 1, "ngrok": 1})
        # the models of the configuration, both shapes
        self.call(g, "GET", "/v1/models", key=ONE, expect_status=200,
                  expect=[b"fake:m1", b"fake:m2"])
        self.call(g, "GET", "/v1/models", key=TWO, header="x-api-key",
                  extra={"anthropic-version": "2023-06-01"}, expect_status=200,
                  expect=[b'"has_more"', b"fake:m2"], label="anthropic")

    def reloads(self, g, cfg_path):
        """SIGHUP with a file holding secrets in bad places: its problems on
        stderr, the old configuration kept; then a good one."""
        S = self.S
        with open(cfg_path, "rb") as f:
            good = f.read()
        bad = self.serve_gateway()
        bad["providerKeys"][0]["value"] = S["CTRL"]
        bad["accessKeys"][0]["value"] = [S["ONE"]]
        bad["ngrokAccessKey"] = S["LONG"]
        World.write(os.path.basename(cfg_path), json.dumps(bad))
        g.proc.send_signal(signal.SIGHUP)
        g.wait_stderr(b"the previous configuration stays")
        self.call(g, "GET", "/healthz", expect_status=200, label="after a failed reload")
        self.call(g, "GET", "/v1/models", key=S["ONE"], expect_status=200,
                  label="old key after a failed reload")
        World.write(os.path.basename(cfg_path), good)
        g.proc.send_signal(signal.SIGHUP)
        self.assertIn(b"reloaded", g.wait_stderr(b"reloaded"))

    def test_access_log_on_stderr(self):
        S, fake = self.S, self.fake
        g = Gateway(self, self.config_file("serve-stderr.json", self.serve_gateway()))
        try:
            fake.script(S["ALPHA"], failing(401, ECHO_AUTH))
            self.call(g, "POST", "/v1/chat/completions", REQUEST, key=S["TWO"],
                      expect_status=200, expect=[b"chatcmpl-fake"])
            self.call(g, "POST", "/v1/chat/completions", REQUEST, key=self.near_miss(S["TWO"]),
                      expect_status=401, label="401 near miss")
            fake.script(S["BRAVO"], failing(500))
            fake.script(S["CHARLIE"], {"sleep": 2.5})
            # alpha benched (skipped), bravo 500, charlie times out
            self.call(g, "POST", "/v1/chat/completions", REQUEST, key=S["ONE"],
                      expect=[b'"type":"aigw_error"'], label="bench, 500, timeout")
            self.counts({"alpha": 1, "bravo": 2, "charlie": 1})
        finally:
            rc = g.stop()
        self.assertEqual(rc, 0, g.stderr())
        lines = [l for l in g.stderr().splitlines() if l.startswith(b"{")]
        self.assertEqual(len(lines), 3, g.stderr())
        self.surface("aigw serve, access log on stderr", g.stderr(), [
            '"accessKey":"team-two"', '"accessKey":"team-one"', '"key":"alpha"',
            '"key":"bravo"', '"key":"charlie"', '"errorCode":"invalid_api_key"', '"status":401'])

class StreamEchoes(ServeCase):
    """A committed stream's upstream headers and bytes pass through
    lib/stream.c, not the whole-answer scrub: every copy of the key's value
    is replaced there too, even one split across two reads."""

    def exchange(self, chunks, headers=None):
        S = self.S
        g = Gateway(self, self.config_file("serve-stream-echo.json", self.serve_gateway()))
        try:
            self.fake.script(S["ALPHA"], {"stream": chunks, "headers": headers or {}})
            conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=15)
            conn.request("POST", "/v1/chat/completions", body=STREAM.encode(),
                         headers={"Authorization": "Bearer " + S["ONE"]})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        finally:
            self.assertEqual(g.stop(), 0, g.stderr())
        self.assertEqual(resp.status, 200)
        self.counts({"alpha": 1})
        return resp, body

    def test_committed_stream_headers_are_scrubbed(self):
        resp, body = self.exchange(sse_answer("hi"), {"X-Echo": "$AUTH"})
        self.assertEqual(body, b"".join(sse_answer("hi")))
        self.assertEqual(resp.getheader("x-echo"), "[REDACTED]")
        self.surface("aigw serve, a committed stream's headers",
                     "".join("%s: %s\n" % kv for kv in resp.getheaders()))

    def test_committed_stream_bytes_are_scrubbed(self):
        key = self.S["ALPHA"].encode()
        cut = len(key) // 2
        head = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"'
        tail = b'"}}]}\n\n'
        # whole in one read (after the commit point), then split across two
        # reads with a pause between, then a near miss that must pass as is
        chunks = sse_answer("hi")[:2] + [
            head + key + b" and $AUTH" + tail,
            head + key[:cut], 0.2, key[cut:] + tail,
            head + key[:-1] + b"!" + tail,
        ] + sse_answer()[1:]
        resp, body = self.exchange(chunks)
        want = b"".join(sse_answer("hi")[:2]) + (
            head + b"[REDACTED] and Bearer [REDACTED]" + tail +
            head + b"[REDACTED]" + tail +
            head + key[:-1] + b"!" + tail) + b"".join(sse_answer()[1:])
        self.assertEqual(body, want)
        self.surface("aigw serve, a committed stream's echoed bytes",
                     body.replace(key[:-1] + b"!", b"near miss"))


class Scan(SecretsCase):
    """The check itself."""

    def test_every_window_of_every_secret_is_found(self):
        sc = World.scanner
        for label, value in World.secrets.items():
            b = as_bytes(value)
            for i in (0, len(b) // 2, len(b) - 8):
                hits = sc.find(b"prefix " + b[i:i + 8] + b" suffix")
                self.assertTrue(hits, "%s: window %r not found" % (label, b[i:i + 8]))
            self.assertEqual(sc.find(b[:7] + b" " + b[7:14]), [],
                             "%s: a split window was found" % label)

    def test_a_window_on_stderr_fails_the_scan(self):
        window = World.secrets["ALPHA"][10:18]
        p = self.aigw("no-such-command-" + window)  # echoed in the usage error
        self.assertEqual(p.returncode, 2)
        with self.assertRaises(AssertionError):
            World.scanner.assert_clean(self, p.stderr, "stderr")

    def test_secrets_meet_none_of_the_test_own_names(self):
        self.assertEqual(collisions(World.secrets, World.plain_texts() + World.written), [])


# ---------------------------------------------------------------------------
# the Redis health store: every key name and value, and what aigw printed
# ---------------------------------------------------------------------------

class RespError(Exception):
    pass


class Resp:
    """Just enough of a RESP2 client: one command, one reply."""

    def __init__(self, port, password=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")
        if password is not None:
            self.call("AUTH", password)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = as_bytes(a if isinstance(a, (bytes, str)) else str(a))
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise RespError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RespError("unexpected reply %r" % line)

    def close(self):
        self.f.close()
        self.sock.close()


@unittest.skipUnless(HAVE_REDIS_STORE, "aigw was built without the Redis health store")
class RedisStore(ServeCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis_dir = tempfile.mkdtemp(prefix="redis-", dir=World.tmp)
        cls.redis = RedisServer(password=World.secrets["REDIS_PW"], directory=cls.redis_dir,
                                exe=REDIS_SERVER).start()
        cls.redis_port = cls.redis.port

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        super().tearDownClass()

    def store_gateway(self, prefix, db=0, password="env", salt="inline", **gw):
        S = self.S
        cfg = self.gateway(circuitBreaker={"failures": 1, "cooloff": "30s"}, **gw)
        dead = free_port()  # nothing listens there: the host breaker opens
        cfg["providers"].append({"providerId": "dead", "name": "Dead",
                                 "baseUrl": "http://127.0.0.1:%d/v1" % dead,
                                 "models": [{"modelId": "m3"}]})
        cfg["providerKeys"].append({"id": "xray", "providerId": "dead", "value": S["XRAY"]})
        redis = {"url": "redis://127.0.0.1:%d/%d" % (self.redis_port, db), "keyPrefix": prefix,
                 "timeout": "500ms"}
        if password == "env":
            redis["password"] = {"valueFrom": {"env": "AIGW_SECTEST_REDIS_PW"}}
        elif password == "url":
            redis["url"] = "redis://:%s@127.0.0.1:%d/%d" % (S["REDIS_PW"], self.redis_port, db)
        else:
            redis["password"] = password
        if salt == "inline":
            redis["salt"] = S["REDIS_SALT"]
        elif salt == "file":
            redis["salt"] = {"valueFrom": {"file": World.paths["salt"]}}
        cfg["gatewayConfig"]["healthStore"] = {"redis": redis}
        return cfg

    def run_store(self, name, cfg_path, mode, body, rc=0, expect_err=()):
        p = self.aigw("request", "-c", cfg_path, "-d", body, "--trace", mode, "--stats", mode,
                      "--repeat", "2")
        where = "aigw request (%s, Redis store) --trace %s --stats %s" % (name, mode, mode)
        self.assertEqual(p.returncode, rc, "%s: %s" % (where, p.stderr))
        self.surface(where + ": stdout", p.stdout, [b"chatcmpl-fake"])
        self.surface(where + ": stderr", p.stderr, tuple(expect_err) + Request.MODES[mode])
        return p

    def test_store_names_and_values(self):
        S, fake = self.S, self.fake
        body = json.dumps({"model": "fake:m1", "models": ["dead:m3", "fake:m2"],
                           "messages": [{"role": "user", "content": "hi"}]})
        # 429 cools alpha, 401 benches bravo, 500 opens charlie's breaker, the
        # dead host's breaker opens, delta (an inline key) serves; the quota
        # bench on oscar through the ngrok step
        path = self.config_file("redis-store.json", self.store_gateway("sectest:"))
        fake.script(S["ALPHA"], limited())
        fake.script(S["BRAVO"], failing(401, ECHO_AUTH))
        fake.script(S["CHARLIE"], failing(500))
        fake.script(S["DELTA"], {"status": 200})
        p = self.run_store("first process", path, "json", body, expect_err=[
            '"healthStore":{"kind":"redis","state":"connected"', '"providerKeyId":"xray"',
            '"reason":"key_cooling"'])
        stats = json.loads(p.stderr.splitlines()[-1])
        self.assertGreaterEqual(stats["healthStore"]["writes"], 4, stats["healthStore"])
        self.counts({"alpha": 1, "bravo": 1, "charlie": 1, "delta": 2})
        # another process of the fleet learns it all from Redis
        fake.reset()
        fake.script(S["DELTA"], {"status": 200})
        self.run_store("second process", path, "human", body, expect_err=[
            "key_cooling", "key_benched", "circuit_open", "host_circuit_open",
            "health store: redis (connected)"])
        self.counts({"delta": 2})
        # the quota bench, through the openai rule
        fake.reset()
        fake.script(S["OSCAR"], failing(429, QUOTA))
        fake.script(S["NGROK"], {"status": 200})
        self.run_store("quota", path, "json", OPENAI, expect_err=['"providerKeyId":"ngrok"'])
        self.counts({"oscar": 1, "ngrok": 2})
        # the password in the URL, the salt from a file, another database
        fake.reset()
        fake.script(S["ALPHA"], limited())
        path = self.config_file("redis-url.json", self.store_gateway(
            "sectest-url:", db=1, password="url", salt="file"))
        self.run_store("password in the URL", path, "json", REQUEST, expect_err=[
            '"healthStore":{"kind":"redis","state":"connected"'])
        self.counts({"alpha": 1, "bravo": 2})
        # a wrong password: the client goes on alone, saying so, not why in bytes
        fake.reset()
        fake.script(S["ALPHA"], limited())
        path = self.config_file("redis-wrong.json", self.store_gateway(
            "sectest-wrong:", password=S["WRONG_PW"]))
        self.run_store("wrong password", path, "json", REQUEST, expect_err=[
            '"healthStore":{"kind":"redis","state":"fallback"'])
        self.counts({"alpha": 1, "bravo": 2})
        self.serve_with_store()
        self.dump_store()

    def serve_with_store(self):
        S, fake = self.S, self.fake
        fake.reset()
        cfg = self.store_gateway("sectest-serve:")
        cfg["accessKeys"] = self.serve_gateway()["accessKeys"]
        g = Gateway(self, self.config_file("redis-serve.json", cfg))
        try:
            fake.script(S["ALPHA"], limited())
            fake.script(S["BRAVO"], failing(403, ECHO_AUTH))
            self.call(g, "POST", "/v1/chat/completions", REQUEST, key=S["ONE"],
                      expect_status=200, label="Redis store")
            self.call(g, "GET", "/metrics", key=S["TWO"], expect_status=200,
                      expect=['name="alpha"', 'state="cooling"'], label="metrics, Redis store")
            self.counts({"alpha": 1, "bravo": 1, "charlie": 1})
        finally:
            rc = g.stop()
        self.assertEqual(rc, 0, g.stderr())
        self.surface("aigw serve (Redis store): stderr and access log", g.stderr(),
                     ['"key":"alpha"', '"key":"bravo"', '"accessKey":"team-one"'])

    def dump_store(self):
        """Every name and value in every database: SCAN, TYPE, then the
        value read by its type."""
        r = Resp(self.redis_port, self.S["REDIS_PW"])
        facts = []
        try:
            info = r.call("INFO", "keyspace").decode()
            dbs = sorted(int(m) for m in re.findall(r"(?m)^db(\d+):", info))
            self.assertEqual(dbs, [0, 1], info)
            for db in dbs:
                r.call("SELECT", db)
                cursor, names = b"0", []
                while True:
                    cursor, batch = r.call("SCAN", cursor, "COUNT", 1000)
                    names.extend(batch)
                    if cursor == b"0":
                        break
                for name in sorted(set(names)):
                    kind = r.call("TYPE", name)
                    if kind == b"string":
                        value = r.call("GET", name)
                    elif kind == b"hash":
                        value = b"\n".join(r.call("HGETALL", name))
                    elif kind == b"list":
                        value = b"\n".join(r.call("LRANGE", name, 0, -1))
                    elif kind == b"set":
                        value = b"\n".join(r.call("SMEMBERS", name))
                    elif kind == b"zset":
                        value = b"\n".join(r.call("ZRANGE", name, 0, -1, "WITHSCORES"))
                    else:
                        value = repr(r.call("DUMP", name)).encode()
                    ttl = r.call("PTTL", name)
                    facts.append((db, name, kind, value, ttl))
        finally:
            r.close()
        for db, name, kind, value, ttl in facts:
            self.surface("Redis db%d %s (%s)" % (db, name.decode("latin-1"), kind.decode()),
                         b"%s\n%s" % (name, value), [])
            self.assertGreater(ttl, 0, "a fact without an expiry: %r" % ((name, value),))
        names = {(db, n) for db, n, _, _, _ in facts}
        everything = b"\n".join(b"db%d %s %s" % (db, n, v) for db, n, _, v, _ in facts)
        # what the scenarios must have written, under each prefix
        for prefix, db, kinds in (("sectest:", 0, ("b:", "c:", "o:", "h:")),
                                  ("sectest-url:", 1, ("c:",)),
                                  ("sectest-serve:", 0, ("b:", "c:"))):
            for k in kinds:
                self.assertTrue(any(d == db and n.startswith((prefix + k).encode())
                                    for d, n in names), "no %s%s name in db%d:\n%s" % (
                                        prefix, k, db, everything.decode("latin-1")))
        self.assertFalse(any(n.startswith(b"sectest-wrong:") for _, n in names), everything)
        self.surface("Redis: every name and value", everything, [
            "bench auth", "bench quota", "cool", "open server", "open network"])


if __name__ == "__main__":
    if not AIGW:
        sys.stderr.write("set AIGW_BIN to the aigw binary\n")
        sys.exit(2)
    if not REDIS_SERVER:
        print("redis-server is not installed (scripts/deps.sh installs it): skipped")
        sys.exit(77)
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() and prog.result.testsRun > 0 else 1)
