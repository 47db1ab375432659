"""aigw - libaigw for Python (ctypes, standard library only).

    import aigw
    cfg = aigw.Config.load("gateway.json")          # raises aigw.ConfigError
    with aigw.Client(cfg) as client:
        resp = client.send({"model": "gpt-4o", "messages": [...]}, timeout=30)
        print(resp.status, resp.body, resp.outcome, resp.headers.get_all("set-cookie"))
        for a in resp.attempts:
            print(a["event"]["providerKeyId"], a["retryAction"])
        for chunk in client.stream({"model": "gpt-4o", "stream": True, ...}):
            print(chunk)                            # SSE bytes as they arrive
        health = client.health()                    # typed; client.stats(): the JSON
        client.set_config(aigw.Config.load("new.json"))  # hot swap
        client.reset_health("primary")

For the openai / anthropic SDKs, see aigw.httpx.Transport.

The library is found through $AIGW_LIBRARY (the path of libaigw.so), then
`pkg-config --variable=libdir libaigw`, then the loader ("libaigw.so.0").

Every call runs the C request on a worker thread while the calling thread
waits: Ctrl-C (KeyboardInterrupt) and a per-call timeout cancel the request
through the library (an aigw_cancel token) before the exception is raised.
A Client is safe to share between threads; close() waits for the requests
in flight and refuses new ones, so it never frees the client under them.
"""
import ctypes
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["Config", "Client", "Response", "Headers", "Stream", "Stats", "KeyStat",
           "Error", "ConfigError", "RequestError", "Timeout", "Closed", "version",
           "library_path"]


# ---------------------------------------------------------------------------
# finding and binding the library
# ---------------------------------------------------------------------------

def _candidates():
    tried = []
    path = os.environ.get("AIGW_LIBRARY")
    if path:
        tried.append(("$AIGW_LIBRARY", path))
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "libaigw"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            libdir = ""
        if libdir:
            tried.append(("pkg-config libdir", os.path.join(libdir, "libaigw.so.0")))
    tried.append(("the loader", "libaigw.so.0"))
    tried.append(("the loader", "libaigw.so"))
    return tried


def _load():
    notes = []
    for how, name in _candidates():
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            notes.append("%s: %s (%s)" % (how, name, e))
    raise OSError("libaigw not found; tried:\n  " + "\n  ".join(notes) +
                  "\nSet AIGW_LIBRARY to the path of libaigw.so, or install libaigw "
                  "(meson install) so that pkg-config finds libaigw.pc.")


_lib, _lib_path = _load()
_p = ctypes.c_void_p
_cs = ctypes.c_char_p
_sz = ctypes.c_size_t
_i = ctypes.c_int


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_version_string = _fn("aigw_version_string", _cs)
_error_message = _fn("aigw_error_message", _cs, _p)
_error_count = _fn("aigw_error_count", _sz, _p)
_error_path = _fn("aigw_error_path", _cs, _p, _sz)
_error_problem = _fn("aigw_error_problem", _cs, _p, _sz)
_error_free = _fn("aigw_error_free", None, _p)
_config_parse = _fn("aigw_config_parse", _i, _cs, _sz, ctypes.POINTER(_p), ctypes.POINTER(_p))
_config_load_file = _fn("aigw_config_load_file", _i, _cs, ctypes.POINTER(_p),
                        ctypes.POINTER(_p))
_config_unref = _fn("aigw_config_unref", None, _p)
_client_new = _fn("aigw_client_new", _i, _p, ctypes.POINTER(_p), ctypes.POINTER(_p))
_client_free = _fn("aigw_client_free", None, _p)
_client_send = _fn("aigw_client_send", _i, _p, _p, ctypes.POINTER(_p), ctypes.POINTER(_p))
_request_new = _fn("aigw_request_new", _i, ctypes.POINTER(_p))
_request_set_body = _fn("aigw_request_set_body", _i, _p, _cs, _sz)
_request_set_path = _fn("aigw_request_set_path", _i, _p, _cs)
_request_set_cancel = _fn("aigw_request_set_cancel", _i, _p, _p)
_request_set_stream_restart = _fn("aigw_request_set_stream_restart", _i, _p, _i)
_request_free = _fn("aigw_request_free", None, _p)
_cancel_new = _fn("aigw_cancel_new", _i, ctypes.POINTER(_p))
_cancel_fire = _fn("aigw_cancel_fire", None, _p)
_cancel_free = _fn("aigw_cancel_free", None, _p)
_response_status = _fn("aigw_response_status", _i, _p)
_response_body = _fn("aigw_response_body", _p, _p, ctypes.POINTER(_sz))
_response_outcome = _fn("aigw_response_outcome", _i, _p)
_outcome_name = _fn("aigw_outcome_name", _cs, _i)
_response_header_count = _fn("aigw_response_header_count", _sz, _p)
_response_header = _fn("aigw_response_header", _i, _p, _sz, ctypes.POINTER(_cs),
                       ctypes.POINTER(_cs))
_response_trace_json = _fn("aigw_response_trace_json", _cs, _p)
_response_error_code = _fn("aigw_response_error_code", _cs, _p)
_response_model = _fn("aigw_response_model", _cs, _p)
_response_free = _fn("aigw_response_free", None, _p)

_ON_START = ctypes.CFUNCTYPE(_i, _p, _i, _p, _sz)
_ON_DATA = ctypes.CFUNCTYPE(_i, _p, ctypes.POINTER(ctypes.c_char), _sz)
_ON_RESET = ctypes.CFUNCTYPE(_i, _p, _cs)


class _Header(ctypes.Structure):
    _fields_ = [("name", _cs), ("value", _cs)]


class _StreamHandler(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("on_start", _ON_START), ("on_data", _ON_DATA),
                ("on_reset", _ON_RESET)]


_client_stream = _fn("aigw_client_stream", _i, _p, _p, ctypes.POINTER(_StreamHandler), _p,
                     ctypes.POINTER(_p), ctypes.POINTER(_p))
_client_set_config = _fn("aigw_client_set_config", _i, _p, _p, ctypes.POINTER(_p))
_client_reset_health = _fn("aigw_client_reset_health", _i, _p, _cs)
_client_stats = _fn("aigw_client_stats", _i, _p, ctypes.POINTER(_p))
_stats_json = _fn("aigw_stats_json", _cs, _p)
_stats_free = _fn("aigw_stats_free", None, _p)

AIGW_EINVAL = -1
AIGW_ENOMEM = -2
AIGW_ECONFIG = -3
AIGW_EREQUEST = -5


def version() -> str:
    """The loaded library's version string."""
    return _version_string().decode()


def library_path() -> str:
    """Where the loaded libaigw was found."""
    return _lib_path


def _text(b: Optional[bytes]) -> str:
    """C strings the library hands out: UTF-8, never trusted to be."""
    return b.decode("utf-8", "replace") if b else ""


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

class Error(Exception):
    """An error from libaigw: .code (negative status), .problems [(path, problem)]."""

    def __init__(self, code: int, message: str, problems=()):
        super().__init__(message)
        self.code = code
        self.problems = list(problems)


class ConfigError(Error):
    """The gateway file is invalid; .problems names each JSON path."""


class RequestError(Error):
    """The request could not be started (body not JSON, no model, ...)."""


class Closed(Error):
    """The client is closed (or closing)."""


class Timeout(Error, TimeoutError):
    """The call's timeout passed: the request was cancelled through the library."""


def _raise(status, err):
    try:
        if err:
            msg = _text(_error_message(err))
            probs = [(_text(_error_path(err, i)), _text(_error_problem(err, i)))
                     for i in range(_error_count(err))]
        else:
            msg, probs = "libaigw status %d" % status, []
    finally:
        _error_free(err)
    cls = ConfigError if status == AIGW_ECONFIG else RequestError if status == AIGW_EREQUEST \
        else Error
    raise cls(status, msg, probs)


# ---------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------

class Config:
    """A parsed, immutable gateway file."""

    def __init__(self, handle):
        self._h = handle

    @classmethod
    def parse(cls, text) -> "Config":
        if isinstance(text, dict):
            text = json.dumps(text)
        data = text.encode() if isinstance(text, str) else bytes(text)
        out, err = _p(), _p()
        st = _config_parse(data, len(data), ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        return cls(out.value)

    @classmethod
    def load(cls, path) -> "Config":
        out, err = _p(), _p()
        st = _config_load_file(os.fsencode(path), ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        return cls(out.value)

    def __repr__(self):
        return "<aigw.Config at %#x>" % (self._h or 0)

    def __del__(self):
        if getattr(self, "_h", None):
            _config_unref(self._h)
            self._h = None


# ---------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------

class Headers:
    """Response headers in order, repeated names kept; lookups ignore case."""

    def __init__(self, pairs: List[Tuple[str, str]]):
        self._pairs = pairs

    def items(self) -> List[Tuple[str, str]]:
        return list(self._pairs)

    def get(self, name: str, default=None):
        n = name.lower()
        for k, v in self._pairs:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name: str) -> List[str]:
        n = name.lower()
        return [v for k, v in self._pairs if k.lower() == n]

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __contains__(self, name):
        return self.get(name) is not None

    def __iter__(self):
        return iter(k for k, _ in self._pairs)

    def __len__(self):
        return len(self._pairs)

    def __repr__(self):
        return "Headers(%r)" % (self._pairs,)


def _headers_of(h) -> Headers:
    pairs = []
    for i in range(_response_header_count(h)):
        name, value = _cs(), _cs()
        _response_header(h, i, ctypes.byref(name), ctypes.byref(value))
        pairs.append((_text(name.value), (value.value or b"").decode("latin-1")))
    return Headers(pairs)


class Response:
    """The answer of one request and the record of its attempts."""

    def __init__(self, h):
        n = _sz()
        ptr = _response_body(h, ctypes.byref(n))
        self.body: bytes = ctypes.string_at(ptr, n.value) if n.value else b""
        self.status: int = _response_status(h)
        self.outcome: str = _text(_outcome_name(_response_outcome(h)))
        code = _response_error_code(h)
        self.error_code: Optional[str] = _text(code) if code else None
        self.model: str = _text(_response_model(h))
        self.headers = _headers_of(h)
        self.trace: Dict[str, Any] = json.loads(_text(_response_trace_json(h)))
        self.request_id: str = self.trace["requestId"]
        self.attempts: List[Dict[str, Any]] = self.trace["attempts"]
        self.skipped: List[Dict[str, Any]] = self.trace.get("skipped", [])

    @property
    def served_by(self) -> Optional[Dict[str, Any]]:
        """The attempt that served the answer (its "event"), or None."""
        for a in self.attempts:
            if a.get("served"):
                return a["event"]
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<aigw.Response %d %s %s, %d attempt%s>" % (
            self.status, self.outcome, self.request_id, len(self.attempts),
            "" if len(self.attempts) == 1 else "s")


# ---------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------

@dataclass
class KeyStat:
    """One entry of a snapshot: a key, an endpoint (key + model), a backend or a host."""
    kind: str
    provider: str
    id: str
    model: str
    state: str
    reason: Optional[str]
    wait_ms: int
    requests: int
    successes: int
    failures: int
    skips: int
    failures_by_class: Dict[str, int] = field(default_factory=dict)
    latency_ms: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _of(cls, kind, e):
        return cls(kind, e.get("provider", ""), e.get("id", e.get("host", "")),
                   e.get("model", ""), e["state"], e.get("reason"), e.get("waitMs", 0),
                   e.get("requests", 0), e.get("successes", 0), e.get("failures", 0),
                   e.get("skips", 0), dict(e.get("failuresByClass", {})),
                   dict(e.get("latencyMs", {})))


@dataclass
class Stats:
    """A typed snapshot of a client's key health (Client.health()); .json is
    the same as Client.stats()."""
    keys: List[KeyStat]
    endpoints: List[KeyStat]
    backends: List[KeyStat]
    hosts: List[KeyStat]
    retry_budget: Dict[str, Any]
    health_store: Dict[str, Any]
    json: Dict[str, Any]

    def key(self, id: str, provider: Optional[str] = None) -> Optional[KeyStat]:
        for k in self.keys:
            if k.id == id and (provider is None or k.provider == provider):
                return k
        return None


# ---------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------

def _body_bytes(body) -> bytes:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return body.encode() if isinstance(body, str) else bytes(body)


class _Call:
    """One C request: its aigw_request and cancel token, run on a worker
    thread while the caller waits (so Ctrl-C and timeouts can cancel it)."""

    def __init__(self, body, path, restart):
        self.req, self.cancel = _p(), _p()
        if _request_new(ctypes.byref(self.req)) != 0:
            raise MemoryError
        if _cancel_new(ctypes.byref(self.cancel)) != 0:
            _request_free(self.req)
            raise MemoryError
        try:
            data = _body_bytes(body)
            if _request_set_body(self.req, data, len(data)) != 0:
                raise MemoryError
            if path is not None and _request_set_path(self.req, path.encode()) != 0:
                raise ValueError("aigw: bad request path: %r" % (path,))
            if restart is not None:
                _request_set_stream_restart(self.req, 1 if restart else 0)
            _request_set_cancel(self.req, self.cancel)
        except BaseException:
            self.free()
            raise
        self.resp, self.err = _p(), _p()
        self.status = None
        self.exc = None
        self.done = threading.Event()

    def fire(self):
        _cancel_fire(self.cancel)

    def free(self):
        _request_free(self.req)
        _cancel_free(self.cancel)

    def run(self, fn):
        try:
            self.status = fn(self.req, ctypes.byref(self.resp), ctypes.byref(self.err))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.exc = e
        finally:
            self.done.set()

    def result(self) -> Response:
        if self.exc:
            raise self.exc
        if self.status != 0:
            _raise(self.status, self.err)
        try:
            return Response(self.resp.value)
        finally:
            _response_free(self.resp)


class Client:
    """Sends requests through failover; safe to use from several threads.

    client.send(body, path=None, timeout=None) -> Response
    client.stream(body, ...) -> Stream (an iterator of the SSE bytes), or with
        on_data=... the callback form (returns the Response)
    client.stats() -> dict (JSON);  client.health() -> Stats (typed)
    """

    def __init__(self, config):
        if isinstance(config, (str, os.PathLike)):
            config = Config.load(config)
        elif isinstance(config, dict):
            config = Config.parse(config)
        out, err = _p(), _p()
        st = _client_new(config._h, ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        self._h = out.value
        self._config = config
        self._cv = threading.Condition()
        self._inflight = 0
        self._closing = False

    # ---- requests in flight, and closing ----

    def _enter(self):
        with self._cv:
            if self._closing or not self._h:
                raise Closed(AIGW_EINVAL, "aigw: the client is closed")
            self._inflight += 1
            return self._h

    def _leave(self):
        with self._cv:
            self._inflight -= 1
            self._cv.notify_all()

    def _wait(self, call: _Call, timeout: Optional[float]):
        """Waits for the worker; Ctrl-C or the timeout cancel the request
        through the library, then the worker is joined before raising."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # in slices: a signal's handler (Ctrl-C) runs between them
            while not call.done.wait(0.05 if deadline is None else
                                     max(0.0, min(0.05, deadline - time.monotonic()))):
                if deadline is not None and time.monotonic() >= deadline:
                    call.fire()
                    call.done.wait()
                    raise Timeout(AIGW_EINVAL, "aigw: the request took longer than %ss and "
                                               "was cancelled" % (timeout,))
        except KeyboardInterrupt:
            call.fire()
            call.done.wait()
            raise

    def _call(self, body, path, restart, timeout, fn) -> Response:
        h = self._enter()
        try:
            call = _Call(body, path, restart)
            try:
                worker = threading.Thread(target=call.run, args=(lambda *a: fn(h, *a),),
                                          name="aigw-request", daemon=True)
                worker.start()
                try:
                    self._wait(call, timeout)
                finally:
                    worker.join()
                return call.result()
            finally:
                call.free()
        finally:
            self._leave()

    def send(self, body, path: Optional[str] = None, timeout: Optional[float] = None) -> Response:
        """body: a dict (sent as JSON) or str/bytes; path: the API path
        ("/v1/chat/completions" by default; "/v1/responses", "/v1/messages").
        timeout: seconds, then the request is cancelled and Timeout raised."""
        return self._call(body, path, None, timeout,
                          lambda h, req, resp, err: _client_send(h, req, resp, err))

    def stream(self, body, on_data=None, on_reset=None, path: Optional[str] = None,
               restart: Optional[bool] = None, timeout: Optional[float] = None):
        """A streamed request ("stream": true).

        Without on_data: returns a Stream, an iterator of the served SSE bytes
        as they arrive (stream.events() parses them; stream.response is the
        Response once it ended; closing it early cancels the request).

        With on_data(bytes): calls it with the bytes as they arrive (on a
        worker thread); on_reset(reason: dict), if given, is told to discard
        what it got before a restart; either may return True to cancel.
        Returns the Response."""
        if on_data is None:
            return Stream(self, body, path, restart, timeout)
        errors = []

        def chunk(_ud, ptr, n):
            try:
                return 1 if on_data(ctypes.string_at(ptr, n)) else 0
            except Exception as e:  # noqa: BLE001 - raised after the call
                errors.append(e)
                return 1

        def reset(_ud, reason):
            try:
                return 1 if (on_reset and on_reset(json.loads(_text(reason)))) else 0
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                return 1

        handler = _StreamHandler(1, _ON_START(lambda *_: 0), _ON_DATA(chunk), _ON_RESET(reset))
        out = self._call(body, path, restart, timeout,
                         lambda h, req, resp, err: _client_stream(h, req, ctypes.byref(handler),
                                                                  None, resp, err))
        if errors:
            raise errors[0]
        return out

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the client's key health as the JSON of aigw_stats_json
        ({"keys": [...], "endpoints": [...], "backends": [...], "hosts": [...],
        "healthStore": {...}, "retryBudget": {...}})."""
        h = self._enter()
        try:
            out = _p()
            st = _client_stats(h, ctypes.byref(out))
            if st != 0:
                _raise(st, None)
            try:
                text = _stats_json(out)
                if text is None:
                    raise MemoryError
                return json.loads(_text(text))
            finally:
                _stats_free(out)
        finally:
            self._leave()

    def health(self) -> Stats:
        """The same snapshot, typed."""
        j = self.stats()
        return Stats([KeyStat._of("key", e) for e in j.get("keys", [])],
                     [KeyStat._of("endpoint", e) for e in j.get("endpoints", [])],
                     [KeyStat._of("backend", e) for e in j.get("backends", [])],
                     [KeyStat._of("host", e) for e in j.get("hosts", [])],
                     j.get("retryBudget", {}), j.get("healthStore", {}), j)

    def set_config(self, config):
        """Hot swap: requests started from now on use config (those in flight
        finish on the old one).  Raises ConfigError for a bare configuration
        naming keys it does not hold (the client is then unchanged)."""
        if isinstance(config, (str, os.PathLike)):
            config = Config.load(config)
        h = self._enter()
        try:
            err = _p()
            st = _client_set_config(h, config._h, ctypes.byref(err))
            if st != 0:
                _raise(st, err)
            self._config = config
        finally:
            self._leave()

    def reset_health(self, key_id: Optional[str] = None):
        """Ends the cooldown or bench of every key with that id (None: every
        key, and closes every circuit breaker).  Raises Error (code
        AIGW_EINVAL) when key_id names no key of the current configuration."""
        h = self._enter()
        try:
            st = _client_reset_health(h, None if key_id is None else key_id.encode())
            if st != 0:
                if st == AIGW_EINVAL and key_id is not None:
                    raise Error(st, "aigw: no key %r in the client's configuration" % key_id)
                _raise(st, None)
        finally:
            self._leave()

    def close(self, timeout: Optional[float] = None) -> bool:
        """Refuses new requests, waits for those in flight (at most timeout
        seconds; None: as long as they take), then frees the client.  Returns
        False (and frees nothing) when the wait timed out."""
        cv = getattr(self, "_cv", None)
        if cv is None:
            return True
        with cv:
            self._closing = True
            if not cv.wait_for(lambda: self._inflight == 0, timeout):
                return False
            if self._h:
                _client_free(self._h)
                self._h = None
        return True

    def __del__(self):
        if getattr(self, "_h", None) and getattr(self, "_inflight", 0) == 0:
            _client_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if not self._h else "closing" if self._closing else "open"
        return "<aigw.Client %s, %d in flight>" % (state, self._inflight)


_DONE = object()


class Stream:
    """A streamed request, as an iterator of the served SSE bytes.

    Iterating yields each chunk as the upstream sends it (nothing before the
    library has committed to an answer: failover before the first token is
    invisible).  .status and .headers are set once it committed (start()
    waits for that); .response is the Response once it ended; .reset
    (a dict) is set if a restart discarded what came before (a restart
    can only happen with restart=True).  close() (or leaving a with block,
    or dropping the iterator) cancels the request if it is still running."""

    def __init__(self, client: Client, body, path, restart, timeout):
        self._client = client
        self._q: "queue.Queue" = queue.Queue()
        self._started = threading.Event()
        self.status: Optional[int] = None
        self.headers: Optional[Headers] = None
        self.response: Optional[Response] = None
        self.reset: Optional[Dict[str, Any]] = None
        self.committed = False  # the answer's head reached us (on_start)
        self._error: Optional[BaseException] = None
        self._timeout = timeout
        self._h = client._enter()
        try:
            self._call = _Call(body, path, restart)
        except BaseException:
            client._leave()
            raise
        self._handler = _StreamHandler(1, _ON_START(self._on_start), _ON_DATA(self._on_data),
                                       _ON_RESET(self._on_reset))
        self._worker = threading.Thread(target=self._run, name="aigw-stream", daemon=True)
        self._finished = False
        self._lock = threading.Lock()
        self._freed = False
        self._worker.start()
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._timer = None

    # ---- the worker thread ----

    def _on_start(self, _ud, status, headers, n):
        hs = ctypes.cast(headers, ctypes.POINTER(_Header))
        self.headers = Headers([(_text(hs[i].name), (hs[i].value or b"").decode("latin-1"))
                                for i in range(n)])
        self.status = status
        self.committed = True
        self._started.set()
        return 0

    def _on_data(self, _ud, ptr, n):
        self._q.put(ctypes.string_at(ptr, n))
        return 0

    def _on_reset(self, _ud, reason):
        self.reset = json.loads(_text(reason))
        return 0

    def _run(self):
        h = self._h
        self._call.run(lambda req, resp, err: _client_stream(h, req, ctypes.byref(self._handler),
                                                             None, resp, err))
        try:
            self.response = self._call.result()
            if self.status is None:
                self.status = self.response.status
                self.headers = self.response.headers
        except BaseException as e:  # noqa: BLE001 - raised by the iterator
            self._error = e
        finally:
            self._client._leave()
            self._started.set()
            self._q.put(_DONE)

    def _fire(self):
        with self._lock:
            if not self._freed:
                self._call.fire()

    def _end(self):
        """Joins the worker and frees the C request and its token, once."""
        self._worker.join()
        if self._timer:
            self._timer.cancel()
        with self._lock:
            if not self._freed:
                self._freed = True
                self._call.free()
        self._finished = True

    # ---- the caller's side ----

    def start(self) -> "Stream":
        """Waits until the answer committed (or the request ended)."""
        try:
            while not self._started.wait(0.05):
                pass
        except KeyboardInterrupt:
            self.close()
            raise
        if self._error:
            raise self._error
        return self

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._finished:
            raise StopIteration
        try:
            while True:
                try:
                    item = self._q.get(timeout=0.05)
                    break
                except queue.Empty:
                    continue
        except KeyboardInterrupt:
            self.close()
            raise
        if item is _DONE:
            self._end()
            if self._error:
                raise self._error
            if self.response and self.response.outcome == "cancelled" and self._timeout:
                raise Timeout(AIGW_EINVAL, "aigw: the stream took longer than %ss and was "
                                           "cancelled" % (self._timeout,))
            raise StopIteration
        return item

    def events(self) -> Iterator[Dict[str, Any]]:
        """The served Server-Sent Events: {"event": name or None, "data": str,
        "json": the parsed data or None}; "[DONE]" ends it."""
        buf = b""
        for chunk in self:
            buf += chunk.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                ev, data = None, []
                for line in raw.split(b"\n"):
                    if line.startswith(b"event:"):
                        ev = line[6:].strip().decode("utf-8", "replace")
                    elif line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" ").decode("utf-8", "replace"))
                if not data and ev is None:
                    continue
                text = "\n".join(data)
                if text == "[DONE]":
                    return
                try:
                    parsed = json.loads(text) if text else None
                except ValueError:
                    parsed = None
                yield {"event": ev, "data": text, "json": parsed}

    def close(self):
        """Cancels the request if it still runs, and waits for it to end."""
        self._fire()
        self._end()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self):
        state = "ended" if self._finished else "streaming" if self.status else "starting"
        return "<aigw.Stream %s%s>" % (state, " %d" % self.status if self.status else "")
