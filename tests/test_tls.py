#!/usr/bin/env python3
"""test_tls.py - gatewayConfig.tls against real HTTPS upstreams, end to end.

At test time, in a temporary folder, openssl(1) makes a CA; signed by it, a
server certificate for 127.0.0.1 and localhost, one for the wrong name only
("wrong.example") and a client certificate with its key; and a second CA
with a client certificate of its own.  Loopback HTTPS fake providers
(tests/support/fake_provider.py) serve with them, beside a plain HTTP one.
Each case runs `aigw request --trace json` (env AIGW_BIN) and checks the
attempts (provider, key, errorClass, transportError, verdict) and what each
fake provider received: HTTP requests per key, TLS handshakes.

A TLS failure is class `network`: the policy moves to the next step (the
step's other keys share the host and are skipped), then to the next model.

Exits 77 (skipped) when openssl is missing.  Python 3 standard library only.
"""
import json
import os
import pty
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from fake_provider import FakeProvider, completion  # noqa: E402

AIGW = os.environ.get("AIGW_BIN", "")
CUSTOM_TRANSPORT = os.environ.get("CUSTOM_TRANSPORT_BIN", "")
OPENSSL = shutil.which("openssl")

REQUEST = {"model": "secure:m1", "messages": [{"role": "user", "content": "hi"}]}
# the same, falling back to the plain HTTP provider
REQUEST_FB = dict(REQUEST, models=["plain:m1"])
KEYS = {"s1": "sk-secure-1111", "s2": "sk-secure-2222", "s3": "sk-secure-3333",
        "p1": "sk-plain-4444"}


# ---------------------------------------------------------------------------
# certificates, made at test time
# ---------------------------------------------------------------------------

def openssl(*args, cwd):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr.decode()))


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, ca, name, cn, usage, san=None):
    """name.pem and name.key: a certificate for cn signed by ca, for usage
    (serverAuth, clientAuth), with subjectAltName san."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
            cwd=d)
    ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
           "extendedKeyUsage=" + usage, "subjectKeyIdentifier=hash",
           "authorityKeyIdentifier=keyid:always"]
    if san:
        ext.append("subjectAltName=" + san)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("\n".join(ext) + "\n")
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
            "-out", name + ".pem", "-extfile", name + ".ext", cwd=d)


def make_pki(d):
    make_ca(d, "ca", "aigw test CA")
    make_leaf(d, "ca", "server", "localhost", "serverAuth", "IP:127.0.0.1,DNS:localhost")
    make_leaf(d, "ca", "wrong", "wrong.example", "serverAuth", "DNS:wrong.example")
    make_leaf(d, "ca", "client", "aigw-test-client", "clientAuth")
    make_ca(d, "ca2", "aigw other CA")
    make_leaf(d, "ca2", "client2", "aigw-other-client", "clientAuth")
    # a certificate and its key in one file; the key alone, encrypted
    with open(os.path.join(d, "client-both.pem"), "wb") as out:
        for n in ("client.pem", "client.key"):
            with open(os.path.join(d, n), "rb") as f:
                out.write(f.read())
    openssl("pkey", "-in", "client.key", "-aes256", "-passout", "pass:not-given",
            "-out", "client-enc.key", cwd=d)


# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------

class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not AIGW or not os.access(AIGW, os.X_OK):
            raise unittest.SkipTest("AIGW_BIN is not an executable: %r" % AIGW)
        cls.tmp = tempfile.mkdtemp(prefix="aigw-tls-")
        cls.fakes = []
        make_pki(cls.tmp)
        server = (cls.pem("server"), cls.pem("server", "key"))
        cls.plain = cls.fake()
        cls.secure = cls.fake(*server)
        cls.wrong = cls.fake(cls.pem("wrong"), cls.pem("wrong", "key"))
        # a client certificate required, over TLS 1.2 and 1.3
        cls.mtls12 = cls.fake(*server, tls_client_ca=cls.pem("ca"),
                              tls_max_version=ssl.TLSVersion.TLSv1_2)
        cls.mtls13 = cls.fake(*server, tls_client_ca=cls.pem("ca"))

    @classmethod
    def fake(cls, *args, **kw):
        f = FakeProvider(*args, **kw)
        cls.fakes.append(f)
        return f

    @classmethod
    def tearDownClass(cls):
        for f in cls.fakes:
            f.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def pem(cls, name, ext="pem"):
        return os.path.join(cls.tmp, "%s.%s" % (name, ext))

    def setUp(self):
        for f in self.fakes:
            f.reset()

    # ---- helpers ----

    def gateway(self, base_url, tls):
        """secure (base_url): rule steps [s1, s2], [s3]; plain: [p1]."""
        gc = {"perRequestTimeout": "5s", "totalTimeout": "20s", "sameBackendRetries": 0}
        if tls is not None:
            gc["tls"] = tls
        return {
            "providers": [{"providerId": "secure", "baseUrl": base_url},
                          {"providerId": "plain", "baseUrl": self.plain.base_url}],
            "providerKeys": [{"id": k, "providerId": "plain" if k[0] == "p" else "secure",
                              "value": v} for k, v in KEYS.items()],
            "accessKeyConfiguration": {"name": "tls", "router": {"rules": [
                {"provider": "secure", "steps": [
                    {"type": "user", "keys": [{"id": "s1"}, {"id": "s2"}]},
                    {"type": "user", "keys": [{"id": "s3"}]}]},
                {"provider": "plain", "steps": [{"type": "user", "keys": [{"id": "p1"}]}]}]}},
            "gatewayConfig": gc,
        }

    def config_file(self, cfg):
        path = os.path.join(self.tmp, "gateway-%s.json" % self.id().rsplit(".", 1)[-1])
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def request(self, fake, tls, body=REQUEST, extra=(), base_url=None):
        cfg = self.gateway(base_url or fake.base_url, tls)
        p = subprocess.run([AIGW, "request", "-c", self.config_file(cfg), "-d", json.dumps(body),
                            "--trace", "json"] + list(extra),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.check_run(p)
        return p

    def check_run(self, p):
        # a sanitizer report means a memory or UB bug, whatever the exit code
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotIn("Sanitizer", err, err)
        self.assertNotIn("runtime error:", err, err)

    def attempts(self, p):
        """[(provider, key id, errorClass, transportError, retryAction)] and
        the summary of the last request of the run."""
        objs = [json.loads(l) for l in p.stderr.decode().splitlines() if l.startswith("{")]
        self.assertGreaterEqual(len(objs), 2, p.stderr)
        summary = objs[-1]
        got = [(a["event"]["provider"], a["event"]["providerKeyId"], a["errorClass"],
                a["transportError"], a["retryAction"]) for a in objs[:-1] if "event" in a]
        return got, summary

    def counts(self, fake):
        """HTTP requests fake received, per key id."""
        return {k: fake.count(v) for k, v in KEYS.items() if fake.count(v)}

    def connections(self, fake, n):
        """(completed, failed) TLS handshakes, once fake has seen n (the
        server's side of a failed handshake may end after the client)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with fake.lock:
                done, failed = fake.handshakes, len(fake.handshake_errors)
            if done + failed >= n:
                break
            time.sleep(0.02)
        return done, failed

    def assert_failed_over(self, p, fake):
        """The request was served by the plain provider after TLS failures at
        s1 (step 0; s2, on the same host, not tried) and s3 (step 1, the
        same host), with no HTTP request reaching fake."""
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        got, summary = self.attempts(p)
        self.assertEqual(got, [
            ("secure", "s1", "network", "tls", "next_backend"),
            ("secure", "s3", "network", "tls", "next_backend"),
            ("plain", "p1", None, None, "succeeded")], p.stderr)
        self.assertEqual((summary["outcome"], summary["skipped"]), ("served", []))
        self.assertEqual(self.counts(fake), {})
        self.assertEqual(self.counts(self.plain), {"p1": 1})

    # ---- (a) caBundle: the request succeeds ----

    def test_ca_bundle_trusts_the_server(self):
        p = self.request(self.secure, {"caBundle": self.pem("ca")}, REQUEST_FB)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        got, summary = self.attempts(p)
        self.assertEqual(got, [("secure", "s1", None, None, "succeeded")])
        self.assertEqual(summary["outcome"], "served")
        self.assertEqual(self.counts(self.secure), {"s1": 1})
        self.assertEqual(self.counts(self.plain), {})
        self.assertEqual(self.connections(self.secure, 1), (1, 0))
        self.assertEqual(self.secure.requests[0][1], "/v1/chat/completions")

    def test_ca_bundle_by_dns_name(self):
        """localhost: the server certificate's DNS name, not its IP."""
        url = "https://localhost:%d/v1" % self.secure.port
        p = self.request(self.secure, {"caBundle": self.pem("ca")}, base_url=url)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.attempts(p)[0], [("secure", "s1", None, None, "succeeded")])
        self.assertEqual(self.counts(self.secure), {"s1": 1})

    def test_connection_kept_alive(self):
        """Three requests, one handshake: the pooled connection is reused."""
        p = self.request(self.secure, {"caBundle": self.pem("ca")}, extra=["--repeat", "3"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, (completion() + b"\n") * 3)
        self.assertEqual(self.counts(self.secure), {"s1": 3})
        self.assertEqual(self.connections(self.secure, 1), (1, 0))

    # ---- (b) no caBundle, or another CA: tls, the host's other keys skipped ----

    def test_system_cas_do_not_trust_the_test_ca(self):
        p = self.request(self.secure, None, REQUEST_FB)
        self.assert_failed_over(p, self.secure)
        done, failed = self.connections(self.secure, 2)
        self.assertEqual((done, failed), (0, 2))
        self.assertIn("unknown ca", self.secure.handshake_errors[0])

    def test_ca_bundle_of_another_ca(self):
        """caBundle replaces the CAs: one that did not sign the server's
        certificate fails it."""
        p = self.request(self.secure, {"caBundle": self.pem("ca2")}, REQUEST_FB)
        self.assert_failed_over(p, self.secure)
        self.assertEqual(self.connections(self.secure, 2), (0, 2))

    def test_tls_failure_without_fallback(self):
        """No other model: the request ends after the secure host's steps."""
        p = self.request(self.secure, {})
        self.assertEqual(p.returncode, 1, p.stderr)
        got, summary = self.attempts(p)
        self.assertEqual(got, [("secure", "s1", "network", "tls", "next_backend"),
                               ("secure", "s3", "network", "tls", "exhausted")])
        self.assertEqual(summary["outcome"], "exhausted")
        self.assertEqual(self.counts(self.secure), {})

    def test_files_that_are_not_pem(self):
        """The parse checks only that the files can be read: what they hold
        fails at the handshake, each file its own way."""
        junk = os.path.join(self.tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        for tls in ({"caBundle": junk},
                    {"caBundle": self.pem("ca"), "clientCertificate": junk},
                    {"caBundle": self.pem("ca"), "clientCertificate": self.pem("client"),
                     "clientKey": junk}):
            for f in self.fakes:
                f.reset()
            p = self.request(self.mtls12, tls, REQUEST_FB)
            self.assert_failed_over(p, self.mtls12)

    # ---- (c) a certificate for the wrong name ----

    def test_wrong_name(self):
        p = self.request(self.wrong, {"caBundle": self.pem("ca")}, REQUEST_FB)
        self.assert_failed_over(p, self.wrong)
        # two connections; libcurl checks the name once its side of the
        # handshake is over, then leaves without sending the request
        self.assertEqual(sum(self.connections(self.wrong, 2)), 2)

    def test_wrong_name_by_dns_name(self):
        url = "https://localhost:%d/v1" % self.wrong.port
        p = self.request(self.wrong, {"caBundle": self.pem("ca")}, REQUEST_FB, base_url=url)
        self.assert_failed_over(p, self.wrong)

    # ---- (d) a client certificate required ----

    def test_client_certificate_missing(self):
        """TLS 1.2: the server refuses during the handshake."""
        p = self.request(self.mtls12, {"caBundle": self.pem("ca")}, REQUEST_FB)
        self.assert_failed_over(p, self.mtls12)
        self.assertEqual(self.connections(self.mtls12, 2), (0, 2))
        self.assertIn("did not return a certificate", self.mtls12.handshake_errors[0])

    def test_client_certificate_missing_tls13(self):
        """TLS 1.3: the client's handshake is over before the server looks
        at its (empty) certificate, so the server's alert arrives while the
        request is sent or its answer read: libcurl reports a send or
        receive error ("reset") or a TLS one, as the race goes.  Either way
        class network, the same moves, and no HTTP request served."""
        p = self.request(self.mtls13, {"caBundle": self.pem("ca")}, REQUEST_FB)
        self.assertEqual(p.returncode, 0, p.stderr)
        got, _ = self.attempts(p)
        self.assertEqual([(a[0], a[1], a[2], a[4]) for a in got], [
            ("secure", "s1", "network", "next_backend"),
            ("secure", "s3", "network", "next_backend"),
            ("plain", "p1", None, "succeeded")], p.stderr)
        for a in got[:2]:
            self.assertIn(a[3], ("reset", "tls"), got)
        self.assertEqual(self.counts(self.mtls13), {})
        self.assertEqual(self.connections(self.mtls13, 2), (0, 2))

    def test_client_certificate_given(self):
        for fake in (self.mtls12, self.mtls13):
            fake.reset()
            p = self.request(fake, {"caBundle": self.pem("ca"),
                                    "clientCertificate": self.pem("client"),
                                    "clientKey": self.pem("client", "key")}, REQUEST_FB)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(self.attempts(p)[0], [("secure", "s1", None, None, "succeeded")])
            self.assertEqual(self.counts(fake), {"s1": 1})
            self.assertEqual(self.connections(fake, 1), (1, 0))

    def test_custom_transport_example_honours_tls(self):
        """examples/custom-transport.c, a version 4 transport: the CA file and
        the client certificate and key reach it (gatewayConfig.tls), so a
        server that asks for a client certificate serves it; without them
        the handshake fails and the request falls back to plain."""
        if not CUSTOM_TRANSPORT or not os.access(CUSTOM_TRANSPORT, os.X_OK):
            self.skipTest("CUSTOM_TRANSPORT_BIN is not an executable")
        tls = {"caBundle": self.pem("ca"), "clientCertificate": self.pem("client"),
               "clientKey": self.pem("client", "key")}
        for given, want in ((tls, {"s1": 1}), ({"caBundle": self.pem("ca")}, {})):
            self.mtls12.reset()
            self.plain.reset()
            path = self.config_file(self.gateway(self.mtls12.base_url, given))
            p = subprocess.run([CUSTOM_TRANSPORT, path, json.dumps(REQUEST_FB)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.check_run(p)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout, completion() + b"\n")
            self.assertEqual(self.counts(self.mtls12), want, p.stderr)
            self.assertEqual(self.counts(self.plain), {} if want else {"p1": 1}, p.stderr)

    def test_client_key_in_the_certificate_file(self):
        p = self.request(self.mtls12, {"caBundle": self.pem("ca"),
                                       "clientCertificate": self.pem("client-both")})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.attempts(p)[0], [("secure", "s1", None, None, "succeeded")])
        self.assertEqual(self.counts(self.mtls12), {"s1": 1})

    def test_client_certificate_of_another_ca(self):
        p = self.request(self.mtls12, {"caBundle": self.pem("ca"),
                                       "clientCertificate": self.pem("client2"),
                                       "clientKey": self.pem("client2", "key")}, REQUEST_FB)
        self.assert_failed_over(p, self.mtls12)
        self.assertEqual(self.connections(self.mtls12, 2), (0, 2))

    def test_client_key_of_another_certificate(self):
        """A key that does not match the certificate: libcurl gives up
        after connecting, before its handshake."""
        p = self.request(self.mtls12, {"caBundle": self.pem("ca"),
                                       "clientCertificate": self.pem("client"),
                                       "clientKey": self.pem("client2", "key")}, REQUEST_FB)
        self.assert_failed_over(p, self.mtls12)
        self.assertEqual(self.connections(self.mtls12, 2), (0, 2))

    def test_encrypted_client_key_never_prompts(self):
        """An encrypted key fails as tls, at once: OpenSSL does not ask for
        its password on the controlling terminal (it would, and wait)."""
        cfg = self.gateway(self.mtls12.base_url, {"caBundle": self.pem("ca"),
                                                  "clientCertificate": self.pem("client"),
                                                  "clientKey": self.pem("client-enc", "key")})
        args = [AIGW, "request", "-c", self.config_file(cfg), "-d", json.dumps(REQUEST_FB),
                "--trace", "json"]
        p, tty = self.run_with_terminal(args)
        self.assertEqual(tty, b"")  # "Enter PEM pass phrase:" would be here
        self.assertIsNotNone(p, "aigw did not end")
        self.check_run(p)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, completion())
        self.assertEqual([a[1:4] for a in self.attempts(p)[0]],
                         [("s1", "network", "tls"), ("s3", "network", "tls"),
                          ("p1", None, None)])
        self.assertEqual(self.counts(self.mtls12), {})

    @staticmethod
    def run_with_terminal(args, timeout=20):
        """Runs args in a session of its own whose controlling terminal is a
        pty, stdout and stderr to pipes: (CompletedProcess or None when it
        had to be killed, what it wrote on the terminal)."""
        rout, wout = os.pipe()
        rerr, werr = os.pipe()
        pid, tty = pty.fork()
        if pid == 0:
            try:
                os.dup2(wout, 1)
                os.dup2(werr, 2)
                os.execv(args[0], args)
            finally:
                os._exit(127)
        os.close(wout)
        os.close(werr)
        got = {rout: b"", rerr: b"", tty: b""}
        open_fds = [rout, rerr, tty]
        deadline = time.monotonic() + timeout
        while (rout in open_fds or rerr in open_fds) and time.monotonic() < deadline:
            r, _, _ = select.select(open_fds, [], [], 0.2)
            for fd in r:
                try:
                    b = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last holder is gone
                    b = b""
                got[fd] += b
                if not b:
                    open_fds.remove(fd)
        status = None
        while time.monotonic() < deadline + 5:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            time.sleep(0.05)
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        for fd in (rout, rerr, tty):
            os.close(fd)
        if status is None:
            return None, got[tty]
        return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), got[rout],
                                           got[rerr]), got[tty]

if __name__ == "__main__":
    if not OPENSSL:
        print("openssl is not installed: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
