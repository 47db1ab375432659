package aigw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// NewTransport makes an http.RoundTripper sending every request through
// client's failover, for &http.Client{Transport: aigw.NewTransport(c)} and
// so for openai-go's and anthropic-sdk-go's option.WithHTTPClient:
//
//   - the API surface comes from the request path (…/chat/completions,
//     …/responses, …/messages, whatever the base URL's host and prefix),
//     the model from the body, the keys from the gateway file: the
//     request's headers, the SDK's placeholder Authorization and x-api-key
//     among them, are never sent anywhere;
//   - req.Context() cancels the request through the library (the attempt in
//     flight is abandoned and its connection closed); RoundTrip, or the
//     body's Read for a stream, returns ctx.Err();
//   - a body with "stream": true is streamed: the response is returned once
//     the answer committed, its Body yielding the bytes as the upstream
//     sends them (closing it early cancels the request);
//   - an answer the library made (every key rate limited, timed out, ...)
//     keeps the provider's JSON error shape (Anthropic's for /v1/messages),
//     its status and Retry-After, so the SDK raises its own errors;
//   - each response carries x-aigw-request-id, x-aigw-attempts,
//     x-aigw-provider and x-aigw-model (the served attempt's); for a stream
//     they are trailers (resp.Trailer, set once the body reached its end).
//
// Requests other than POST are answered 405.  The client is not closed by
// the transport.
func NewTransport(client *Client) http.RoundTripper { return &transport{client} }

type transport struct{ cl *Client }

// Headers not passed on: the body is whole or re-chunked here, and decoded.
var dropHeaders = map[string]bool{"Content-Length": true, "Transfer-Encoding": true,
	"Content-Encoding": true, "Connection": true, "Keep-Alive": true, "Trailer": true}

var aigwHeaders = []string{"X-Aigw-Request-Id", "X-Aigw-Attempts", "X-Aigw-Provider", "X-Aigw-Model"}

// apiPath maps a request path onto the library's API path.
func apiPath(p string) string {
	for _, s := range []string{"/chat/completions", "/responses", "/messages"} {
		if strings.HasSuffix(p, s) {
			return "/v1" + s
		}
	}
	if i := strings.Index(p, "/v1/"); i >= 0 {
		return p[i:]
	}
	if p == "" {
		return "/"
	}
	return p
}

func wantsStream(body []byte) bool {
	var b struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(body, &b) == nil && b.Stream
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	path := apiPath(req.URL.Path)
	if req.Method != http.MethodPost {
		return errorResponse(req, path, http.StatusMethodNotAllowed, "method_not_allowed",
			"libaigw serves POST requests to the model APIs", nil), nil
	}
	ctx := req.Context()
	if wantsStream(body) {
		s, err := t.cl.OpenStream(ctx, body, path)
		if err != nil {
			return t.failed(req, path, err)
		}
		if !s.Committed { // ended before any content: the whole answer
			return wholeResponse(req, path, s.Response()), nil
		}
		sb := &streamBody{s: s, trailer: http.Header{}}
		for _, k := range aigwHeaders {
			sb.trailer[k] = nil
		}
		return &http.Response{
			Status: statusText(s.Status), StatusCode: s.Status,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: passHeaders(s.Header), Body: sb, ContentLength: -1,
			Trailer: sb.trailer, Request: req,
		}, nil
	}
	r, err := t.cl.SendContext(ctx, body, path)
	if err != nil {
		return t.failed(req, path, err)
	}
	return wholeResponse(req, path, r), nil
}

// failed: an unusable request is answered 400 in the provider's shape;
// anything else (ctx.Err(), ErrClosed) is RoundTrip's error.
func (t *transport) failed(req *http.Request, path string, err error) (*http.Response, error) {
	var e *Error
	if errors.As(err, &e) && (e.Code == ErrRequest || strings.HasPrefix(e.Message, "aigw: bad path")) {
		return errorResponse(req, path, http.StatusBadRequest, "invalid_request", e.Message, nil), nil
	}
	return nil, err
}

func statusText(code int) string {
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

func passHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		k = http.CanonicalHeaderKey(k)
		if !dropHeaders[k] {
			out[k] = append(out[k], vs...)
		}
	}
	return out
}

// The x-aigw-* headers of a response.
func setAigwHeaders(h http.Header, r *Response) {
	if r == nil || r.RequestID == "" { // an answer made here, not by the library
		return
	}
	h.Set("X-Aigw-Request-Id", r.RequestID)
	h.Set("X-Aigw-Attempts", strconv.Itoa(len(r.Attempts)))
	if a := r.Served(); a != nil {
		h.Set("X-Aigw-Provider", a.Event.Provider)
		h.Set("X-Aigw-Model", a.Event.Model)
	}
}

func wholeResponse(req *http.Request, path string, r *Response) *http.Response {
	h := passHeaders(r.Header)
	setAigwHeaders(h, r)
	body := r.Body
	if r.ErrorCode != "" && strings.HasSuffix(path, "/messages") {
		body = anthropicError(r.Status, body)
	}
	return &http.Response{
		Status: statusText(r.Status), StatusCode: r.Status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

// The library's error {"error":{"message","type":"aigw_error","code",...}}
// is OpenAI's shape; Anthropic's is {"type":"error","error":{"type","message"}}.
func anthropicError(status int, body []byte) []byte {
	var doc struct {
		Error map[string]interface{} `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil || doc.Error == nil || doc.Error["type"] != "aigw_error" {
		return body
	}
	typ := "api_error"
	switch {
	case status == 400 || status == 405 || status == 422:
		typ = "invalid_request_error"
	case status == 401:
		typ = "authentication_error"
	case status == 403:
		typ = "permission_error"
	case status == 404:
		typ = "not_found_error"
	case status == 413:
		typ = "request_too_large"
	case status == 429:
		typ = "rate_limit_error"
	case status == 504:
		typ = "timeout_error"
	case status == 529:
		typ = "overloaded_error"
	}
	doc.Error["type"] = typ // code, requestId, attempts stay
	out, err := json.Marshal(map[string]interface{}{"type": "error", "error": doc.Error})
	if err != nil {
		return body
	}
	return out
}

// An answer made here, in the provider's shape.
func errorResponse(req *http.Request, path string, status int, code, msg string, h http.Header) *http.Response {
	body, _ := json.Marshal(map[string]interface{}{
		"error": map[string]string{"message": msg, "type": "aigw_error", "code": code}})
	return wholeResponse(req, path, &Response{Status: status, Body: body, ErrorCode: code,
		Header: http.Header{"Content-Type": {"application/json"}}})
}

// A streamed answer's body: the trailers are set once it ended.
type streamBody struct {
	s       *StreamReader
	trailer http.Header
	once    sync.Once
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.s.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *streamBody) Close() error {
	err := b.s.Close()
	b.end()
	return err
}

func (b *streamBody) end() {
	b.once.Do(func() {
		r := b.s.Response()
		if r == nil {
			return
		}
		h := http.Header{}
		setAigwHeaders(h, r)
		for k, v := range h {
			b.trailer[k] = v
		}
	})
}
