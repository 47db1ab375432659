#!/usr/bin/env python3
"""test_cli.py - the `aigw` command, end to end.

Drives the built binary (env AIGW_BIN; AIGW_LIB names libaigw.so) against a
fake provider written here: a ThreadingHTTPServer on 127.0.0.1, scripted per
credential (status, headers, body, close without answering, sleep, echo the
Authorization header, or a Server-Sent Events stream written chunk by chunk
that ends cleanly, is cut mid-body or stalls), counting what it receives per
key.

The canary classes run every scenario again with key values such as
"sk-canary-0123456789abcdef" (inline, and through valueFrom env and file),
plus configuration errors placed right next to a key value and an upstream
that echoes the key back, and check that no 8-character piece of any key
value shows on stdout or stderr (the trace included) of any run.

Python 3 standard library only.  Exits non-zero when a test fails.
"""
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from fake_provider import (FakeProvider, SSE_OVERLOADED, completion,  # noqa: E402
                           sse_answer, sse_role, sse_token)
from redis_server import RedisServer, free_port  # noqa: E402

AIGW = os.environ.get("AIGW_BIN", "")
AIGW_LIB = os.environ.get("AIGW_LIB", "")
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "ngrok-docs")

REQUEST = b'{"model":"fake:m1","messages":[{"role":"user","content":"hi"}]}'
REQUEST_UP = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
RATE_LIMITED = b'{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}'
# Served body with odd bytes: UTF-8, an escape, a tab, a NUL, 0xff, a CR,
# and no trailing newline.
ODD_BODY = (b'{"id":"chatcmpl-1","choices":[{"message":{"content":"h\xc3\xa9llo '
            b'\xe2\x98\x83 \\u00e9\t"}}]}\x00\xff\r  ')

# Streams: an OpenAI chat-completions SSE stream, chunk by chunk.
STREAM_REQUEST = b'{"model":"fake:m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
STREAM_REQUEST_UP = b'{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
STREAM_REQUEST_FB = (b'{"model":"fake:m1","models":["fake:m2"],"stream":true,'
                     b'"messages":[{"role":"user","content":"hi"}]}')
STREAM_REQUEST_M2_UP = b'{"model":"m2","stream":true,"messages":[{"role":"user","content":"hi"}]}'


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

EVENT_FIELDS = {"attemptNumber", "provider", "model", "statusCode", "isError", "keySource",
                "providerKeyId"}
ATTEMPT_FIELDS = {"event", "served", "retryAction", "completion", "upstreamDurationMs"}
# Present in the library's trace beyond ngrok's shape (README: "...").
ATTEMPT_EXTRA = {"step", "errorClass", "transportError", "requestedWaitMs", "waitedMs"}
# ... and for streamed attempts
STREAM_EXTRA = {"timeToFirstByteMs", "timeToFirstTokenMs", "malformedEvents", "streamError"}
SUMMARY_FIELDS = {"requestId", "attempts", "outcome", "model"}
SUMMARY_EXTRA = {"statusCode", "errorCode", "skipped", "healthStore"}
VERDICTS = {"succeeded", "next_key", "next_quota_pool", "next_backend", "managed_fallback",
            "retry_same_backend", "fail_fast", "exhausted"}
PATH_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*)*: \S")


class CliBase(unittest.TestCase):
    """Every scenario; subclasses change where the key values come from."""

    # (primary, backup, third) key values, and how the first two are given
    KEYS = ("sk-test-primary-1111", "sk-test-backup-2222", "sk-test-third-3333")
    SOURCE = "inline"  # or "valueFrom": primary from a file, backup from env
    fake = None

    @classmethod
    def setUpClass(cls):
        if not AIGW or not os.access(AIGW, os.X_OK):
            raise unittest.SkipTest("AIGW_BIN is not an executable: %r" % AIGW)
        cls.fake = FakeProvider()
        cls.tmp = tempfile.mkdtemp(prefix="aigw-cli-")

    @classmethod
    def tearDownClass(cls):
        if cls.fake:
            cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.fake.reset()
        self.runs = []

    # ---- running aigw ----

    def env(self):
        env = dict(os.environ)
        if AIGW_LIB:
            d = os.path.dirname(AIGW_LIB)
            env["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"]
                                          if env.get("LD_LIBRARY_PATH") else "")
        env["AIGW_TEST_BACKUP_KEY"] = self.KEYS[1]
        env.pop("AIGW_TEST_UNSET_VAR", None)
        return env

    def aigw(self, *args, stdin=b"", env=None, timeout=30):
        p = subprocess.run([AIGW] + list(args), input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env or self.env(), timeout=timeout)
        self.runs.append(p)
        self.check_run(p)
        return p

    def aigw_timed(self, *args, timeout=30):
        """Like aigw(), reading stdout as it comes: (run, seconds from the start
        to the first stdout bytes, seconds to the end of the run)."""
        t0 = time.monotonic()
        proc = subprocess.Popen([AIGW] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        err = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        out, first = [], None
        fd = proc.stdout.fileno()
        try:
            while True:
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                r, _, _ = select.select([fd], [], [], left)
                if not r:
                    continue
                b = os.read(fd, 65536)
                if not b:
                    break
                if first is None:
                    first = time.monotonic() - t0
                out.append(b)
            proc.wait(max(t0 + timeout - time.monotonic(), 0.1))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        end = time.monotonic() - t0
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
        p = subprocess.CompletedProcess(proc.args, proc.returncode, b"".join(out),
                                        err[0] if err else b"")
        self.runs.append(p)
        self.check_run(p)
        return p, first, end

    def check_run(self, p):
        """Checks made on every run; the canary classes add theirs."""
        # A sanitizer report means a memory or UB bug, whatever the exit code.
        self.assertNotIn(b"Sanitizer", p.stderr, p.stderr.decode("utf-8", "replace"))
        self.assertNotIn(b"runtime error:", p.stderr, p.stderr.decode("utf-8", "replace"))

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return path

    # ---- gateway files ----

    def key_entries(self):
        a, b, c = self.KEYS
        if self.SOURCE == "valueFrom":
            kf = self.write("primary_secret.txt", a + "\n")
            ka = {"id": "primary", "providerId": "fake", "name": "p", "valueFrom": {"file": kf}}
            kb = {"id": "backup", "providerId": "fake", "name": "b",
                  "valueFrom": {"env": "AIGW_TEST_BACKUP_KEY"}}
        else:
            ka = {"id": "primary", "providerId": "fake", "name": "p", "value": a}
            kb = {"id": "backup", "providerId": "fake", "name": "b", "value": b}
        kc = {"id": "third", "providerId": "fake", "name": "t", "value": c}
        return [ka, kb, kc]

    def gateway(self, **gw):
        cfg = {
            "providers": [{"providerId": "fake", "name": "Fake", "baseUrl": self.fake.base_url}],
            "providerKeys": self.key_entries(),
            "accessKeyConfiguration": {
                "name": "cli",
                "router": {"rules": [{"provider": "fake", "steps": [
                    {"type": "user", "keySelectionStrategy": "ordered",
                     "keys": [{"id": "primary"}, {"id": "backup"}]},
                    {"type": "user", "keys": [{"id": "third"}]}]}]}},
            "gatewayConfig": dict({"perRequestTimeout": "3s", "totalTimeout": "10s",
                                   "retryAfterMax": "1s", "sameBackendRetries": 0}, **gw),
        }
        return cfg

    def config_file(self, cfg=None, name="gateway.json"):
        return self.write(name, json.dumps(cfg if cfg is not None else self.gateway()))

    def request(self, *extra, cfg=None, data=REQUEST, stdin=b""):
        args = ["request", "-c", self.config_file(cfg)]
        if data is not None:
            args += ["-d", data.decode() if isinstance(data, bytes) else data]
        return self.aigw(*(args + list(extra)), stdin=stdin)

    def trace(self, p):
        """The --trace json lines: (attempt records, summary)."""
        lines = [l for l in p.stderr.decode().splitlines() if l.startswith("{")]
        self.assertGreaterEqual(len(lines), 2, p.stderr)
        objs = [json.loads(l) for l in lines]
        return objs[:-1], objs[-1]

    def check_trace(self, p, want, models=None, stream=False):
        """Checks the trace's shape and its (providerKeyId, retryAction) list;
        models: each attempt's model (default all "m1"); stream: the
        streamed-attempt fields and completion "stream_failed" are allowed."""
        attempts, summary = self.trace(p)
        extra = ATTEMPT_EXTRA | (STREAM_EXTRA if stream else set())
        completions = {"succeeded", "failed", "timed_out"} | ({"stream_failed"} if stream else set())
        for i, a in enumerate(attempts):
            self.assertEqual(set(a["event"]), EVENT_FIELDS, a)
            self.assertTrue(ATTEMPT_FIELDS <= set(a), a)
            self.assertTrue(set(a) - {"event"} <= ATTEMPT_FIELDS | extra,
                            set(a) - ATTEMPT_FIELDS - extra)
            ev = a["event"]
            self.assertEqual(ev["attemptNumber"], i + 1)
            self.assertEqual(ev["provider"], "fake")
            self.assertEqual(ev["model"], models[i] if models else "m1")
            self.assertIsInstance(ev["statusCode"], int)
            self.assertIs(ev["isError"], not a["served"])
            self.assertEqual(ev["keySource"], "user")
            self.assertIsInstance(a["served"], bool)
            self.assertIn(a["retryAction"], VERDICTS)
            self.assertIn(a["completion"], completions)
            self.assertIsInstance(a["upstreamDurationMs"], int)
            self.assertGreaterEqual(a["upstreamDurationMs"], 0)
        self.assertTrue(SUMMARY_FIELDS <= set(summary), summary)
        self.assertTrue(set(summary) <= SUMMARY_FIELDS | SUMMARY_EXTRA, summary)
        self.assertRegex(summary["requestId"], r"^rq_[0-9A-Za-z]{26}$")
        self.assertEqual(summary["attempts"], len(attempts))
        got = [(a["event"]["providerKeyId"], a["retryAction"]) for a in attempts]
        self.assertEqual(got, want)
        return attempts, summary

    # ---- help, usage ----

    def test_no_args_prints_help(self):
        p = self.aigw()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"Usage:", p.stdout)
        for cmd in (b"aigw validate FILE", b"aigw request -c FILE", b"aigw demo"):
            self.assertIn(cmd, p.stdout)

    def test_unknown_command_exit_2(self):
        p = self.aigw("frobnicate")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"frobnicate", p.stderr)
        self.assertEqual(p.stdout, b"")

    def test_request_usage_errors_exit_2(self):
        for args in (["request"], ["request", "-c"], ["request", "-c", "x", "--bogus"],
                     ["request", "-c", "x", "--trace", "text"], ["validate"],
                     ["validate", "a", "b"], ["demo", "extra"]):
            p = self.aigw(*args)
            self.assertEqual(p.returncode, 2, args)
        self.assertEqual(self.fake.count(), 0)

    # ---- validate ----

    def test_validate_ngrok_doc_fixtures(self):
        names = sorted(n for n in os.listdir(FIXTURES)
                       if "-akc-" in n and n[:2].isdigit() and 1 <= int(n[:2]) <= 9)
        self.assertGreaterEqual(len(names), 6)
        failed = []
        for n in names:
            p = self.aigw("validate", os.path.join(FIXTURES, n))
            if p.returncode != 0:
                failed.append("%s: exit %d: %s" % (n, p.returncode, p.stderr.decode().strip()))
            else:
                self.assertIn(b"valid", p.stdout)
        self.assertEqual(failed, [])

    def test_validate_gateway_file(self):
        p = self.aigw("validate", self.config_file())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"valid", p.stdout)

    def test_validate_every_problem_with_its_path(self):
        cfg = self.gateway()
        cfg["providerKeys"][1] = {"id": "backup", "providerId": "fake", "name": "b",
                                  "valueFrom": {"env": "AIGW_TEST_UNSET_VAR"}}
        cfg["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"][1] = \
            {"id": "aigpk_nope"}
        cfg["gatewayConfig"]["perRequestTimeout"] = "soon"
        p = self.aigw("validate", self.config_file(cfg))
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, b"")
        lines = p.stderr.decode().splitlines()
        for l in lines:
            self.assertRegex(l, PATH_LINE)
        paths = sorted(l.split(": ", 1)[0] for l in lines)
        self.assertEqual(paths, sorted([
            "accessKeyConfiguration.router.rules[0].steps[0].keys[1].id",
            "providerKeys[1].valueFrom.env",
            "gatewayConfig.perRequestTimeout"]), p.stderr)
        self.assertIn("AIGW_TEST_UNSET_VAR", p.stderr.decode())

    def test_validate_invalid_json_and_missing_file(self):
        p = self.aigw("validate", self.write("broken.json", b'{"providers": [ }'))
        self.assertEqual(p.returncode, 2)
        self.assertNotEqual(p.stderr, b"")
        p = self.aigw("validate", os.path.join(self.tmp, "no-such-file.json"))
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"no-such-file.json", p.stderr)

    def test_validate_names_the_file(self):
        """Problems of the file as a whole name it: FILE: problem."""
        for name, text in (("empty.json", b""), ("blank.json", b" \n\t\r\n")):
            path = self.write(name, text)
            p = self.aigw("validate", path)
            self.assertEqual(p.returncode, 2)
            self.assertEqual(p.stdout, b"")
            self.assertEqual(p.stderr.decode(), "%s: empty file\n" % path)
        path = self.write("broken.json", b'{\n  "providers": [\n    }\n')
        p = self.aigw("validate", path)
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr.decode(),
                         r"^%s: invalid JSON at line 3, column \d+\n$" % re.escape(path))
        path = self.write("array.json", b"[1, 2]")
        p = self.aigw("validate", path)
        self.assertEqual(p.returncode, 2)
        self.assertTrue(p.stderr.decode().startswith(path + ": "), p.stderr)
        # the same through `request -c`, nothing sent
        p = self.aigw("request", "-c", self.write("empty2.json", b""), "-d", REQUEST.decode())
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"empty2.json: empty file", p.stderr)
        self.assertEqual(self.fake.count(), 0)

    def test_validate_stdin(self):
        text = json.dumps(self.gateway()).encode()
        p = self.aigw("validate", "-", stdin=text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"<stdin>: valid\n")
        with open(os.path.join(FIXTURES, "01-akc-create-production-openai-byok.json"), "rb") as f:
            p = self.aigw("validate", "-", stdin=f.read())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"<stdin>: valid (bare access key configuration)\n")
        p = self.aigw("validate", "-", stdin=b"")
        self.assertEqual((p.returncode, p.stderr), (2, b"<stdin>: empty file\n"))
        p = self.aigw("validate", "-", stdin=b'{"providers":\n  [1,\n')
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr.decode(), r"^<stdin>: invalid JSON at line \d+, column \d+\n$")
        cfg = self.gateway()
        cfg["gatewayConfig"]["perRequestTimeout"] = "soon"
        p = self.aigw("validate", "-", stdin=json.dumps(cfg).encode())
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"gatewayConfig.perRequestTimeout: ", p.stderr)

    def test_request_config_from_stdin(self):
        p = self.aigw("request", "-c", "-", "-d", REQUEST.decode(),
                      stdin=json.dumps(self.gateway()).encode())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        # stdin cannot hold both the file and the body
        for args in (["-c", "-"], ["-c", "-", "-d", "-"]):
            p = self.aigw("request", *args, stdin=json.dumps(self.gateway()).encode())
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"-c -", p.stderr)
        self.assertEqual(self.fake.count(), 1)

    # ---- validate: ngrok's other resource bodies ----

    OTHER_BODIES = (
        ("14-api-provider-key-create.json",
         "this looks like a provider key (ngrok's POST /provider-keys body): "
         "put it in the gateway file's \"providerKeys\" list"),
        ("16-api-custom-provider-create.json",
         "this looks like a custom provider (ngrok's POST /providers body): "
         "put it in the gateway file's \"providers\" list"),
        ("17-api-gateway-config-patch.json",
         "this looks like a gateway configuration (ngrok's PATCH /gateway-config body): "
         "put it in the gateway file as its \"gatewayConfig\" object"),
        ("21-req-fallback-model-ids.json", "this looks like a request body"),
        ("20-api-usage-request-attempts-response.json",
         "this looks like a request's attempt record"),
    )

    def test_validate_other_ngrok_bodies(self):
        for name, says in self.OTHER_BODIES:
            path = os.path.join(FIXTURES, name)
            p = self.aigw("validate", path)
            self.assertEqual(p.returncode, 2, name)
            self.assertEqual(p.stdout, b"", name)
            lines = p.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, lines)  # that, not a list of unknown fields
            self.assertTrue(lines[0].startswith("%s: %s" % (path, says)), lines)
            with open(path, "rb") as f:
                p = self.aigw("validate", "-", stdin=f.read())
            self.assertTrue(p.stderr.decode().startswith("<stdin>: " + says), p.stderr)
            p = self.aigw("request", "-c", path, "-d", REQUEST.decode())
            self.assertEqual(p.returncode, 2)
            self.assertIn(says.encode(), p.stderr)
        self.assertEqual(self.fake.count(), 0)

    def test_validate_other_bodies_follow_the_advice(self):
        """Each body where the message puts it makes a valid gateway file."""
        def fixture(name):
            with open(os.path.join(FIXTURES, name)) as f:
                return json.load(f)
        cfg = self.gateway()
        cfg["providerKeys"].append(dict(fixture("14-api-provider-key-create.json"), id="k14"))
        cfg["providers"].append(fixture("16-api-custom-provider-create.json"))
        cfg["gatewayConfig"] = fixture("17-api-gateway-config-patch.json")
        p = self.aigw("validate", self.config_file(cfg))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_validate_provider_key_body_holds_no_secret_in_output(self):
        """A provider key body with a real value (inline or from env): the
        message names it, never shows the value (the canary classes check)."""
        for body in ({"providerId": "fake", "name": "k", "value": self.KEYS[0]},
                     {"providerId": "fake", "name": "k",
                      "valueFrom": {"env": "AIGW_TEST_BACKUP_KEY"}}):
            p = self.aigw("validate", self.write("key-body.json", json.dumps(body)))
            self.assertEqual(p.returncode, 2)
            self.assertIn(b"this looks like a provider key", p.stderr)
            p = self.aigw("validate", "-", stdin=json.dumps(body).encode())
            self.assertIn(b"<stdin>: this looks like a provider key", p.stderr)

    # ---- request ----

    def test_request_served_byte_for_byte(self):
        self.fake.script(self.KEYS[0], {"status": 200, "body": ODD_BODY})
        p = self.request()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ODD_BODY)
        self.assertEqual(p.stderr, b"")
        self.assertEqual(self.fake.requests, [(self.KEYS[0], "/v1/chat/completions", REQUEST_UP)])

    def test_request_body_from_file_and_stdin(self):
        body = (b'{"model":"fake:m1","models":[],"messages":[{"role":"user",'
                b'"content":"\xe2\x98\x83 from a file"}]}\n')
        up = b'{"model":"m1","messages":[{"role":"user","content":"\xe2\x98\x83 from a file"}]}\n'
        f = self.write("body.json", body)
        p = self.request(data="@" + f)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.request(data="-", stdin=body)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.request(data=None, stdin=body)  # no -d: stdin
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([r[2] for r in self.fake.requests], [up, up, up])
        p = self.request(data="@" + os.path.join(self.tmp, "missing-body.json"))
        self.assertEqual(p.returncode, 2)
        self.assertEqual(self.fake.count(), 3)

    def test_request_path(self):
        for path in ("/v1/chat/completions", "/chat/completions"):
            p = self.request("--path", path)
            self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([r[1] for r in self.fake.requests],
                         ["/v1/chat/completions", "/v1/chat/completions"])

    def test_trace_json_fields(self):
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        attempts, summary = self.check_trace(p, [("primary", "succeeded")])
        self.assertEqual(len(p.stderr.decode().splitlines()), 2)  # nothing else
        a = attempts[0]
        self.assertEqual(a["event"]["statusCode"], 200)
        self.assertIs(a["served"], True)
        self.assertIs(a["event"]["isError"], False)
        self.assertEqual(a["completion"], "succeeded")
        self.assertEqual(summary["outcome"], "served")
        self.assertEqual(summary["model"], "m1")
        self.assertEqual(summary["attempts"], 1)

    def test_failover_429_to_backup(self):
        self.fake.script(self.KEYS[0], {"status": 429, "body": RATE_LIMITED})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        attempts, _ = self.check_trace(p, [("primary", "next_key"), ("backup", "succeeded")])
        self.assertEqual(attempts[0]["event"]["statusCode"], 429)
        self.assertEqual(attempts[0]["completion"], "failed")
        self.assertEqual(self.fake.count(self.KEYS[0]), 1)
        self.assertEqual(self.fake.count(self.KEYS[1]), 1)
        self.assertEqual(self.fake.count(), 2)

    def test_close_and_timeout_move_to_next_step(self):
        self.fake.script(self.KEYS[0], {"close": True})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.check_trace(p, [("primary", "next_backend"), ("third", "succeeded")])
        self.assertEqual((self.fake.count(self.KEYS[0]), self.fake.count(self.KEYS[1]),
                          self.fake.count(self.KEYS[2])), (1, 0, 1))
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"sleep": 1.0, "status": 200})
        t0 = time.monotonic()
        p = self.request("--trace", "json", cfg=self.gateway(perRequestTimeout="300ms"))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(p.returncode, 0, p.stderr)
        attempts, _ = self.check_trace(p, [("primary", "next_backend"), ("third", "succeeded")])
        self.assertEqual(attempts[0]["completion"], "timed_out")
        self.assertEqual(attempts[0]["event"]["statusCode"], 0)
        self.assertEqual((self.fake.count(self.KEYS[0]), self.fake.count(self.KEYS[1])), (1, 0))

    # ---- --trace human ----

    ROW = r"^  attempt (\d+)  fake/m1  key (\S+) +(HTTP \d+|[a-z_]+) +(\S+) +-> (\S+)  \(\d+ ms"

    def human_rows(self, p):
        """The attempt rows of --trace human: [(number, key, http, class, verdict)]."""
        return [re.match(self.ROW, l).groups() for l in p.stderr.decode().splitlines()
                if re.match(self.ROW, l)]

    def test_trace_human(self):
        self.fake.script(self.KEYS[0], {"status": 429, "body": RATE_LIMITED,
                                        "headers": {"Retry-After": "30"}})
        p = self.request("--trace", "human")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(self.human_rows(p), [
            ("1", "primary", "HTTP 429", "rate_limit", "next_key"),
            ("2", "backup", "HTTP 200", "ok", "succeeded")])
        self.assertRegex(lines[2], r"^aigw: request rq_[0-9A-Za-z]{26} served: HTTP 200 "
                                   r"\(model m1\) after 2 attempts$")
        for l in lines:
            self.assertFalse(l.startswith("{"), l)  # no JSON
        # repeated: the cooling key is a skip row; a bare --stats is the table
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"status": 429, "body": RATE_LIMITED,
                                        "headers": {"Retry-After": "30"}})
        p = self.request("--trace=human", "--repeat", "2", "--stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        err = p.stderr.decode()
        self.assertRegex(err, r"(?m)^  skipped    fake/m1  key primary +key_cooling  "
                              r"\(\d+\.\ds left\), no upstream call$")
        self.assertEqual(len(re.findall(r"(?m)^aigw: request rq_\S+ served: ", err)), 2)
        self.assertIn("retry budget: requests 2", err)
        self.assertEqual(self.counts(), (1, 2, 0))

    def test_trace_human_failures(self):
        self.fake.script(self.KEYS[0], {"close": True})
        for k in self.KEYS[1:]:
            self.fake.script(k, {"status": 429, "body": RATE_LIMITED})
        p = self.request("--trace", "human")
        self.assertEqual(p.returncode, 1)
        rows = self.human_rows(p)
        self.assertEqual([(r[0], r[1], r[4]) for r in rows],
                         [("1", "primary", "next_backend"), ("2", "third", "exhausted")])
        self.assertNotEqual(rows[0][2].split()[0], "HTTP")  # no answer: the transport error
        self.assertEqual(rows[0][3], "network")
        self.assertEqual(rows[1][2:4], ("HTTP 429", "rate_limit"))
        self.assertRegex(p.stderr.decode().splitlines()[-1],
                         r"^aigw: request rq_\S+ ended exhausted: HTTP \d+ \S+ after 2 attempts$")

    def test_fail_fast_400(self):
        upstream = (b'{"error":{"message":"Invalid value for \'temperature\': \xc3\xa9",'
                    b'"type":"invalid_request_error","param":"temperature","code":null}}')
        self.fake.script(self.KEYS[0], {"status": 400, "body": upstream})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, upstream)
        _, summary = self.check_trace(p, [("primary", "fail_fast")])
        self.assertEqual(summary["outcome"], "fail_fast")
        self.assertEqual(self.fake.count(), 1)

    def test_all_rate_limited(self):
        for k in self.KEYS:
            self.fake.script(k, {"status": 429, "headers": {"Retry-After": "30"},
                                 "body": RATE_LIMITED})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 1)
        err = json.loads(p.stdout)["error"]
        self.assertEqual(err["code"], "rate_limited")
        self.assertEqual(err["type"], "aigw_error")
        self.assertEqual(err["attempts"], 3)
        _, summary = self.check_trace(p, [("primary", "next_key"), ("backup", "next_backend"),
                                          ("third", "exhausted")])
        self.assertEqual(summary["outcome"], "exhausted")
        self.assertEqual(self.fake.count(), 3)
        # with --trace json, stderr is JSON lines only, failure or not
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 4, lines)
        for line in lines:
            json.loads(line)

    def test_invalid_body_nothing_sent(self):
        for data in (b'{"model":', b"[1,2]", b'{"messages":[]}', b""):
            p = self.request(data=data)
            self.assertEqual(p.returncode, 2, (data, p.stderr))
            self.assertEqual(p.stdout, b"")
            self.assertNotEqual(p.stderr, b"")
        self.assertEqual(self.fake.count(), 0)

    def test_config_error_nothing_sent(self):
        cfg = self.gateway()
        cfg["accessKeyConfiguration"]["router"]["rules"][0]["steps"][0]["keys"][0] = \
            {"id": "aigpk_missing"}
        p = self.request(cfg=cfg)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, b"")
        self.assertIn(b"accessKeyConfiguration.router.rules[0].steps[0].keys[0].id: ", p.stderr)
        p = self.aigw("request", "-c", os.path.join(self.tmp, "absent.json"), "-d",
                      REQUEST.decode())
        self.assertEqual(p.returncode, 2)
        self.assertEqual(self.fake.count(), 0)

    def test_demo(self):
        t0 = time.monotonic()
        p = self.aigw("demo")
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        out = p.stdout.decode()
        first, second = out.split("The same request again", 1)
        self.assertRegex(first, r"attempt 1 .*key primary .*HTTP 429 .*-> next_key")
        self.assertRegex(first, r"attempt 2 .*key backup .*HTTP 200 .*-> succeeded")
        self.assertIn("Outcome: served, HTTP 200", first)
        self.assertIn("received 2 requests: primary 1, backup 1", first)
        trace = first[first.index("Trace (--trace json):"):].strip().splitlines()[1:]
        trace = [json.loads(l) for l in trace]
        self.assertEqual([a["retryAction"] for a in trace[:-1]], ["next_key", "succeeded"])
        self.assertEqual(trace[-1]["outcome"], "served")
        # the same request again, through the same client: the primary cools
        self.assertRegex(second, r"skipped .*key primary .*key_cooling .*no upstream call")
        self.assertNotRegex(second, r"attempt \d .*key primary")
        self.assertRegex(second, r"attempt 1 .*key backup .*HTTP 200 .*-> succeeded")
        self.assertIn("Outcome: served, HTTP 200", second)
        self.assertIn("received 3 requests: primary 1, backup 2", second)
        rows = self.stats_table(second[second.index("Key health"):].encode())
        # the key is ready; it is cooling for the model that was rate limited
        self.assertEqual(rows["primary"][:3], ["primary", "mock", "ready"])
        self.assertEqual(rows["primary"][4:8], ["1", "0", "1", "1"])
        self.assertEqual(rows["primary@demo-model"][:4], ["primary", "demo-model", "mock", "cooling"])
        self.assertEqual(rows["primary@demo-model"][5:9], ["1", "0", "1", "1"])
        self.assertEqual(rows["backup"][2:8], ["ready", "-", "2", "2", "0", "0"])
        self.assertIn("mock:demo-model", rows)
        self.assertIn("retry", rows)

    # ---- streaming ("stream": true) ----

    def counts(self):
        return tuple(self.fake.count(k) for k in self.KEYS)

    def test_stream_served_byte_for_byte_as_it_arrives(self):
        # odd bytes too: raw UTF-8 in a token, CRLF line ends, a comment
        chunks = sse_answer("Hel", "lo")
        chunks[3:3] = [b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":'
                       b'" w\xc3\xb6rld \xe2\x98\x83"}}]}\r\n\r\n', b": keep-alive\n\n"]
        self.fake.script(self.KEYS[0], {"stream": chunks, "chunk_delay": 0.15})
        p, first, end = self.aigw_timed("request", "-c", self.config_file(), "-d",
                                        STREAM_REQUEST.decode())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(chunks))
        self.assertEqual(p.stderr, b"")
        # 8 chunks 150 ms apart: the first token (chunk 2) at ~0.3 s, the end
        # at ~1.2 s: stdout got it long before the end, not all at once
        self.assertIsNotNone(first)
        self.assertGreater(end - first, 0.4, (first, end))
        self.assertEqual(self.fake.requests,
                         [(self.KEYS[0], "/v1/chat/completions", STREAM_REQUEST_UP)])

    def test_stream_error_before_first_token_fails_over_unseen(self):
        chunks = sse_answer("ok")
        self.fake.script(self.KEYS[0], {"status": 429, "body": RATE_LIMITED})
        self.fake.script(self.KEYS[1], {"stream": chunks})
        p = self.request("--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(chunks))
        attempts, summary = self.check_trace(p, [("primary", "next_key"), ("backup", "succeeded")],
                                             stream=True)
        self.assertEqual([a["completion"] for a in attempts], ["failed", "succeeded"])
        self.assertEqual(attempts[0]["event"]["statusCode"], 429)
        self.assertNotIn("timeToFirstTokenMs", attempts[0])
        self.assertIsInstance(attempts[1]["timeToFirstTokenMs"], int)
        self.assertEqual(summary["outcome"], "served")
        self.assertEqual(self.counts(), (1, 1, 0))
        # an in-band error on a 200 (Anthropic's overloaded_error) after a role
        # chunk, the connection left open: the same, and none of it on stdout
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"stream": [sse_role("failed-one"), SSE_OVERLOADED],
                                        "end": "stall"})
        self.fake.script(self.KEYS[1], {"stream": chunks})
        p = self.request("--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(chunks))
        attempts, _ = self.check_trace(p, [("primary", "next_key"), ("backup", "succeeded")],
                                       stream=True)
        self.assertEqual(attempts[0]["event"]["statusCode"], 200)
        self.assertEqual(attempts[0]["errorClass"], "overloaded")
        self.assertEqual(attempts[0]["streamError"], "inband_error")
        self.assertEqual(attempts[0]["completion"], "failed")
        self.assertEqual(self.counts(), (1, 1, 0))

    def test_stream_silence_until_first_token_timeout(self):
        chunks = sse_answer("late", "but", "fine")
        self.fake.script(self.KEYS[0], {"stream": [sse_role("silent-one")], "end": "stall"})
        self.fake.script(self.KEYS[2], {"stream": chunks})
        t0 = time.monotonic()
        p = self.request("--trace", "json", data=STREAM_REQUEST,
                         cfg=self.gateway(firstTokenTimeout="300ms"))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(chunks))
        attempts, _ = self.check_trace(p, [("primary", "next_backend"), ("third", "succeeded")],
                                       stream=True)
        self.assertEqual(attempts[0]["completion"], "timed_out")
        self.assertGreaterEqual(attempts[0]["upstreamDurationMs"], 280)
        self.assertEqual(self.counts(), (1, 0, 1))

    def test_stream_cut_after_tokens_exit_1(self):
        partial = [sse_role(), sse_token("one"), sse_token("two")]
        self.fake.script(self.KEYS[0], {"stream": partial, "end": "cut", "chunk_delay": 0.02})
        p = self.request(data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, b"".join(partial))  # what came, nothing after it
        self.assertIn(b"stream_failed", p.stderr)
        self.assertEqual(self.counts(), (1, 0, 0))
        # the trace says so too
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"stream": partial, "end": "cut", "chunk_delay": 0.02})
        p = self.request("--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, b"".join(partial))
        attempts, summary = self.check_trace(p, [("primary", "fail_fast")], stream=True)
        a = attempts[0]
        self.assertEqual(a["completion"], "stream_failed")
        self.assertEqual(a["streamError"], "connection_cut")
        self.assertIs(a["served"], False)
        self.assertIsInstance(a["timeToFirstTokenMs"], int)
        self.assertIsInstance(a["timeToFirstByteMs"], int)
        self.assertLessEqual(a["timeToFirstByteMs"], a["timeToFirstTokenMs"])
        self.assertEqual(summary["outcome"], "stream_failed")
        self.assertEqual(summary["errorCode"], "stream_failed")
        for line in p.stderr.decode().splitlines():  # JSON lines only
            json.loads(line)
        self.assertEqual(self.counts(), (1, 0, 0))

    def test_stream_stall_after_tokens_idle_timeout_exit_1(self):
        self.fake.script(self.KEYS[0], {"stream": [sse_token("one")], "end": "stall"})
        t0 = time.monotonic()
        p = self.request("--trace", "json", data=STREAM_REQUEST,
                         cfg=self.gateway(streamIdleTimeout="300ms"))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, sse_token("one"))
        attempts, summary = self.check_trace(p, [("primary", "fail_fast")], stream=True)
        self.assertEqual(attempts[0]["completion"], "stream_failed")
        self.assertEqual(attempts[0]["streamError"], "idle_timeout")
        self.assertEqual(summary["outcome"], "stream_failed")
        self.assertEqual(self.counts(), (1, 0, 0))

    def test_stream_restart_after_cut(self):
        partial = [sse_role(), sse_token("one"), sse_token("two")]
        full = sse_answer("Fall", "back")
        self.fake.script(self.KEYS[0], {"stream": partial, "end": "cut"}, {"stream": full})
        p = self.request("--trace", "json", data=STREAM_REQUEST_FB,
                         cfg=self.gateway(streamRestart=True))
        self.assertEqual(p.returncode, 0, p.stderr)
        # the partial answer, the reset event, the fallback's whole answer
        head = b"".join(partial)
        self.assertTrue(p.stdout.startswith(head), p.stdout)
        m = re.match(rb"event: aigw\.reset\ndata: ([^\n]*)\n\n", p.stdout[len(head):])
        self.assertIsNotNone(m, p.stdout)
        reason = json.loads(m.group(1))
        self.assertEqual(reason["reason"], "connection_cut")
        self.assertEqual(reason["attempt"], 1)
        self.assertEqual(reason["provider"], "fake")
        self.assertEqual(reason["model"], "m1")
        self.assertEqual(p.stdout[len(head) + m.end():], b"".join(full))
        attempts, summary = self.check_trace(p, [("primary", "next_backend"),
                                                 ("primary", "succeeded")],
                                             models=["m1", "m2"], stream=True)
        self.assertEqual([a["completion"] for a in attempts], ["stream_failed", "succeeded"])
        self.assertEqual(attempts[0]["streamError"], "connection_cut")
        for a in attempts:
            self.assertIsInstance(a["timeToFirstTokenMs"], int)
        self.assertEqual(summary["outcome"], "served")
        self.assertEqual(summary["model"], "m2")
        # sent again from the start: the request, not the partial answer
        self.assertEqual([r[2] for r in self.fake.requests],
                         [STREAM_REQUEST_UP, STREAM_REQUEST_M2_UP])
        self.assertEqual(self.counts(), (2, 0, 0))

    # ---- --repeat, --interval, --stats: key health across requests ----

    # A cooldown that outlives any test run: what the burst tests see does
    # not depend on how fast the requests go.
    LONG_WAIT = "30"

    def rate_limit_primary(self, retry_after=LONG_WAIT):
        self.fake.script(self.KEYS[0], {"status": 429, "headers": {"Retry-After": retry_after},
                                        "body": RATE_LIMITED})

    def json_lines(self, out):
        """Every line of out, each a JSON object (anything else fails)."""
        lines = out.decode().splitlines()
        objs = []
        for l in lines:
            try:
                objs.append(json.loads(l))
            except ValueError:
                self.fail("not a JSON line: %r\n%s" % (l, out.decode()))
        return objs

    def per_request(self, objs):
        """--trace json lines -> [(attempt records, summary)], one per
        request, checking that each request's attempts precede its summary."""
        out, attempts = [], []
        for o in objs:
            if "event" in o:
                attempts.append(o)
            else:
                self.assertTrue(SUMMARY_FIELDS <= set(o), o)
                self.assertEqual(o["attempts"], len(attempts), o)
                out.append((attempts, o))
                attempts = []
        self.assertEqual(attempts, [], "attempt records after the last summary")
        return out

    @staticmethod
    def attempt_keys(attempts):
        return [(a["event"]["attemptNumber"], a["event"]["providerKeyId"], a["retryAction"])
                for a in attempts]

    @staticmethod
    def skipped_keys(summary):
        return [(s["providerKeyId"], s["reason"]) for s in summary["skipped"]
                if s.get("providerKeyId")]

    def stats_keys(self, stats):
        self.assertEqual(set(stats), {"keys", "endpoints", "backends", "hosts", "healthStore", "retryBudget"},
                         stats)
        return {k["id"]: k for k in stats["keys"]}

    def stats_endpoints(self, stats):
        """{(key id, model): entry} of a snapshot's endpoints."""
        return {(e["id"], e["model"]): e for e in stats["endpoints"]}

    def test_repeat_cooling_key_skipped_trace(self):
        self.rate_limit_primary()
        p = self.request("--repeat", "5", "--trace", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, (completion() + b"\n") * 5)  # one body a line
        self.assertEqual(self.counts(), (1, 5, 0))
        objs = self.json_lines(p.stderr)
        # per request, its attempt records, then its summary line, in turn
        self.assertEqual(["attempt" if "event" in o else "summary" for o in objs],
                         ["attempt", "attempt", "summary"] + ["attempt", "summary"] * 4)
        reqs = self.per_request(objs)
        self.assertEqual([self.attempt_keys(a) for a, _ in reqs],
                         [[(1, "primary", "next_key"), (2, "backup", "succeeded")]] +
                         [[(1, "backup", "succeeded")]] * 4)
        self.assertEqual([s["outcome"] for _, s in reqs], ["served"] * 5)
        self.assertEqual(len({s["requestId"] for _, s in reqs}), 5)
        self.assertEqual([self.skipped_keys(s) for _, s in reqs],
                         [[]] + [[("primary", "key_cooling")]] * 4)
        for _, s in reqs[1:]:
            skip = s["skipped"][0]
            self.assertEqual((skip["provider"], skip["model"], skip["step"]), ("fake", "m1", 0))
            self.assertGreater(skip["waitMs"], 0)
            self.assertLessEqual(skip["waitMs"], 30000)
        attempts = [a for a, _ in reqs]
        self.assertEqual(attempts[0][0]["event"]["statusCode"], 429)
        self.assertEqual(attempts[0][0]["requestedWaitMs"], 30000)

    def test_repeat_stats_json(self):
        for stats_args in (["--stats", "json"], ["--stats=json"]):
            self.fake.reset()
            self.rate_limit_primary()
            p = self.request("--repeat", "5", *stats_args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.count(b"\n"), 5)
            self.assertEqual(self.counts(), (1, 5, 0))
            lines = p.stderr.splitlines()
            self.assertEqual(len(lines), 1, p.stderr)  # the snapshot alone, one line
            stats = json.loads(lines[0])
            keys = self.stats_keys(stats)
            self.assertEqual([k["id"] for k in stats["keys"]], ["primary", "backup", "third"])
            pr, bk, th = keys["primary"], keys["backup"], keys["third"]
            # the key itself is ready: its rate limit is for m1
            self.assertEqual((pr["state"], pr["reason"], pr["waitMs"]), ("ready", None, 0))
            self.assertEqual((pr["requests"], pr["successes"], pr["failures"], pr["skips"]),
                             (1, 0, 1, 4))
            eps = self.stats_endpoints(stats)
            self.assertEqual(sorted(eps), [("backup", "m1"), ("primary", "m1")])
            pm = eps[("primary", "m1")]
            self.assertEqual((pm["provider"], pm["state"], pm["reason"]),
                             ("fake", "cooling", "rate_limit"))
            self.assertEqual((pm["requests"], pm["successes"], pm["failures"], pm["skips"]),
                             (1, 0, 1, 4))
            self.assertGreater(pm["waitMs"], 0)
            self.assertLessEqual(pm["waitMs"], 30000)
            self.assertEqual((eps[("backup", "m1")]["state"], eps[("backup", "m1")]["requests"]),
                             ("ready", 5))
            self.assertEqual((bk["state"], bk["requests"], bk["successes"], bk["failures"],
                              bk["skips"]), ("ready", 5, 5, 0, 0))
            self.assertEqual((th["state"], th["requests"]), ("ready", 0))
            for k in stats["keys"]:
                self.assertEqual(k["provider"], "fake")
            self.assertEqual([(b["provider"], b["model"], b["state"]) for b in stats["backends"]],
                             [("fake", "m1", "closed")])
            self.assertEqual([h["host"] for h in stats["hosts"]],
                             [self.fake.base_url[:-len("/v1")]])
            self.assertEqual(stats["retryBudget"]["requests"], 5)
            self.assertEqual(stats["retryBudget"]["retries"], 0)  # moving past a 429 is not charged

    def test_repeat_stats_with_trace_json_is_json(self):
        self.rate_limit_primary()
        p = self.request("--repeat", "3", "--trace", "json", "--stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        objs = self.json_lines(p.stderr)  # stderr: JSON lines only
        reqs = self.per_request(objs[:-1])
        self.assertEqual([s["attempts"] for _, s in reqs], [2, 1, 1])
        keys = self.stats_keys(objs[-1])
        self.assertEqual((keys["primary"]["state"], keys["primary"]["skips"]), ("ready", 2))
        pm = self.stats_endpoints(objs[-1])[("primary", "m1")]
        self.assertEqual((pm["state"], pm["skips"]), ("cooling", 2))
        self.assertEqual(keys["backup"]["successes"], 3)
        # explicit human: the table, even with --trace json
        self.fake.reset()
        self.rate_limit_primary()
        p = self.request("--trace", "json", "--stats", "human")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"retry budget: ", p.stderr)

    def stats_table(self, err):
        """The human --stats table: {first cell: cells} for each row; a row of
        the endpoint section (a key with one model) as {"id@model": cells}."""
        rows, section = {}, None
        for line in err.decode().splitlines():
            cells = line.split()
            if not cells:
                continue
            if cells[0] in ("key", "endpoint", "backend", "host"):
                section = cells[0]
            elif section == "endpoint":
                rows[cells[0] + "@" + cells[1]] = cells
                continue
            rows[cells[0]] = cells
        return rows

    def test_repeat_stats_human(self):
        # a bare --stats does not take a following option as its value
        for stats_args in (["--stats"], ["--stats", "human"], ["--stats=human"]):
            self.fake.reset()
            self.rate_limit_primary()
            p = self.request(*(stats_args + ["--repeat", "3"]))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout, (completion() + b"\n") * 3)
            self.assertEqual(self.counts(), (1, 3, 0))
            err = p.stderr.decode()
            for word in ("primary", "backup", "third", "cooling", "ready", "fake:m1",
                         "127.0.0.1", "retry budget: requests 3, retries 0, denied 0"):
                self.assertIn(word, err)
            rows = self.stats_table(p.stderr)
            self.assertEqual(rows["key"], ["key", "provider", "state", "wait", "requests",
                                           "successes", "failures", "skips", "p50", "p99"])
            # id, provider, state, wait, requests, successes, failures, skips, p50, p99
            self.assertEqual(rows["primary"][:4], ["primary", "fake", "ready", "-"])
            self.assertEqual(rows["primary"][4:], ["1", "0", "1", "2", "-", "-"])
            # the endpoint (key, model) that was rate limited cools
            self.assertEqual(rows["endpoint"], ["endpoint", "model", "provider", "state", "wait",
                                                "requests", "successes", "failures", "skips",
                                                "p50", "p99"])
            self.assertEqual(rows["primary@m1"][:4], ["primary", "m1", "fake", "cooling"])
            self.assertRegex(rows["primary@m1"][4], r"^\d+(\.\d)?(ms|s)$")
            self.assertEqual(rows["primary@m1"][5:], ["1", "0", "1", "2", "-", "-"])
            self.assertEqual(rows["backup"][:4], ["backup", "fake", "ready", "-"])
            self.assertEqual(rows["backup"][4:8], ["3", "3", "0", "0"])
            for lat in rows["backup"][8:]:
                self.assertRegex(lat, r"^\d+ms$")
            self.assertEqual(rows["third"][2:8], ["ready", "-", "0", "0", "0", "0"])
            self.assertEqual(rows["backend"][:3], ["backend", "state", "wait"])
            self.assertEqual(rows["fake:m1"][1], "closed")
            self.assertTrue(any(r.startswith("http://127.0.0.1:") for r in rows), rows)
            with self.assertRaises(ValueError):
                json.loads(p.stderr)

    def test_repeat_benched_key(self):
        self.fake.script(self.KEYS[0], {"status": 401, "body": b'{"error":{"message":"no"}}'})
        p = self.request("--repeat", "3", "--trace", "json", "--stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.counts(), (1, 3, 0))
        objs = self.json_lines(p.stderr)
        reqs = self.per_request(objs[:-1])
        self.assertEqual([self.skipped_keys(s) for _, s in reqs],
                         [[]] + [[("primary", "key_benched")]] * 2)
        pr = self.stats_keys(objs[-1])["primary"]
        self.assertEqual((pr["state"], pr["reason"], pr["requests"], pr["skips"]),
                         ("benched", "auth", 1, 2))

    def test_repeat_interval_cooldown_ends(self):
        self.rate_limit_primary("1")
        t0 = time.monotonic()
        p = self.request("--repeat", "5", "--interval", "300", "--trace", "json")
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertGreaterEqual(elapsed, 1.2)  # 4 waits of 300 ms, none after the last
        self.assertLess(elapsed, 10)
        # requests at ~0, 0.3, 0.6, 0.9, 1.2 s: the primary cools for 1 s
        # after its 429, is skipped meanwhile, and is tried once more after
        # it (by request 4 or 5; it then cools again)
        self.assertEqual(self.counts(), (2, 5, 0))
        reqs = self.per_request(self.json_lines(p.stderr))
        tried = [any(a["event"]["providerKeyId"] == "primary" for a in att) for att, _ in reqs]
        self.assertEqual(tried[:3], [True, False, False])
        self.assertEqual(tried[3:].count(True), 1, tried)
        for att, s in reqs[1:3]:
            self.assertEqual(self.skipped_keys(s), [("primary", "key_cooling")])
        again = reqs[3 + tried[3:].index(True)][0]
        self.assertEqual(self.attempt_keys(again), [(1, "primary", "next_key"),
                                                    (2, "backup", "succeeded")])

    def test_repeat_some_failed_exit_1(self):
        self.fake.script(self.KEYS[0], {"status": 200, "body": b'{"n":1}'},
                         {"status": 400, "body": b'{"error":{"message":"bad"}}'},
                         {"status": 200, "body": b'{"n":3}\n'})
        p = self.request("--repeat", "3")
        self.assertEqual(p.returncode, 1, p.stderr)
        # every body, each on its line (one that ends with a newline keeps it)
        self.assertEqual(p.stdout, b'{"n":1}\n{"error":{"message":"bad"}}\n{"n":3}\n')
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^aigw: request rq_[0-9A-Za-z]{26} ended fail_fast: "
                                   r"HTTP 400 after 1 attempt$")
        self.assertEqual(self.counts(), (3, 0, 0))
        # with --trace json: JSON lines only, one summary per request
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"status": 200}, {"status": 400, "body": b"{}"},
                         {"status": 200})
        p = self.request("--repeat", "3", "--trace", "json")
        self.assertEqual(p.returncode, 1, p.stderr)
        reqs = self.per_request(self.json_lines(p.stderr))
        self.assertEqual([s["outcome"] for _, s in reqs], ["served", "fail_fast", "served"])

    def test_repeat_stream(self):
        chunks = sse_answer("Hel", "lo")
        self.rate_limit_primary()
        self.fake.script(self.KEYS[1], {"stream": chunks})
        p = self.request("--repeat", "3", "--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 0, p.stderr)
        # each stream ends with a blank line already: nothing is added
        self.assertEqual(p.stdout, b"".join(chunks) * 3)
        self.assertEqual(self.counts(), (1, 3, 0))
        reqs = self.per_request(self.json_lines(p.stderr))
        self.assertEqual([self.attempt_keys(a) for a, _ in reqs],
                         [[(1, "primary", "next_key"), (2, "backup", "succeeded")]] +
                         [[(1, "backup", "succeeded")]] * 2)
        self.assertEqual([self.skipped_keys(s) for _, s in reqs],
                         [[]] + [[("primary", "key_cooling")]] * 2)

    def test_repeat_one_is_a_single_request(self):
        self.fake.script(self.KEYS[0], {"status": 200, "body": ODD_BODY})
        p = self.request("--repeat", "1", "--interval", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ODD_BODY)  # byte for byte: no newline added
        self.assertEqual(p.stderr, b"")
        self.assertEqual(self.counts(), (1, 0, 0))

    def test_repeat_usage_errors_exit_2(self):
        cases = [(["--repeat", "0"], "--repeat"), (["--repeat", "x"], "--repeat"),
                 (["--repeat", "1000001"], "--repeat"), (["--repeat=-1"], "--repeat"),
                 (["--repeat", ""], "--repeat"), (["--repeat", " 2"], "--repeat"),
                 (["--repeat"], "--repeat"), (["--interval", "-1"], "--interval"),
                 (["--interval", "3600001"], "--interval"), (["--interval", "1.5"], "--interval"),
                 (["--interval"], "--interval"), (["--stats=xml"], "--stats"),
                 (["--stats", "xml"], "xml")]
        for args, name in cases:
            p = self.request(*args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertEqual(p.stdout, b"", args)
            self.assertIn(name.encode(), p.stderr, args)
        # the bounds themselves are fine
        p = self.request("--repeat", "2", "--interval", "0", "--repeat=1", "--interval=3600000")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.fake.count(), 1)


class CliTest(CliBase):
    """Plain key values; also the CLI's own odd corners."""

    # Member names and values that reach a problem's path or text hold
    # control bytes escaped as \xNN: one problem stays one line, and no line
    # can be forged.
    def test_validate_one_line_per_problem_despite_newlines(self):
        cfg = self.gateway()
        cfg["providerKeys"][2]["x\nproviders[0].baseUrl: forged"] = 1
        cfg["providerKeys"][1] = {"id": "backup", "providerId": "fake", "name": "b",
                                  "valueFrom": {"env": "NO\nSUCH_VAR"}}
        p = self.aigw("validate", self.config_file(cfg))
        self.assertEqual(p.returncode, 2)
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("providerKeys[1].valueFrom.env: ") or
                        lines[1].startswith("providerKeys[1].valueFrom.env: "), lines)

    # ---- help, version, the manual ----

    COMMANDS = {"validate": "aigw validate FILE", "request": "aigw request -c FILE",
                "demo": "aigw demo", "version": "aigw --version", "help": "aigw help [COMMAND]"}

    def test_help_everywhere(self):
        full = self.aigw("--help")
        self.assertEqual(full.returncode, 0, full.stderr)
        for args in ([], ["help"], ["-h"]):
            p = self.aigw(*args)
            self.assertEqual((p.returncode, p.stdout, p.stderr), (0, full.stdout, b""), args)
        for cmd, synopsis in self.COMMANDS.items():
            self.assertIn(synopsis.encode(), full.stdout)
            one = self.aigw("help", cmd)
            self.assertEqual(one.returncode, 0, one.stderr)
            self.assertTrue(one.stdout.startswith(b"Usage:\n"), one.stdout)
            self.assertIn(synopsis.encode(), one.stdout)
            for other, syn in self.COMMANDS.items():
                if other != cmd:
                    self.assertNotIn(syn.encode(), one.stdout, (cmd, other))
            for flag in ("--help", "-h"):
                p = self.aigw(cmd, flag)
                self.assertEqual((p.returncode, p.stdout, p.stderr), (0, one.stdout, b""),
                                 (cmd, flag))
        # --help among request's options, wherever it stands; nothing sent
        for args in (["request", "-c", "gw.json", "--help"],
                     ["request", "--trace", "json", "-h", "-c", "x"]):
            p = self.aigw(*args)
            self.assertEqual(p.returncode, 0, args)
            self.assertIn(b"aigw request -c FILE", p.stdout)
        # ... but not as an option's value
        p = self.request("--path", "--help")
        self.assertEqual(p.returncode, 2)
        p = self.aigw("help", "frobnicate")
        self.assertEqual((p.returncode, p.stdout), (2, b""))
        self.assertIn(b"frobnicate", p.stderr)
        self.assertEqual(self.fake.count(), 0)

    def lib_version(self):
        """aigw_version_string() of AIGW_LIB, through ctypes in a child (a
        sanitizer build cannot be loaded by Python: then the header's)."""
        if AIGW_LIB:
            code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
                    "lib.aigw_version_string.restype = ctypes.c_char_p; "
                    "print(lib.aigw_version_string().decode())")
            p = subprocess.run([sys.executable, "-c", code, AIGW_LIB], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=30)
            if p.returncode == 0 and p.stdout.strip():
                return p.stdout.decode().strip()
        with open(os.path.join(HERE, "..", "include", "aigw.h")) as f:
            return re.search(r'#define AIGW_VERSION_STRING "([^"]+)"', f.read()).group(1)

    def test_version(self):
        want = self.lib_version()
        outs = set()
        for args in (["--version"], ["-V"], ["version"]):
            p = self.aigw(*args)
            self.assertEqual((p.returncode, p.stderr), (0, b""), args)
            self.assertRegex(p.stdout.decode(), r"^aigw \d+\.\d+\.\d+ \(libaigw (\S+)\)\n$")
            self.assertIn("(libaigw %s)" % want, p.stdout.decode())
            outs.add(p.stdout)
        self.assertEqual(len(outs), 1)

    MAN = os.path.join(HERE, "..", "examples", "aigw.1")

    def man_text(self):
        with open(self.MAN, encoding="utf-8") as f:
            return f.read().replace("\\-", "-").replace("\\(dq", '"')

    def test_man_page_documents_every_command_and_option(self):
        man = self.man_text()
        self.assertTrue(man.startswith(".\\\"") or man.startswith(".TH"), man[:80])
        self.assertIn(".TH AIGW 1", man)
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS"):
            self.assertIn(".SH " + section, man)
        usage = self.aigw("--help").stdout.decode()
        options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][A-Za-z-]*)", usage))
        self.assertTrue({"-c", "--config", "-d", "--data", "--path", "--trace", "--repeat",
                         "--interval", "--stats", "--help", "-h", "--version", "-V"} <= options,
                        options)
        for opt in options:
            self.assertRegex(man, r"(?<![\w-])%s(?![\w-])" % re.escape(opt), opt)
        for cmd in self.COMMANDS:
            self.assertRegex(man, r"(?m)^\.(TP\n\.)?B[I]? \"?%s\b" % cmd, cmd)
        for value in ("human", "json", "<stdin>", "empty file", "providerKeys", "gatewayConfig"):
            self.assertIn(value, man)

    def test_man_page_formats_cleanly_and_is_installed(self):
        groff = shutil.which("groff")
        if groff:
            p = subprocess.run([groff, "-man", "-ww", "-z", self.MAN], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            self.assertEqual((p.returncode, p.stderr), (0, b""), p.stderr)
        # meson installs it (install_man): the build's list of installed files
        info = os.path.join(os.path.dirname(os.path.dirname(AIGW)), "meson-info",
                            "intro-installed.json")
        if not os.path.exists(info):
            self.skipTest("no meson-info next to AIGW_BIN")
        with open(info) as f:
            installed = json.load(f)
        dest = [d for src, d in installed.items() if src.endswith(os.sep + "aigw.1")]
        self.assertEqual(len(dest), 1, installed)
        self.assertTrue(dest[0].endswith(os.path.join("man1", "aigw.1")), dest)




class CliRedisTest(CliBase):
    """`aigw request --repeat` and `--stats` with the Redis health store: a
    real redis-server started here on a free loopback port (scripts/deps.sh
    installs it), shared by separate aigw processes; and every scenario
    again with the store on."""

    REDIS_PW = "redis-pw-canary-4242"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = RedisServer(password=cls.REDIS_PW).start()
        cls.redis_port = cls.redis.port

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        super().tearDownClass()

    def check_run(self, p):
        super().check_run(p)
        for out in (p.stdout, p.stderr):
            self.assertNotIn(self.REDIS_PW.encode(), out)

    runs = 0

    def gateway(self, **gw):
        """Every scenario of CliBase runs again through the Redis store, each
        gateway file with a prefix of its own (the scenarios' separate runs
        are not one fleet): the behaviour is the same."""
        return self.store_gateway(**gw)

    def store_gateway(self, port=None, **gw):
        cfg = super().gateway(**gw)
        CliRedisTest.runs += 1
        redis = {"url": "redis://127.0.0.1:%d/0" % (port or self.redis_port),
                 "keyPrefix": "cli-%s-%d:" % (self._testMethodName, CliRedisTest.runs),
                 "password": {"valueFrom": {"env": "AIGW_TEST_REDIS_PW"}}}
        cfg["gatewayConfig"]["healthStore"] = {"redis": redis}
        return cfg

    def env(self):
        env = super().env()
        env["AIGW_TEST_REDIS_PW"] = self.REDIS_PW
        return env

    def test_two_processes_share_a_cooldown(self):
        self.fake.script(self.KEYS[0], {"status": 429, "headers": {"Retry-After": "30"},
                                        "body": RATE_LIMITED},
                         {"status": 429, "headers": {"Retry-After": "30"},
                          "body": RATE_LIMITED})
        cfg = self.store_gateway()
        first = self.request("--repeat", "3", "--trace", "json", "--stats", "json", cfg=cfg)
        self.assertEqual(first.returncode, 0, first.stderr)
        objs = self.json_lines(first.stderr)
        reqs = self.per_request(objs[:-1])
        self.assertEqual([s["attempts"] for _, s in reqs], [2, 1, 1])
        self.assertEqual([s["healthStore"] for _, s in reqs], ["redis"] * 3)
        store = objs[-1]["healthStore"]
        self.assertEqual((store["kind"], store["state"]), ("redis", "connected"))
        # another process of the fleet: the cooldown is known from the start
        second = self.request("--repeat", "2", "--trace", "json", "--stats", "json", cfg=cfg)
        self.assertEqual(second.returncode, 0, second.stderr)
        objs = self.json_lines(second.stderr)
        reqs = self.per_request(objs[:-1])
        self.assertEqual([self.skipped_keys(s) for _, s in reqs],
                         [[("primary", "key_cooling")]] * 2)
        self.assertEqual([self.attempt_keys(a) for a, _ in reqs],
                         [[(1, "backup", "succeeded")]] * 2)
        pm = self.stats_endpoints(objs[-1])[("primary", "m1")]
        self.assertEqual((pm["state"], pm["requests"], pm["skips"]), ("cooling", 0, 2))
        self.assertGreater(pm["waitMs"], 25000)
        self.assertEqual(self.counts(), (1, 5, 0))

    def test_stats_human_names_the_store(self):
        p = self.request("--stats", "human", cfg=self.store_gateway())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"health store: redis (connected)", p.stderr)

    def test_redis_down_serves_alone(self):
        self.rate_limit_primary()
        cfg = self.store_gateway(port=free_port())  # nothing listens there
        p = self.request("--repeat", "3", "--trace", "json", "--stats", "json", cfg=cfg)
        self.assertEqual(p.returncode, 0, p.stderr)
        objs = self.json_lines(p.stderr)
        reqs = self.per_request(objs[:-1])
        self.assertEqual([s["healthStore"] for _, s in reqs], ["local"] * 3)
        self.assertEqual([s["attempts"] for _, s in reqs], [2, 1, 1])  # remembered locally
        store = objs[-1]["healthStore"]
        self.assertEqual((store["kind"], store["state"]), ("redis", "fallback"))
        self.assertGreaterEqual(store["errors"], 1)
        self.assertEqual(self.counts(), (1, 3, 0))

    def test_validate_store_problems(self):
        cfg = self.store_gateway()
        cfg["gatewayConfig"]["healthStore"]["redis"]["url"] = \
            "rediss://:%s@127.0.0.1:6380/0" % self.REDIS_PW
        p = self.aigw("validate", self.config_file(cfg))
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"gatewayConfig.healthStore.redis.url: rediss:// (TLS) is not available",
                      p.stderr)
        cfg["gatewayConfig"]["healthStore"]["redis"] = {"keyPrefix": "x"}
        p = self.aigw("validate", self.config_file(cfg))
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"gatewayConfig.healthStore.redis.url: required field is missing",
                      p.stderr)


class CanaryMixin:
    """No 8-character piece of any key value in any output of any run."""

    CANARY_EXTRA = ()

    def secrets(self):
        return list(self.KEYS) + list(self.CANARY_EXTRA)

    def check_run(self, p):
        super().check_run(p)
        from secret_scan import Scanner  # tests/support/secret_scan.py
        scanner = Scanner(self.secrets())
        for name, out in (("stdout", p.stdout), ("stderr", p.stderr)):
            scanner.assert_clean(self, out, "%s of `aigw %s`" % (
                name, " ".join(p.args[1:])[:200]))

    def test_canary_detector_works(self):
        """The check itself: a run whose output does hold a piece of a key fails it."""
        piece = self.KEYS[0][5:13]
        with self.assertRaises(AssertionError):
            self.aigw("no-such-command-" + piece)  # echoed in the usage error

    # ---- the upstream echoes the key back ----

    def test_canary_upstream_echoes_key(self):
        echo = b'{"error":{"message":"bad key $AUTH","code":"rate_limit_exceeded"}}'
        self.fake.script(self.KEYS[0], {"status": 429, "body": echo,
                                        "headers": {"X-Echo": "$AUTH"}})
        self.fake.script(self.KEYS[1], {"status": 200, "body": b'{"seen":"$AUTH"}'})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b'{"seen":"Bearer [REDACTED]"}')
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"status": 400, "body":
                                        b'{"error":{"message":"invalid $AUTH"}}'})
        p = self.request("--trace", "json")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b'{"error":{"message":"invalid Bearer [REDACTED]"}}')

    # ---- streams: failures before the commit point never show the key ----

    def test_canary_stream_upstream_echoes_key(self):
        echo_err = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                    b'"message":"key $AUTH"}}\n\n')
        chunks = sse_answer("safe")
        self.fake.script(self.KEYS[0], {"stream": [echo_err], "headers": {"X-Echo": "$AUTH"}})
        self.fake.script(self.KEYS[1], {"status": 429, "headers": {"X-Echo": "$AUTH"},
                                        "body": b'{"error":{"message":"bad key $AUTH",'
                                                b'"code":"rate_limit_exceeded"}}'})
        self.fake.script(self.KEYS[2], {"stream": chunks, "headers": {"X-Echo": "$AUTH"}})
        p = self.request("--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"".join(chunks))
        self.check_trace(p, [("primary", "next_key"), ("backup", "next_backend"),
                             ("third", "succeeded")], stream=True)
        # a fail-fast answer to a stream request: the upstream's, redacted
        self.fake.reset()
        self.fake.script(self.KEYS[0], {"status": 400, "body":
                                        b'{"error":{"message":"invalid $AUTH"}}'})
        p = self.request("--trace", "json", data=STREAM_REQUEST)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b'{"error":{"message":"invalid Bearer [REDACTED]"}}')

    # ---- configuration errors right next to a key value ----

    def bad_configs(self):
        a, b, c = self.KEYS[:3]
        base = json.dumps(self.gateway())
        out = []
        cfg = self.gateway()  # CR/LF inside a value
        cfg["providerKeys"][2]["value"] = c + "\r\nX-Injected: 1"
        out.append(("crlf", json.dumps(cfg)))
        cfg = self.gateway()  # a key of an unknown provider
        cfg["providerKeys"].append({"id": "orphan", "providerId": "nope", "name": "o",
                                    "value": c})
        out.append(("unknown-provider", json.dumps(cfg)))
        cfg = self.gateway()  # inline step keys: a LF, a misspelt member
        cfg["accessKeyConfiguration"]["router"]["rules"][0]["steps"][1]["keys"] = [
            {"name": "inline", "value": c + "\n"}, {"name": "x", "value": c, "vaule": c}]
        out.append(("inline", json.dumps(cfg)))
        cfg = self.gateway()  # a NUL (escaped) inside a value
        cfg["providerKeys"][2]["value"] = c + "\u0000" + a
        out.append(("nul", json.dumps(cfg)))
        cfg = self.gateway()  # the value of the wrong type, a misspelt member
        cfg["providerKeys"][2]["value"] = [c]
        cfg["providerKeys"][1]["valeu"] = b
        out.append(("types", json.dumps(cfg)))
        cfg = self.gateway()  # duplicate ids
        cfg["providerKeys"].append(dict(cfg["providerKeys"][2]))
        out.append(("duplicate", json.dumps(cfg)))
        cfg = self.gateway()  # an ngrok access key next to a bad gateway URL
        cfg["ngrokAccessKey"] = c
        cfg["ngrokGatewayUrl"] = "http://example.com/v1"
        out.append(("ngrok", json.dumps(cfg)))
        cfg = self.gateway()  # an ngrok access key with a LF, in the object form
        cfg["ngrokAccessKey"] = {"value": c + "\n"}
        out.append(("ngrok-lf", json.dumps(cfg)))
        cfg = self.gateway()  # a key file holding more than a line
        cfg["providerKeys"][2] = {"id": "third", "providerId": "fake", "name": "t",
                                  "valueFrom": {"file": self.write("two_lines.txt",
                                                                   c + "\n" + a + "\n")}}
        out.append(("file", json.dumps(cfg)))
        # JSON syntax errors right after a key value
        out.append(("syntax", base.replace('"%s"' % c, '"%s" oops' % c, 1)))
        out.append(("unterminated", base[:base.index(c) + len(c)]))
        out.append(("control", base.replace(c, c + "\n", 1)))
        return out

    def test_canary_config_errors(self):
        for name, text in self.bad_configs():
            path = self.write("bad-%s.json" % name, text)
            p = self.aigw("validate", path)
            self.assertEqual(p.returncode, 2, (name, p.stdout, p.stderr))
            self.assertNotEqual(p.stderr, b"", name)
            p = self.aigw("request", "-c", path, "-d", REQUEST.decode(), "--trace", "json")
            self.assertEqual(p.returncode, 2, (name, p.stderr))
        self.assertEqual(self.fake.count(), 0)

    def test_canary_bad_env_value(self):
        cfg = self.gateway()
        cfg["providerKeys"][2] = {"id": "third", "providerId": "fake", "name": "t",
                                  "valueFrom": {"env": "AIGW_TEST_CRLF_KEY"}}
        env = self.env()
        env["AIGW_TEST_CRLF_KEY"] = self.KEYS[2] + "\r\nX: y"
        path = self.config_file(cfg)
        p = self.aigw("validate", path, env=env)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"providerKeys[2].valueFrom.env", p.stderr)


class CanaryInlineTest(CanaryMixin, CliBase):
    KEYS = ("sk-canary-0123456789abcdef", "sk-canary-fedcba9876543210",
            "sk-canary-a1b2c3d4e5f6a7b8")


class CanaryValueFromTest(CanaryMixin, CliBase):
    """The same values, the first from a file, the second from the environment."""
    KEYS = ("sk-canary-0123456789abcdef", "sk-canary-fedcba9876543210",
            "sk-canary-a1b2c3d4e5f6a7b8")
    SOURCE = "valueFrom"


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    for cls in (CliTest, CliRedisTest, CanaryInlineTest, CanaryValueFromTest):
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


if __name__ == "__main__":
    if not AIGW:
        sys.stderr.write("set AIGW_BIN to the aigw binary\n")
        sys.exit(2)
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() and prog.result.testsRun > 0 else 1)
