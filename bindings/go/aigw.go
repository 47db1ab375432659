// Package aigw binds libaigw, an in-process AI gateway with provider-key
// failover, for Go through cgo.
//
//	cfg, err := aigw.LoadConfig("gateway.json") // *aigw.Error lists each JSON path
//	client, err := aigw.NewClient(cfg)
//	defer client.Close()                         // waits for requests in flight
//	resp, err := client.SendContext(ctx, body, "") // "" = /v1/chat/completions
//	fmt.Println(resp.Status, string(resp.Body), resp.Outcome)
//	_, err = client.Stream(ctx, body, "", aigw.StreamHandler{OnData: ...})
//	hc := &http.Client{Transport: aigw.NewTransport(client)} // for openai-go, anthropic-sdk-go
//	stats, err := client.Stats()                 // typed key health
//	err = client.SetConfig(newCfg)               // hot swap; key health carries over
//	err = client.ResetHealth("primary")          // "" = every key
//
// The library is found with pkg-config (libaigw): installed, or a build tree
// through PKG_CONFIG_PATH (see the README, "Go").
package aigw

/*
#cgo pkg-config: libaigw
#include <stdint.h>
#include <stdlib.h>
#include <aigw.h>
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"unsafe"
)

// Problem is one thing wrong in a configuration, at a JSON path.
type Problem struct {
	Path    string
	Problem string
}

// Error is an error from libaigw.  Code is the negative aigw_status.
type Error struct {
	Code     int
	Message  string
	Problems []Problem
}

func (e *Error) Error() string { return e.Message }

// The aigw_status codes an Error carries.
const (
	ErrInvalid   = -1 // a bad argument, or the client is closed
	ErrNoMem     = -2
	ErrConfig    = -3 // see Problems
	ErrIO        = -4
	ErrRequest   = -5 // the body is unusable (not a JSON object, no "model", ...)
	ErrCancelled = -8
)

// ErrClosed is returned for a request made on a closed (or closing) client.
var ErrClosed error = &Error{Code: ErrInvalid, Message: "aigw: client is closed"}

var errNoMem = &Error{Code: ErrNoMem, Message: "aigw: out of memory"}

func takeError(st C.aigw_status, e *C.aigw_error) error {
	defer C.aigw_error_free(e)
	out := &Error{Code: int(st), Message: "aigw: " + C.GoString(C.aigw_status_name(st))}
	if e == nil {
		return out
	}
	out.Message = C.GoString(C.aigw_error_message(e))
	n := int(C.aigw_error_count(e))
	for i := 0; i < n; i++ {
		out.Problems = append(out.Problems, Problem{
			Path:    C.GoString(C.aigw_error_path(e, C.size_t(i))),
			Problem: C.GoString(C.aigw_error_problem(e, C.size_t(i))),
		})
	}
	return out
}

// Version is the loaded library's version string.
func Version() string { return C.GoString(C.aigw_version_string()) }

// Config is a parsed, immutable gateway file.
type Config struct{ c *C.aigw_config }

func wrapConfig(c *C.aigw_config) *Config {
	cfg := &Config{c}
	runtime.SetFinalizer(cfg, func(x *Config) { C.aigw_config_unref(x.c) })
	return cfg
}

// ParseConfig parses a gateway file's JSON.
func ParseConfig(data []byte) (*Config, error) {
	var out *C.aigw_config
	var e *C.aigw_error
	p := C.CBytes(data)
	defer C.free(p)
	if st := C.aigw_config_parse((*C.char)(p), C.size_t(len(data)), &out, &e); st != 0 {
		return nil, takeError(st, e)
	}
	return wrapConfig(out), nil
}

// LoadConfig reads and parses a gateway file.
func LoadConfig(path string) (*Config, error) {
	var out *C.aigw_config
	var e *C.aigw_error
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	if st := C.aigw_config_load_file(cp, &out, &e); st != 0 {
		return nil, takeError(st, e)
	}
	return wrapConfig(out), nil
}

// Client sends requests through failover; safe for concurrent use.
type Client struct {
	mu       sync.Mutex
	idle     *sync.Cond // signalled when inflight drops to 0 while closing
	c        *C.aigw_client
	closing  bool
	inflight int
}

// NewClient makes a client with libcurl's transport and ordered keys.
func NewClient(cfg *Config) (*Client, error) {
	if cfg == nil || cfg.c == nil {
		return nil, &Error{Code: ErrInvalid, Message: "aigw: NewClient needs a configuration"}
	}
	var out *C.aigw_client
	var e *C.aigw_error
	st := C.aigw_client_new(cfg.c, &out, &e) // the client takes its own reference
	runtime.KeepAlive(cfg)
	if st != 0 {
		return nil, takeError(st, e)
	}
	cl := &Client{c: out}
	cl.idle = sync.NewCond(&cl.mu)
	runtime.SetFinalizer(cl, (*Client).Close)
	return cl, nil
}

// acquire counts one call in flight and returns the C client, or ErrClosed.
func (cl *Client) acquire() (*C.aigw_client, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.c == nil || cl.closing {
		return nil, ErrClosed
	}
	cl.inflight++
	return cl.c, nil
}

func (cl *Client) release() {
	cl.mu.Lock()
	cl.inflight--
	if cl.inflight == 0 && cl.closing {
		cl.idle.Broadcast()
	}
	cl.mu.Unlock()
}

// Close refuses new requests (ErrClosed), waits for those in flight to
// return (a stream until its reader is closed or read to its end; cancel
// their contexts to hurry them), then frees the client.  Safe to call from
// several goroutines and more than once (not from a StreamHandler callback:
// its own request is in flight); it never returns an error.
func (cl *Client) Close() error {
	cl.mu.Lock()
	cl.closing = true
	for cl.inflight > 0 {
		cl.idle.Wait()
	}
	c := cl.c
	cl.c = nil
	cl.mu.Unlock()
	if c != nil {
		C.aigw_client_free(c)
	}
	return nil
}

// StatsJSON is a snapshot of the client's key health as the library's JSON
// (aigw_stats_json); Stats is the same, typed.  Safe to call while requests
// are in flight.
func (cl *Client) StatsJSON() (string, error) {
	c, err := cl.acquire()
	if err != nil {
		return "", err
	}
	defer cl.release()
	var st *C.aigw_stats
	if rc := C.aigw_client_stats(c, &st); rc != 0 {
		return "", &Error{Code: int(rc), Message: "aigw: no health snapshot: " +
			C.GoString(C.aigw_status_name(rc))}
	}
	defer C.aigw_stats_free(st)
	j := C.aigw_stats_json(st)
	if j == nil {
		return "", errNoMem
	}
	return C.GoString(j), nil
}

// SetConfig swaps the client's configuration while requests may be in
// flight: those started from now on use cfg.  Key health carries over for
// keys whose provider, id and value are unchanged; benches end.  A bare
// configuration naming keys it does not hold is refused (ErrConfig) and the
// client is left unchanged.
func (cl *Client) SetConfig(cfg *Config) error {
	if cfg == nil || cfg.c == nil {
		return &Error{Code: ErrInvalid, Message: "aigw: SetConfig needs a configuration"}
	}
	c, err := cl.acquire()
	if err != nil {
		return err
	}
	defer cl.release()
	var e *C.aigw_error
	st := C.aigw_client_set_config(c, cfg.c, &e) // the client takes its own reference
	runtime.KeepAlive(cfg)
	if st != 0 {
		return takeError(st, e)
	}
	return nil
}

// ResetHealth ends the cooldown or bench of every key with that id, or, with
// keyID "", of every key (and closes every circuit breaker).  Counters are
// kept.  ErrInvalid when keyID names no key of the current configuration.
func (cl *Client) ResetHealth(keyID string) error {
	c, err := cl.acquire()
	if err != nil {
		return err
	}
	defer cl.release()
	var id *C.char
	if keyID != "" {
		id = C.CString(keyID)
		defer C.free(unsafe.Pointer(id))
	}
	if st := C.aigw_client_reset_health(c, id); st != 0 {
		msg := "aigw: " + C.GoString(C.aigw_status_name(st))
		if st == ErrInvalid && keyID != "" {
			msg = fmt.Sprintf("aigw: no key %q in the client's configuration", keyID)
		}
		return &Error{Code: int(st), Message: msg}
	}
	return nil
}

// Attempt is one attempt record, in ngrok's usage-record shape.
type Attempt struct {
	Event struct {
		AttemptNumber int    `json:"attemptNumber"`
		Provider      string `json:"provider"`
		Model         string `json:"model"`
		StatusCode    int    `json:"statusCode"`
		IsError       bool   `json:"isError"`
		KeySource     string `json:"keySource"`
		ProviderKeyID string `json:"providerKeyId"`
	} `json:"event"`
	Step               int     `json:"step"` // -1: implicit
	Served             bool    `json:"served"`
	RetryAction        string  `json:"retryAction"`
	Completion         string  `json:"completion"`
	UpstreamDurationMs int64   `json:"upstreamDurationMs"`
	RequestedWaitMs    *int64  `json:"requestedWaitMs,omitempty"`
	WaitedMs           *int64  `json:"waitedMs,omitempty"`
	ErrorClass         *string `json:"errorClass"`
	TransportError     *string `json:"transportError"`
	TimeToFirstByteMs  *int64  `json:"timeToFirstByteMs,omitempty"`  // streams
	TimeToFirstTokenMs *int64  `json:"timeToFirstTokenMs,omitempty"` // streams
	StreamError        *string `json:"streamError,omitempty"`
	MalformedEvents    int     `json:"malformedEvents,omitempty"`
}

// Skip is a candidate, step or key passed over without an upstream call.
type Skip struct {
	Provider      string `json:"provider"`
	Model         string `json:"model"`
	Reason        string `json:"reason"`
	ProviderKeyID string `json:"providerKeyId,omitempty"` // a key skipped (cooling, benched)
	WaitMs        *int64 `json:"waitMs,omitempty"`        // what it had left to wait
}

// Response is the answer of one request and the record of its attempts.
// Attempts is empty when nothing was sent upstream (a rejected model, every
// key cooling, a request cancelled before it started).
type Response struct {
	Status      int               `json:"-"`
	Body        []byte            `json:"-"` // a stream's served bytes went to its reader
	Header      http.Header       `json:"-"` // every header, all values
	Headers     map[string]string `json:"-"` // lower-cased name: its first value
	Outcome     string            `json:"outcome"`
	ErrorCode   string            `json:"-"` // the library's code when it made the answer
	RequestID   string            `json:"requestId"`
	Model       string            `json:"model"`
	HealthStore string            `json:"healthStore"`
	Attempts    []Attempt         `json:"attempts"`
	Skipped     []Skip            `json:"skipped"`
}

// Served is the attempt that served the answer, or nil.
func (r *Response) Served() *Attempt {
	for i := range r.Attempts {
		if r.Attempts[i].Served {
			return &r.Attempts[i]
		}
	}
	return nil
}

func goResponse(resp *C.aigw_response) (*Response, error) {
	out := &Response{Header: http.Header{}, Headers: map[string]string{}}
	tj := C.aigw_response_trace_json(resp)
	if tj == nil {
		return nil, errNoMem
	}
	if err := json.Unmarshal([]byte(C.GoString(tj)), out); err != nil {
		return nil, err
	}
	var n C.size_t
	b := C.aigw_response_body(resp, &n)
	out.Body = C.GoBytes(unsafe.Pointer(b), C.int(n))
	out.Status = int(C.aigw_response_status(resp))
	out.Outcome = C.GoString(C.aigw_outcome_name(C.aigw_response_outcome(resp)))
	if ec := C.aigw_response_error_code(resp); ec != nil {
		out.ErrorCode = C.GoString(ec)
	}
	hn := int(C.aigw_response_header_count(resp))
	for i := 0; i < hn; i++ {
		var name, value *C.char
		if C.aigw_response_header(resp, C.size_t(i), &name, &value) != 0 {
			continue
		}
		k, v := C.GoString(name), C.GoString(value)
		out.Header.Add(k, v)
		if _, ok := out.Headers[k]; !ok {
			out.Headers[k] = v
		}
	}
	return out, nil
}

// Send sends body (JSON in the API shape of path; "" = /v1/chat/completions)
// and waits for the answer, whatever its outcome.
func (cl *Client) Send(body []byte, path string) (*Response, error) {
	return cl.run(context.Background(), body, path, nil, nil)
}

// SendContext is Send, cancelled through the library when ctx is done: the
// attempt in flight is abandoned, and the Response (outcome "cancelled", its
// attempts recorded; nil when ctx was done before it started) is returned
// with ctx.Err().
func (cl *Client) SendContext(ctx context.Context, body []byte, path string) (*Response, error) {
	return cl.run(ctx, body, path, nil, nil)
}

// run sends one request (a stream when sc is set) with a cancel token fired
// when ctx is done or fire is closed.
func (cl *Client) run(ctx context.Context, body []byte, path string, sc *streamCall,
	fire <-chan struct{}) (*Response, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := cl.acquire()
	if err != nil {
		return nil, err
	}
	defer cl.release()

	var req *C.aigw_request
	if C.aigw_request_new(&req) != 0 {
		return nil, errNoMem
	}
	defer C.aigw_request_free(req)
	p := C.CBytes(body)
	st := C.aigw_request_set_body(req, (*C.char)(p), C.size_t(len(body)))
	C.free(p)
	if st != 0 {
		return nil, errNoMem
	}
	if path != "" {
		cp := C.CString(path)
		st := C.aigw_request_set_path(req, cp)
		C.free(unsafe.Pointer(cp))
		if st != 0 {
			return nil, &Error{Code: int(st), Message: fmt.Sprintf("aigw: bad path %q", path)}
		}
	}
	if sc != nil {
		C.aigw_request_set_stream_restart(req, C.int(sc.restart))
	}
	if done := ctx.Done(); done != nil || fire != nil {
		var tok *C.aigw_cancel
		if C.aigw_cancel_new(&tok) != 0 {
			return nil, errNoMem
		}
		defer C.aigw_cancel_free(tok) // after the watcher has stopped (LIFO)
		C.aigw_request_set_cancel(req, tok)
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-done:
				C.aigw_cancel_fire(tok)
				if sc != nil && sc.onCancel != nil {
					sc.onCancel(ctx.Err())
				}
			case <-fire:
				C.aigw_cancel_fire(tok)
			case <-stop:
			}
		}()
		defer func() { close(stop); <-stopped }()
	}

	var resp *C.aigw_response
	var e *C.aigw_error
	if sc == nil {
		st = C.aigw_client_send(c, req, &resp, &e)
	} else {
		st = sc.send(c, req, &resp, &e)
	}
	if st != 0 {
		return nil, takeError(st, e)
	}
	defer C.aigw_response_free(resp)
	out, err := goResponse(resp)
	if sc != nil && sc.panicked {
		panic(sc.panicVal) // a callback's, re-raised on this side of the C frames
	}
	if err != nil {
		return nil, err
	}
	if out.Outcome == "cancelled" {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if sc != nil && sc.err != nil {
			return out, sc.err
		}
	}
	return out, nil
}
