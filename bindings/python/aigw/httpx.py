"""aigw.httpx - libaigw as an httpx transport, for the openai and anthropic SDKs.

    import httpx, openai, aigw.httpx
    client = openai.OpenAI(base_url="http://aigw.invalid/v1", api_key="unused",
                           http_client=httpx.Client(transport=aigw.httpx.Transport("gateway.json")))

Every call the SDK makes goes through libaigw's failover: the API surface
from the request path (/v1/chat/completions, /v1/responses, /v1/messages),
the model from the body, the keys from the gateway file (the SDK's
placeholder credentials are never sent anywhere).  Streamed answers come as
an httpx stream yielding the bytes as the upstream sends them; library-made
errors keep the provider's JSON error shape and the status (and Retry-After)
the library chose, so the SDK raises its own RateLimitError etc.  Each
response carries x-aigw-request-id, x-aigw-attempts, x-aigw-provider and
x-aigw-model, and the full record in response.extensions["aigw"] (the trace
as a dict; for a stream, once it has ended).

AsyncTransport is the same for httpx.AsyncClient (openai.AsyncOpenAI): the
request runs on a worker thread, never blocking the event loop; a cancelled
task cancels the request through the library.
"""
import asyncio
import json
import threading
from typing import Any, Dict, Optional

import httpx

from . import (AIGW_EINVAL, Client, Error, Headers, RequestError, Response, Stream, Timeout,
               _Call, _client_send)

__all__ = ["Transport", "AsyncTransport"]

# Dropped from what reaches httpx: the body is whole (or re-chunked by us)
# and already decoded.
_DROP = {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}


def _error_response(status: int, message: str, code: str) -> httpx.Response:
    body = json.dumps({"error": {"message": message, "type": "aigw_error", "code": code}})
    return httpx.Response(status, headers={"content-type": "application/json"},
                          content=body.encode())


def _wants_stream(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("stream") is True


def _timeout_of(request: httpx.Request) -> Optional[float]:
    t = request.extensions.get("timeout") or {}
    return t.get("read")


def _served(trace: Dict[str, Any]):
    for a in trace.get("attempts", []):
        if a.get("served"):
            return a["event"]
    return None


def _headers_for(headers: Headers, trace: Dict[str, Any]):
    out = [(k, v) for k, v in headers.items() if k.lower() not in _DROP]
    names = {k.lower() for k, _ in out}
    if "x-aigw-request-id" not in names:
        out.append(("x-aigw-request-id", trace.get("requestId", "")))
    out.append(("x-aigw-attempts", str(len(trace.get("attempts", [])))))
    ev = _served(trace)
    if ev:
        out.append(("x-aigw-provider", ev.get("provider", "")))
        out.append(("x-aigw-model", ev.get("model", "")))
    return out


_ANTHROPIC_TYPES = {400: "invalid_request_error", 405: "invalid_request_error",
                    422: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
                    529: "overloaded_error"}


def _anthropic_error(status: int, body: bytes) -> bytes:
    """The library's own errors are OpenAI's shape; on /v1/messages they
    become Anthropic's {"type":"error","error":{"type","message",...}}."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict) or err.get("type") != "aigw_error":
        return body
    err = dict(err, type=_ANTHROPIC_TYPES.get(status, "api_error"))
    return json.dumps({"type": "error", "error": err}).encode()


def _whole(request: httpx.Request, r: Response) -> httpx.Response:
    body = r.body
    if r.error_code and request.url.path.endswith("/messages"):
        body = _anthropic_error(r.status, body)
    return httpx.Response(r.status, headers=_headers_for(r.headers, r.trace), content=body,
                          request=request, extensions={"aigw": r.trace})


def _check(request: httpx.Request) -> Optional[httpx.Response]:
    if request.method != "POST":
        return _error_response(405, "libaigw serves POST requests to the model APIs",
                               "method_not_allowed")
    return None


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, stream: Stream, ext: Dict[str, Any]):
        self._s = stream
        self._ext = ext

    def __iter__(self):
        try:
            for chunk in self._s:
                yield chunk
        finally:
            self._s.close()
            if self._s.response is not None:
                self._ext["aigw"] = self._s.response.trace

    def close(self):
        self._s.close()


class Transport(httpx.BaseTransport):
    """An httpx transport sending every request through a libaigw Client.

    config_or_path: a gateway file's path, its JSON (dict or str), an
    aigw.Config, or client= an aigw.Client to share (then not closed here)."""

    def __init__(self, config_or_path=None, *, client: Optional[Client] = None):
        if client is None:
            if config_or_path is None:
                raise TypeError("aigw.httpx.Transport: give a gateway file or client=")
            if isinstance(config_or_path, str) and config_or_path.lstrip().startswith("{"):
                config_or_path = json.loads(config_or_path)
            client = Client(config_or_path)
            self._owns = True
        else:
            self._owns = False
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        bad = _check(request)
        if bad is not None:
            return bad
        body = request.read()
        path = request.url.path
        timeout = _timeout_of(request)
        try:
            if _wants_stream(body):
                s = self.client.stream(body, path=path, timeout=timeout).start()
                if not s.committed:  # ended before committing: the whole answer
                    s.close()
                    return _whole(request, s.response)
                ext: Dict[str, Any] = {}
                hdrs = [(k, v) for k, v in s.headers.items() if k.lower() not in _DROP]
                return httpx.Response(s.status, headers=hdrs, stream=_SyncBody(s, ext),
                                      request=request, extensions=ext)
            return _whole(request, self.client.send(body, path=path, timeout=timeout))
        except Timeout as e:
            raise httpx.ReadTimeout(str(e), request=request) from e
        except RequestError as e:
            return _error_response(400, str(e), "invalid_request")

    def close(self):
        if self._owns:
            self.client.close()

    def __repr__(self):
        return "<aigw.httpx.Transport %r>" % (self.client,)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, stream: Stream, ext: Dict[str, Any]):
        self._s = stream
        self._ext = ext

    async def __aiter__(self):
        loop = asyncio.get_running_loop()
        it = iter(self._s)
        done = object()
        try:
            while True:
                chunk = await loop.run_in_executor(None, next, it, done)
                if chunk is done:
                    break
                yield chunk
        finally:
            await loop.run_in_executor(None, self._s.close)
            if self._s.response is not None:
                self._ext["aigw"] = self._s.response.trace

    async def aclose(self):
        await asyncio.get_running_loop().run_in_executor(None, self._s.close)


class AsyncTransport(httpx.AsyncBaseTransport):
    """Transport for httpx.AsyncClient: the same, never blocking the loop; a
    cancelled task cancels the request through the library."""

    def __init__(self, config_or_path=None, *, client: Optional[Client] = None):
        self._sync = Transport(config_or_path, client=client)
        self.client = self._sync.client

    async def _send(self, body: bytes, path: str, timeout: Optional[float]) -> Response:
        c = self.client
        h = c._enter()
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        call = _Call(body, path, None)

        def work():
            call.run(lambda req, resp, err: _client_send(h, req, resp, err))
            loop.call_soon_threadsafe(done.set)

        worker = threading.Thread(target=work, name="aigw-request", daemon=True)
        worker.start()
        try:
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except asyncio.TimeoutError:
                call.fire()
                await loop.run_in_executor(None, worker.join)
                raise Timeout(AIGW_EINVAL, "aigw: the request took longer than %ss and was "
                                           "cancelled" % (timeout,))
            except asyncio.CancelledError:
                call.fire()
                await loop.run_in_executor(None, worker.join)
                raise
            await loop.run_in_executor(None, worker.join)
            return call.result()
        finally:
            if not worker.is_alive():
                call.free()
            c._leave()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        bad = _check(request)
        if bad is not None:
            return bad
        body = await request.aread()
        path = request.url.path
        timeout = _timeout_of(request)
        loop = asyncio.get_running_loop()
        try:
            if _wants_stream(body):
                s = await loop.run_in_executor(
                    None, lambda: self.client.stream(body, path=path, timeout=timeout).start())
                if not s.committed:
                    s.close()
                    return _whole(request, s.response)
                ext: Dict[str, Any] = {}
                hdrs = [(k, v) for k, v in s.headers.items() if k.lower() not in _DROP]
                return httpx.Response(s.status, headers=hdrs, stream=_AsyncBody(s, ext),
                                      request=request, extensions=ext)
            return _whole(request, await self._send(body, path, timeout))
        except Timeout as e:
            raise httpx.ReadTimeout(str(e), request=request) from e
        except RequestError as e:
            return _error_response(400, str(e), "invalid_request")

    async def aclose(self):
        await asyncio.get_running_loop().run_in_executor(None, self._sync.close)

    def __repr__(self):
        return "<aigw.httpx.AsyncTransport %r>" % (self.client,)


# keep Error importable from here too
Error = Error
