"""fake_provider.py - a fake LLM provider for the Python-driven tests
(test_cli.py, test_examples.py, test_serve.py): a ThreadingHTTPServer on
127.0.0.1, scripted per credential (status, headers, body, close without
answering, sleep, echo the Authorization header, or a Server-Sent Events
stream written chunk by chunk that ends cleanly, is cut mid-body or
stalls), counting what it receives per key.  Also the bodies it answers
with.  Over HTTPS too (tls_cert, tls_key; tls_client_ca to require a client
certificate; tls_max_version), counting the TLS handshakes that completed
and those that failed.  Python 3 standard library only.
"""
import json
import select
import shutil
import ssl
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sse(obj):
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def sse_role(cid="c1"):
    return sse({"id": cid, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})


def sse_token(text):
    return sse({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]})


SSE_FINISH = sse({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
SSE_DONE = b"data: [DONE]\n\n"
# Anthropic's in-band error on a 200 stream, before any content
SSE_OVERLOADED = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                  b'"message":"Overloaded"}}\n\n')


def sse_answer(*tokens):
    """The chunks of a complete streamed answer: role, tokens, finish, [DONE]."""
    return [sse_role()] + [sse_token(t) for t in tokens] + [SSE_FINISH, SSE_DONE]


# ---------------------------------------------------------------------------
# the fake provider
# ---------------------------------------------------------------------------

def completion(model="m1", text="Hello"):
    return json.dumps({"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant",
                                                            "content": text},
                                    "finish_reason": "stop"}]},
                      separators=(",", ":")).encode()


class FakeProvider:
    """Scripts per credential: a list of actions, the last one repeats.

    An action is a dict: status (200), headers (dict), body (bytes; the
    token $AUTH is replaced by the Authorization header received), close
    (read the request, close without answering), sleep (seconds first).
    A streamed answer: stream (a list of bytes, each written as one HTTP
    chunk and flushed; $AUTH replaced too; a number in the list is a pause
    of that many seconds), chunk_delay (seconds before each chunk), end ("ok": the last chunk; "cut": close the connection
    mid-body; "stall": send nothing more until the client goes away).
    Content-Type is text/event-stream unless headers name one.
    """

    STALL_MAX = 30  # seconds: a stalled stream never outlives a test run
    HANDSHAKE_MAX = 10  # seconds a client may take over its TLS handshake

    def __init__(self, tls_cert=None, tls_key=None, tls_client_ca=None, tls_max_version=None):
        """Plain HTTP; HTTPS with tls_cert and tls_key (PEM files), then
        also requiring a client certificate signed by tls_client_ca, and
        speaking at most tls_max_version (an ssl.TLSVersion) when given."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.scripts = {}
        self.requests = []  # (key, path, body)
        self.client_closed = []  # when a stalled stream's client went away
        self.tls = self._tls_context(tls_cert, tls_key, tls_client_ca, tls_max_version)
        self.handshakes = 0  # TLS handshakes that succeeded
        self.handshake_errors = []  # why the others failed (str)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                auth = self.headers.get("Authorization", "")
                key = auth[len("Bearer "):] if auth.startswith("Bearer ") else auth
                if not auth:  # Anthropic's and Google's key headers
                    key = (self.headers.get("x-api-key") or
                           self.headers.get("x-goog-api-key") or "")
                act = fake._take(key, self.path, body)
                if act.get("sleep"):
                    time.sleep(act["sleep"])
                if act.get("close"):
                    self.close_connection = True
                    return
                if act.get("stream") is not None:
                    self.stream(act, auth)
                    return
                out = act.get("body")
                if out is None:
                    out = completion()
                out = out.replace(b"$AUTH", auth.encode("latin-1"))
                self.send_response(act.get("status", 200))
                for k, v in act.get("headers", {}).items():
                    self.send_header(k, v.replace("$AUTH", auth))
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                try:
                    self.wfile.write(out)
                except OSError:
                    self.close_connection = True

            def stream(self, act, auth):
                self.send_response(act.get("status", 200))
                headers = dict(act.get("headers", {}))
                if not any(k.lower() == "content-type" for k in headers):
                    headers["Content-Type"] = "text/event-stream"
                for k, v in headers.items():
                    self.send_header(k, v.replace("$AUTH", auth))
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in act["stream"]:
                        if isinstance(chunk, (int, float)):
                            time.sleep(chunk)
                            continue
                        if act.get("chunk_delay"):
                            time.sleep(act["chunk_delay"])
                        chunk = chunk.replace(b"$AUTH", auth.encode("latin-1"))
                        if chunk:  # an empty chunk would end the body
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    end = act.get("end", "ok")
                    if end == "ok":
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        return
                    if end == "stall":
                        self.stall()
                except OSError:
                    pass
                self.close_connection = True  # "cut": a FIN mid-body

            def stall(self):
                """Nothing more until the client closes (or the server stops)."""
                deadline = time.monotonic() + fake.STALL_MAX
                while not fake.stopping.is_set() and time.monotonic() < deadline:
                    r, _, _ = select.select([self.connection], [], [], 0.1)
                    if r and not self.connection.recv(4096):
                        with fake.lock:
                            fake.client_closed.append(time.monotonic())
                        return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that timed out and left: not news

            def finish_request(self, request, client_address):
                if fake.tls is None:
                    super().finish_request(request, client_address)
                    return
                # In the request's own thread: a client that fails its
                # handshake never reaches the handler (nor self.requests).
                request.settimeout(fake.HANDSHAKE_MAX)
                try:
                    conn = fake.tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    with fake.lock:
                        fake.handshake_errors.append(str(e))
                    return
                with fake.lock:
                    fake.handshakes += 1
                conn.settimeout(None)
                try:
                    super().finish_request(conn, client_address)
                finally:
                    conn.close()  # wrap_socket took the descriptor over

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _tls_context(cert, key, client_ca, max_version):
        if not cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def base_url(self):
        return "%s://127.0.0.1:%d/v1" % ("https" if self.tls else "http", self.port)

    def script(self, key, *actions):
        with self.lock:
            self.scripts[key] = list(actions)

    def reset(self):
        with self.lock:
            self.scripts = {}
            self.requests = []
            self.client_closed = []
            self.handshakes = 0
            self.handshake_errors = []

    def _take(self, key, path, body):
        with self.lock:
            self.requests.append((key, path, body))
            acts = self.scripts.get(key)
            if not acts:
                return {}
            return acts.pop(0) if len(acts) > 1 else acts[0]

    def count(self, key=None):
        with self.lock:
            return sum(1 for r in self.requests if key is None or r[0] == key)

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


class FakeProviderCase(unittest.TestCase):
    """A test class with one fake provider (cls.fake), reset before each
    test, and a temporary folder (cls.tmp) for its files."""

    TMP_PREFIX = "aigw-test-"

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider()
        cls.tmp = tempfile.mkdtemp(prefix=cls.TMP_PREFIX)

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.fake.reset()
