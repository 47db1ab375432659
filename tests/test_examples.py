#!/usr/bin/env python3
"""test_examples.py - the example programs of examples/, run, so that none can rot.

- examples/quickstart.c is the README's C example: the README's copy
  ("## A C example") must be the file, byte for byte; the program runs on
  the README's own gateway file with the providers' baseUrl pointed at a
  fake provider (tests/test_cli.py's), and prints what the README shows.
- examples/custom-strategy.c (aigw_strategy version 2, order_health) and
  examples/custom-transport.c (aigw_transport) run against the fake too.

Every run is checked for key values: no 8-byte window of one may show on
stdout or stderr (tests/support/secret_scan.py).

Env: QUICKSTART_BIN, CUSTOM_STRATEGY_BIN, CUSTOM_TRANSPORT_BIN (the built
programs), AIGW_LIB (libaigw.so: its directory goes on LD_LIBRARY_PATH).
Python 3 standard library only.  Exits non-zero when a test fails.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "support"))
from fake_provider import FakeProviderCase, completion  # noqa: E402  (tests/support)
from secret_scan import assert_no_secret  # noqa: E402  (tests/support)

BINS = {name: os.environ.get(var, "") for name, var in (
    ("quickstart", "QUICKSTART_BIN"), ("custom-strategy", "CUSTOM_STRATEGY_BIN"),
    ("custom-transport", "CUSTOM_TRANSPORT_BIN"))}
AIGW_LIB = os.environ.get("AIGW_LIB", "")

RATE_LIMITED = b'{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}'
KEYS = {"OPENAI_API_KEY": "sk-canary-3f9a1c7e5b2d8046",
        "OPENAI_API_KEY_2": "sk-canary-8e2d6b4f0a9c1357",
        "ANTHROPIC_API_KEY": "sk-ant-canary-c4e1a8f2d6b90735"}


def readme_section(title):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def code_blocks(section):
    """[(language, text)] of the fenced blocks of a README section."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M)]


class ExampleBase(FakeProviderCase):
    BIN = None

    TMP_PREFIX = "aigw-examples-"

    @classmethod
    def setUpClass(cls):
        path = BINS[cls.BIN]
        if not path or not os.access(path, os.X_OK):
            raise unittest.SkipTest("%s is not built: %r" % (cls.BIN, path))
        super().setUpClass()

    def env(self, **extra):
        env = dict(os.environ)
        if AIGW_LIB:
            d = os.path.dirname(AIGW_LIB)
            env["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"]
                                          if env.get("LD_LIBRARY_PATH") else "")
        env.update(KEYS)
        env.update(extra)
        return env

    def run_bin(self, *args, env=None, cwd=None):
        p = subprocess.run([BINS[self.BIN]] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env or self.env(),
                           cwd=cwd or self.tmp, timeout=60)
        for name, out in (("stdout", p.stdout), ("stderr", p.stderr)):
            self.assertNotIn(b"Sanitizer", out, out)
            self.assertNotIn(b"runtime error:", out, out)
            assert_no_secret(self, out, self.secrets(), name)
        return p

    def secrets(self):
        return list(KEYS.values())

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        return path

    def keys_seen(self):
        return [r[0] for r in self.fake.requests]


class QuickstartTest(ExampleBase):
    """The README's C example on the README's gateway file."""
    BIN = "quickstart"

    def setUp(self):
        super().setUp()
        blocks = code_blocks(readme_section("A C example"))
        self.c_code = [t for lang, t in blocks if lang == "c"]
        self.gateway = [t for lang, t in blocks if lang == "json"]
        self.sample = [t for lang, t in blocks if lang == ""]

    def readme_gateway(self, key_env=None):
        """The README's gateway file, the built-in providers' baseUrl pointed
        at the fake: the only change."""
        self.assertEqual(len(self.gateway), 1, "one gateway file in the C example's section")
        cfg = json.loads(self.gateway[0])
        self.assertNotIn("providers", cfg)
        cfg["providers"] = [{"providerId": p, "name": p, "baseUrl": self.fake.base_url}
                            for p in ("openai", "anthropic")]
        d = tempfile.mkdtemp(dir=self.tmp)
        with open(os.path.join(d, "gateway.json"), "w") as f:
            json.dump(cfg, f)
        return d

    def test_readme_shows_the_file(self):
        self.assertEqual(len(self.c_code), 1, "one C program in the C example's section")
        with open(os.path.join(ROOT, "examples", "quickstart.c"), encoding="utf-8") as f:
            self.assertEqual(self.c_code[0], f.read(),
                             "README.md's C example differs from examples/quickstart.c")

    def test_failover_as_the_readme_shows(self):
        self.fake.script(KEYS["OPENAI_API_KEY"], {"status": 429, "body": RATE_LIMITED,
                                                  "headers": {"Retry-After": "30"}})
        p = self.run_bin(cwd=self.readme_gateway())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"200 " + completion() + b"\n")
        # the attempt lines the README shows, exactly
        self.assertEqual(len(self.sample), 1, "one sample run in the C example's section")
        shown = [l for l in self.sample[0].splitlines() if l.startswith("attempt ")]
        self.assertEqual(len(shown), 2, self.sample[0])
        self.assertEqual(p.stderr.decode().splitlines(), shown)
        self.assertTrue(self.sample[0].splitlines()[1].startswith("200 {"), self.sample[0])
        self.assertEqual(self.keys_seen(), [KEYS["OPENAI_API_KEY"], KEYS["OPENAI_API_KEY_2"]])
        for key, path, body in self.fake.requests:
            self.assertEqual(path, "/v1/chat/completions")
            self.assertEqual(json.loads(body)["model"], "gpt-4o")
            self.assertNotIn("models", json.loads(body))

    def test_fallback_model_on_anthropic(self):
        for k in ("OPENAI_API_KEY", "OPENAI_API_KEY_2"):
            self.fake.script(KEYS[k], {"status": 429, "body": RATE_LIMITED,
                                       "headers": {"Retry-After": "30"}})
        p = self.run_bin(cwd=self.readme_gateway())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"200 " + completion() + b"\n")
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(lines[2],
                         "attempt 3 anthropic/claude-sonnet-4-5 key claude: HTTP 200 -> succeeded")
        self.assertEqual(self.keys_seen(), [KEYS["OPENAI_API_KEY"], KEYS["OPENAI_API_KEY_2"],
                                            KEYS["ANTHROPIC_API_KEY"]])
        self.assertEqual(json.loads(self.fake.requests[2][2])["model"], "claude-sonnet-4-5")

    def test_all_failed_exit_1(self):
        for k in KEYS.values():
            self.fake.script(k, {"status": 429, "body": RATE_LIMITED})
        p = self.run_bin(cwd=self.readme_gateway())
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stdout.startswith(b"429 "), p.stdout)
        self.assertEqual(json.loads(p.stdout[4:])["error"]["code"], "rate_limited")

    def test_config_problem_exit_2(self):
        env = self.env()
        del env["OPENAI_API_KEY_2"]
        p = self.run_bin(env=env, cwd=self.readme_gateway())
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"providerKeys[1].valueFrom.env", p.stderr)
        self.assertEqual(self.fake.count(), 0)


def fake_gateway(base_url, keys, steps):
    """A gateway file on the fake provider "fake": keys {id: value}, steps
    [[key id, ...], ...] of its rule."""
    return {
        "providers": [{"providerId": "fake", "name": "Fake", "baseUrl": base_url}],
        "providerKeys": [{"id": k, "providerId": "fake", "name": k, "value": v}
                         for k, v in keys.items()],
        "accessKeyConfiguration": {"name": "example", "router": {"rules": [
            {"provider": "fake", "steps": [{"type": "user", "keys": [{"id": k} for k in s]}
                                           for s in steps]}]}},
        "gatewayConfig": {"perRequestTimeout": "5s", "totalTimeout": "20s",
                          "sameBackendRetries": 0},
    }


BODY = '{"model":"fake:m1","messages":[{"role":"user","content":"hi"}]}'


class CustomStrategyTest(ExampleBase):
    """Fastest first: untried keys, then by mean latency, then the failing."""
    BIN = "custom-strategy"
    SKEYS = {"bad": "sk-canary-1b7e3d9f5a2c8064", "slow": "sk-canary-6d0a4f8b2e7c1953",
             "fast": "sk-canary-9c5e1a7d3f0b4682"}

    def secrets(self):
        return list(self.SKEYS.values())

    def test_fastest_key_first(self):
        self.fake.script(self.SKEYS["bad"], {"status": 500, "body": b'{"error":{"message":"down"}}'})
        self.fake.script(self.SKEYS["slow"], {"sleep": 0.25})
        cfg = self.write("strategy.json", fake_gateway(self.fake.base_url, self.SKEYS,
                                                       [["bad", "slow", "fast"]]))
        p = self.run_bin(cfg, BODY, "4")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(), [
            "request 1: HTTP 200 from key slow after 2 attempts",  # all untried: as listed
            "request 2: HTTP 200 from key fast after 1 attempt",   # fast is still untried
            "request 3: HTTP 200 from key fast after 1 attempt",   # then by latency
            "request 4: HTTP 200 from key fast after 1 attempt"])
        log = p.stderr.decode().splitlines()
        self.assertEqual(len(log), 5, log)
        self.assertEqual(log[0], "strategy: fake/m1 step 0: bad (untried) slow (untried) "
                                 "fast (untried)")
        self.assertRegex(log[1], r"^strategy: fake/m1 step 0: fast \(untried\) slow \(\d+ ms\) "
                                 r"bad \(no success\)$")
        self.assertRegex(log[2], r"^strategy: fake/m1 step 0: fast \(\d+ ms\) slow \(\d+ ms\) "
                                 r"bad \(no success\)$")
        self.assertEqual(log[4], "strategy: ordered 4 steps")  # destroy ran, once
        self.assertEqual([self.fake.count(v) for v in self.SKEYS.values()], [1, 1, 3])

    def test_usage_and_config_errors_exit_2(self):
        self.assertEqual(self.run_bin().returncode, 2)
        p = self.run_bin(os.path.join(self.tmp, "absent.json"), BODY)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"absent.json", p.stderr)
        self.assertEqual(self.fake.count(), 0)


class CustomTransportTest(ExampleBase):
    """Every exchange through the example's own (logging, libcurl) transport."""
    BIN = "custom-transport"
    TKEYS = {"primary": "sk-canary-2a6f0c4e8b1d5973", "backup": "sk-canary-7f3b9d1a5c0e8264"}

    def secrets(self):
        return list(self.TKEYS.values())

    def test_each_exchange_logged(self):
        self.fake.script(self.TKEYS["primary"], {"status": 429, "body": RATE_LIMITED})
        self.fake.script(self.TKEYS["backup"], {"status": 200, "body": b'{"seen":"$AUTH"}',
                                                "headers": {"X-Echo": "$AUTH"}})
        cfg = self.write("transport.json", fake_gateway(self.fake.base_url, self.TKEYS,
                                                        [["primary", "backup"]]))
        p = self.run_bin(cfg, BODY)
        self.assertEqual(p.returncode, 0, p.stderr)
        # the upstream echoed the key: the library redacts it, whatever the transport
        self.assertEqual(p.stdout, b'{"seen":"Bearer [REDACTED]"}\n')
        log = p.stderr.decode().splitlines()
        url = self.fake.base_url + "/chat/completions"
        self.assertEqual(len(log), 5, log)
        for i in (0, 2):
            self.assertRegex(log[i], r"^transport: POST %s \(%d bytes; headers:.* authorization"
                             % (re.escape(url), len(BODY) - len("fake:")), re.I)
        self.assertRegex(log[1], r"^transport:   -> HTTP 429 in \d+ ms$")
        self.assertRegex(log[3], r"^transport:   -> HTTP 200 in \d+ ms$")
        self.assertEqual(log[4], "custom-transport: served, HTTP 200 after 2 attempts")
        self.assertEqual(self.keys_seen(), [self.TKEYS["primary"], self.TKEYS["backup"]])

    def test_transport_error_moves_to_next_step(self):
        self.fake.script(self.TKEYS["primary"], {"close": True})
        cfg = self.write("transport2.json", fake_gateway(self.fake.base_url, self.TKEYS,
                                                         [["primary"], ["backup"]]))
        p = self.run_bin(cfg, BODY)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion() + b"\n")
        log = p.stderr.decode().splitlines()
        self.assertRegex(log[1], r"^transport:   -> reset after \d+ ms$")
        self.assertRegex(log[3], r"^transport:   -> HTTP 200 in \d+ ms$")


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if prog.result.wasSuccessful() and prog.result.testsRun > 0 else 1)
