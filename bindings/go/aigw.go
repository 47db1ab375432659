// Package aigw binds libaigw, an in-process AI gateway with provider-key
// failover, for Go through cgo.
//
//	cfg, err := aigw.ParseConfig(data)   // *aigw.Error lists each JSON path
//	client, err := aigw.NewClient(cfg)
//	resp, err := client.Send(body, "")   // "" = /v1/chat/completions
//	fmt.Println(resp.Status, string(resp.Body), resp.Outcome)
//	health, err := client.StatsJSON()    // {"keys":[...],"backends":[...],...}
//	err = client.SetConfig(newCfg)       // hot swap; key health carries over
//	err = client.ResetHealth("primary")  // "" = every key
//
// Build with CGO_CFLAGS/CGO_LDFLAGS pointing at aigw.h and libaigw.so, or
// with libaigw installed (pkg-config libaigw).
package aigw

/*
#cgo LDFLAGS: -laigw
#include <stdlib.h>
#include "aigw.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
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

const (
	ErrInvalid = -1
	ErrNoMem   = -2
	ErrConfig  = -3
	ErrRequest = -5
)

var errClosed = &Error{Code: ErrInvalid, Message: "aigw: client is closed"}

func takeError(st C.aigw_status, e *C.aigw_error) error {
	defer C.aigw_error_free(e)
	out := &Error{Code: int(st), Message: fmt.Sprintf("libaigw status %d", int(st))}
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
	c   *C.aigw_client
	cfg *Config
}

// NewClient makes a client with libcurl's transport and ordered keys.
func NewClient(cfg *Config) (*Client, error) {
	var out *C.aigw_client
	var e *C.aigw_error
	if st := C.aigw_client_new(cfg.c, &out, &e); st != 0 {
		return nil, takeError(st, e)
	}
	cl := &Client{c: out, cfg: cfg}
	runtime.SetFinalizer(cl, func(x *Client) { x.Close() })
	return cl, nil
}

// Close frees the client; further use is an error.
func (cl *Client) Close() {
	if cl.c != nil {
		C.aigw_client_free(cl.c)
		cl.c = nil
	}
}

// StatsJSON is a snapshot of the client's key health as JSON:
// {"keys":[...],"backends":[...],"hosts":[...],"retryBudget":{...}} (see the
// README, "Key health").  Safe to call while requests are in flight.
func (cl *Client) StatsJSON() (string, error) {
	if cl.c == nil {
		return "", errClosed
	}
	var st *C.aigw_stats
	if rc := C.aigw_client_stats(cl.c, &st); rc != 0 {
		return "", &Error{Code: int(rc), Message: "aigw: no health snapshot: " +
			C.GoString(C.aigw_status_name(rc))}
	}
	defer C.aigw_stats_free(st)
	runtime.KeepAlive(cl)
	j := C.aigw_stats_json(st)
	if j == nil {
		return "", &Error{Code: ErrNoMem, Message: "aigw: out of memory"}
	}
	return C.GoString(j), nil
}

// SetConfig swaps the client's configuration while requests may be in
// flight: those started from now on use cfg.  Key health carries over for
// keys whose provider, id and value are unchanged; benches end.  A bare
// configuration naming keys it does not hold is refused (ErrConfig) and the
// client is left unchanged.
func (cl *Client) SetConfig(cfg *Config) error {
	if cl.c == nil {
		return errClosed
	}
	if cfg == nil || cfg.c == nil {
		return &Error{Code: ErrInvalid, Message: "aigw: SetConfig needs a configuration"}
	}
	var e *C.aigw_error
	if st := C.aigw_client_set_config(cl.c, cfg.c, &e); st != 0 {
		return takeError(st, e)
	}
	cl.cfg = cfg
	runtime.KeepAlive(cl)
	return nil
}

// ResetHealth ends the cooldown or bench of every key with that id, or, with
// keyID "", of every key (and closes every circuit breaker).  Counters are
// kept.  ErrInvalid when keyID names no key of the current configuration.
func (cl *Client) ResetHealth(keyID string) error {
	if cl.c == nil {
		return errClosed
	}
	var id *C.char
	if keyID != "" {
		id = C.CString(keyID)
		defer C.free(unsafe.Pointer(id))
	}
	st := C.aigw_client_reset_health(cl.c, id)
	runtime.KeepAlive(cl)
	if st != 0 {
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
	Served             bool    `json:"served"`
	RetryAction        string  `json:"retryAction"`
	Completion         string  `json:"completion"`
	UpstreamDurationMs int64   `json:"upstreamDurationMs"`
	ErrorClass         *string `json:"errorClass"`
	TransportError     *string `json:"transportError"`
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
type Response struct {
	Status    int
	Body      []byte
	Headers   map[string]string
	Outcome   string
	ErrorCode string
	RequestID string    `json:"requestId"`
	Model     string    `json:"model"`
	Attempts  []Attempt `json:"attempts"`
	Skipped   []Skip    `json:"skipped"`
}

// Send sends body (JSON in the API shape of path; "" = /v1/chat/completions).
func (cl *Client) Send(body []byte, path string) (*Response, error) {
	if cl.c == nil {
		return nil, &Error{Code: -1, Message: "aigw: client is closed"}
	}
	var req *C.aigw_request
	if C.aigw_request_new(&req) != 0 {
		return nil, &Error{Code: -2, Message: "aigw: out of memory"}
	}
	defer C.aigw_request_free(req)
	p := C.CBytes(body)
	defer C.free(p)
	if C.aigw_request_set_body(req, (*C.char)(p), C.size_t(len(body))) != 0 {
		return nil, &Error{Code: -2, Message: "aigw: out of memory"}
	}
	if path != "" {
		cp := C.CString(path)
		defer C.free(unsafe.Pointer(cp))
		if st := C.aigw_request_set_path(req, cp); st != 0 {
			return nil, &Error{Code: int(st), Message: "aigw: bad path " + path}
		}
	}
	var resp *C.aigw_response
	var e *C.aigw_error
	if st := C.aigw_client_send(cl.c, req, &resp, &e); st != 0 {
		return nil, takeError(st, e)
	}
	defer C.aigw_response_free(resp)
	runtime.KeepAlive(cl)
	out := &Response{Headers: map[string]string{}}
	if err := json.Unmarshal([]byte(C.GoString(C.aigw_response_trace_json(resp))), out); err != nil {
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
		C.aigw_response_header(resp, C.size_t(i), &name, &value)
		k := strings.ToLower(C.GoString(name))
		if _, ok := out.Headers[k]; !ok {
			out.Headers[k] = C.GoString(value)
		}
	}
	return out, nil
}
