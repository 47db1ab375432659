"""aigw - Python bindings for libaigw (ctypes, standard library only).

    import aigw
    cfg = aigw.Config.load("gateway.json")          # raises aigw.ConfigError
    client = aigw.Client(cfg)
    resp = client.send({"model": "gpt-4o", "messages": [...]})
    print(resp.status, resp.body, resp.outcome)
    for a in resp.trace["attempts"]:
        print(a["event"]["providerKeyId"], a["retryAction"])
    health = client.stats()                         # {"keys": [...], "backends": ...}
    client.set_config(aigw.Config.load("new.json")) # hot swap; health carries over
    client.reset_health("primary")                  # or reset_health() for all

The library is found through $AIGW_LIBRARY, then the usual loader paths
("libaigw.so.0").  Objects free their C counterparts when collected; a
Client keeps its Config alive, as the C library does.
"""
import ctypes
import json
import os

__all__ = ["Config", "Client", "Response", "Error", "ConfigError", "RequestError",
           "version"]


def _load():
    path = os.environ.get("AIGW_LIBRARY")
    for name in ([path] if path else []) + ["libaigw.so.0", "libaigw.so"]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("libaigw not found: set AIGW_LIBRARY to the path of libaigw.so")


_lib = _load()
_p = ctypes.c_void_p
_cs = ctypes.c_char_p
_sz = ctypes.c_size_t


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_version_string = _fn("aigw_version_string", _cs)
_error_code = _fn("aigw_error_code", ctypes.c_int, _p)
_error_message = _fn("aigw_error_message", _cs, _p)
_error_count = _fn("aigw_error_count", _sz, _p)
_error_path = _fn("aigw_error_path", _cs, _p, _sz)
_error_problem = _fn("aigw_error_problem", _cs, _p, _sz)
_error_free = _fn("aigw_error_free", None, _p)
_config_parse = _fn("aigw_config_parse", ctypes.c_int, _cs, _sz, ctypes.POINTER(_p),
                    ctypes.POINTER(_p))
_config_load_file = _fn("aigw_config_load_file", ctypes.c_int, _cs, ctypes.POINTER(_p),
                        ctypes.POINTER(_p))
_config_unref = _fn("aigw_config_unref", _p, _p)
_client_new = _fn("aigw_client_new", ctypes.c_int, _p, ctypes.POINTER(_p), ctypes.POINTER(_p))
_client_free = _fn("aigw_client_free", None, _p)
_client_send = _fn("aigw_client_send", ctypes.c_int, _p, _p, ctypes.POINTER(_p),
                   ctypes.POINTER(_p))
_request_new = _fn("aigw_request_new", ctypes.c_int, ctypes.POINTER(_p))
_request_set_body = _fn("aigw_request_set_body", ctypes.c_int, _p, _cs, _sz)
_request_set_path = _fn("aigw_request_set_path", ctypes.c_int, _p, _cs)
_request_free = _fn("aigw_request_free", None, _p)
_response_status = _fn("aigw_response_status", ctypes.c_int, _p)
_response_body = _fn("aigw_response_body", _p, _p, ctypes.POINTER(_sz))
_response_outcome = _fn("aigw_response_outcome", ctypes.c_int, _p)
_outcome_name = _fn("aigw_outcome_name", _cs, ctypes.c_int)
_response_header_count = _fn("aigw_response_header_count", _sz, _p)
_response_header = _fn("aigw_response_header", ctypes.c_int, _p, _sz, ctypes.POINTER(_cs),
                       ctypes.POINTER(_cs))
_response_trace_json = _fn("aigw_response_trace_json", _cs, _p)
_response_error_code = _fn("aigw_response_error_code", _cs, _p)
_response_free = _fn("aigw_response_free", None, _p)

_ON_START = ctypes.CFUNCTYPE(ctypes.c_int, _p, ctypes.c_int, _p, _sz)
_ON_DATA = ctypes.CFUNCTYPE(ctypes.c_int, _p, ctypes.POINTER(ctypes.c_char), _sz)
_ON_RESET = ctypes.CFUNCTYPE(ctypes.c_int, _p, _cs)


class _StreamHandler(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("on_start", _ON_START), ("on_data", _ON_DATA),
                ("on_reset", _ON_RESET)]


_client_stream = _fn("aigw_client_stream", ctypes.c_int, _p, _p, ctypes.POINTER(_StreamHandler),
                     _p, ctypes.POINTER(_p), ctypes.POINTER(_p))
_request_set_stream_restart = _fn("aigw_request_set_stream_restart", ctypes.c_int, _p,
                                  ctypes.c_int)
_client_set_config = _fn("aigw_client_set_config", ctypes.c_int, _p, _p, ctypes.POINTER(_p))
_client_reset_health = _fn("aigw_client_reset_health", ctypes.c_int, _p, _cs)
_client_stats = _fn("aigw_client_stats", ctypes.c_int, _p, ctypes.POINTER(_p))
_stats_json = _fn("aigw_stats_json", _cs, _p)
_stats_free = _fn("aigw_stats_free", None, _p)

AIGW_EINVAL = -1
AIGW_ENOMEM = -2
AIGW_ECONFIG = -3
AIGW_EREQUEST = -5


def version():
    """The loaded library's version string."""
    return _version_string().decode()


class Error(Exception):
    """An error from libaigw: .code (negative status), .problems [(path, problem)]."""

    def __init__(self, code, message, problems):
        super().__init__(message)
        self.code = code
        self.problems = problems


class ConfigError(Error):
    """The gateway file is invalid; .problems names each JSON path."""


class RequestError(Error):
    """The request could not be started (body not JSON, no model, ...)."""


def _raise(status, err):
    try:
        if err:
            msg = _error_message(err).decode()
            probs = [((_error_path(err, i) or b"").decode(), (_error_problem(err, i) or b"").decode())
                     for i in range(_error_count(err))]
        else:
            msg, probs = "libaigw status %d" % status, []
    finally:
        _error_free(err)
    cls = ConfigError if status == AIGW_ECONFIG else RequestError if status == AIGW_EREQUEST else Error
    raise cls(status, msg, probs)


class Config:
    """A parsed, immutable gateway file."""

    def __init__(self, handle):
        self._h = handle

    @classmethod
    def parse(cls, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        out, err = _p(), _p()
        st = _config_parse(data, len(data), ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        return cls(out.value)

    @classmethod
    def load(cls, path):
        out, err = _p(), _p()
        st = _config_load_file(os.fsencode(path), ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        return cls(out.value)

    def __del__(self):
        if getattr(self, "_h", None):
            _config_unref(self._h)
            self._h = None


class Response:
    """The answer of one request and the record of its attempts."""

    def __init__(self, h):
        n = _sz()
        ptr = _response_body(h, ctypes.byref(n))
        self.body = ctypes.string_at(ptr, n.value) if n.value else b""
        self.status = _response_status(h)
        self.outcome = _outcome_name(_response_outcome(h)).decode()
        code = _response_error_code(h)
        self.error_code = code.decode() if code else None
        self.headers = {}
        for i in range(_response_header_count(h)):
            name, value = _cs(), _cs()
            _response_header(h, i, ctypes.byref(name), ctypes.byref(value))
            self.headers.setdefault(name.value.decode(), value.value.decode("latin-1"))
        self.trace = json.loads(_response_trace_json(h).decode())
        self.request_id = self.trace["requestId"]
        self.attempts = self.trace["attempts"]

    def json(self):
        return json.loads(self.body)


class Client:
    """Sends requests through failover; safe to use from several threads."""

    def __init__(self, config):
        out, err = _p(), _p()
        st = _client_new(config._h, ctypes.byref(out), ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        self._h = out.value
        self._config = config

    def _run(self, body, path, restart, call):
        """Builds the C request, runs call(req, resp_ptr, err_ptr) -> status,
        and returns the Response."""
        if isinstance(body, dict):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else bytes(body)
        req, resp, err = _p(), _p(), _p()
        if _request_new(ctypes.byref(req)) != 0:
            raise MemoryError
        try:
            if _request_set_body(req, data, len(data)) != 0:
                raise MemoryError
            if path is not None and _request_set_path(req, path.encode()) != 0:
                raise ValueError("bad path: %r" % path)
            if restart is not None:
                _request_set_stream_restart(req, 1 if restart else 0)
            st = call(req, ctypes.byref(resp), ctypes.byref(err))
            if st != 0:
                _raise(st, err)
            try:
                return Response(resp.value)
            finally:
                _response_free(resp)
        finally:
            _request_free(req)

    def send(self, body, path=None):
        """body: a dict (sent as JSON) or str/bytes.  Returns a Response."""
        return self._run(body, path, None,
                         lambda req, resp, err: _client_send(self._h, req, resp, err))

    def stream(self, body, on_data, on_reset=None, path=None, restart=None):
        """Sends a streamed request ("stream": true).  on_data(bytes) gets the
        served SSE bytes as they arrive; on_reset(reason: dict), if given, is
        told to discard what it got before a restart.  Either may return True
        to cancel.  Returns the Response (outcome "served", "stream_failed",
        ...; .body holds the error answer when nothing was committed)."""
        errors = []

        def start(_ud, _status, _headers, _n):
            return 0

        def chunk(_ud, ptr, n):
            try:
                return 1 if on_data(ctypes.string_at(ptr, n)) else 0
            except Exception as e:  # noqa: BLE001 - raised after the call
                errors.append(e)
                return 1

        def reset(_ud, reason):
            try:
                return 1 if (on_reset and on_reset(json.loads(reason.decode()))) else 0
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                return 1

        handler = _StreamHandler(1, _ON_START(start), _ON_DATA(chunk), _ON_RESET(reset))
        out = self._run(body, path, restart,
                        lambda req, resp, err: _client_stream(self._h, req, ctypes.byref(handler),
                                                              None, resp, err))
        if errors:
            raise errors[0]
        return out

    def _handle(self):
        if not getattr(self, "_h", None):
            raise Error(AIGW_EINVAL, "aigw: the client is closed", [])
        return self._h

    def stats(self):
        """A snapshot of the client's key health, as a dict: {"keys": [...],
        "backends": [...], "hosts": [...], "retryBudget": {...}} (the JSON
        of aigw_stats_json; see the README, "Key health")."""
        out = _p()
        st = _client_stats(self._handle(), ctypes.byref(out))
        if st != 0:
            _raise(st, None)
        try:
            text = _stats_json(out)
            if text is None:
                raise MemoryError
            return json.loads(text.decode())
        finally:
            _stats_free(out)

    def set_config(self, config):
        """Hot swap: requests started from now on use config (those in flight
        finish on the old one).  Key health carries over for unchanged keys;
        benches end.  Raises ConfigError for a bare configuration naming keys
        it does not hold (the client is then unchanged)."""
        err = _p()
        st = _client_set_config(self._handle(), config._h, ctypes.byref(err))
        if st != 0:
            _raise(st, err)
        self._config = config

    def reset_health(self, key_id=None):
        """Ends the cooldown or bench of every key with that id, or with
        key_id None of every key (and closes every circuit breaker).
        Counters are kept.  Raises Error (code AIGW_EINVAL) when key_id names
        no key of the current configuration."""
        st = _client_reset_health(self._handle(),
                                  None if key_id is None else key_id.encode())
        if st != 0:
            msg = ("aigw: no key %r in the client's configuration" % key_id
                   if st == AIGW_EINVAL and key_id is not None else None)
            if msg:
                raise Error(st, msg, [])
            _raise(st, None)

    def close(self):
        if getattr(self, "_h", None):
            _client_free(self._h)
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
