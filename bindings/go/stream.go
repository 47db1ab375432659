package aigw

/*
#include <stdint.h>
#include <stdlib.h>
#include <aigw.h>

// bridge.c
aigw_status aigw_go_stream(aigw_client *client, const aigw_request *req, uintptr_t handle,
                           aigw_response **out, aigw_error **err);
*/
import "C"

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// StreamHandler receives a streamed answer as the upstream sends it, on the
// goroutine that called Client.Stream.  Each callback may be nil; one that
// returns an error cancels the request, and Stream returns that error.
// Nothing arrives before the commit point (the first content-bearing event):
// failover before it is unseen.
type StreamHandler struct {
	// The answer committed: the upstream's status and headers (hop-by-hop
	// ones left out).  Once per served attempt.
	OnStart func(status int, header http.Header) error
	// The served bytes, exactly as the upstream sent them (chunk is a copy:
	// it may be kept).
	OnData func(chunk []byte) error
	// A committed stream broke and the request restarts on the next
	// candidate: discard what came before.  With OnReset nil, restarts are
	// off for the request (a broken stream ends "stream_failed"); with it
	// set, gatewayConfig.streamRestart decides.
	OnReset func(reset StreamReset) error
}

// StreamReset says why a committed stream was discarded.
type StreamReset struct {
	Reason   string `json:"reason"`
	Attempt  int    `json:"attempt"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
	JSON     string `json:"-"` // the library's reason_json as it is
}

// ErrStreamFailed ends the reading of a committed stream that broke (cut,
// idle, an in-band error, no proper end): outcome "stream_failed".
var ErrStreamFailed = errors.New("aigw: the stream broke after it began")

// One streamed call: the handler and what the callbacks met.
type streamCall struct {
	h        StreamHandler
	restart  int         // aigw_request_set_stream_restart: -1, 0, 1
	onCancel func(error) // ctx done (on the watcher goroutine)
	err      error       // the first error a callback returned
	panicked bool        // a callback panicked: re-raised once C returned
	panicVal interface{}
}

func (sc *streamCall) send(c *C.aigw_client, req *C.aigw_request, out **C.aigw_response,
	e **C.aigw_error) C.aigw_status {
	h := cgo.NewHandle(sc)
	defer h.Delete()
	return C.aigw_go_stream(c, req, C.uintptr_t(h), out, e)
}

// callback runs f for the C side: 0 to go on, 1 to cancel.  A panic is kept
// (it must not unwind through C frames) and cancels the request.
func callback(h C.uintptr_t, f func(sc *streamCall) error) (rc C.int) {
	sc := cgo.Handle(h).Value().(*streamCall)
	if sc.panicked || sc.err != nil {
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			sc.panicked, sc.panicVal, rc = true, r, 1
		}
	}()
	if err := f(sc); err != nil {
		sc.err = err
		return 1
	}
	return 0
}

//export aigwGoOnStart
func aigwGoOnStart(h C.uintptr_t, status C.int, hs *C.aigw_header, n C.size_t) C.int {
	return callback(h, func(sc *streamCall) error {
		if sc.h.OnStart == nil {
			return nil
		}
		header := http.Header{}
		for _, x := range unsafe.Slice(hs, int(n)) {
			header.Add(C.GoString(x.name), C.GoString(x.value))
		}
		return sc.h.OnStart(int(status), header)
	})
}

//export aigwGoOnData
func aigwGoOnData(h C.uintptr_t, data *C.char, n C.size_t) C.int {
	return callback(h, func(sc *streamCall) error {
		if sc.h.OnData == nil {
			return nil
		}
		return sc.h.OnData(C.GoBytes(unsafe.Pointer(data), C.int(n)))
	})
}

//export aigwGoOnReset
func aigwGoOnReset(h C.uintptr_t, reason *C.char) C.int {
	return callback(h, func(sc *streamCall) error {
		if sc.h.OnReset == nil {
			return nil
		}
		r := StreamReset{JSON: C.GoString(reason)}
		_ = json.Unmarshal([]byte(r.JSON), &r)
		return sc.h.OnReset(r)
	})
}

// Stream sends a streamed request ("stream": true in body) through failover
// and hands the served answer to h as it arrives; it returns once the stream
// ended, with the Response (outcome, status, attempts; when nothing was
// committed, the answer's body: an upstream fail-fast answer or the
// library's JSON error).  ctx cancels it through the library (the Response
// and ctx.Err() are returned).
func (cl *Client) Stream(ctx context.Context, body []byte, path string, h StreamHandler) (*Response, error) {
	sc := &streamCall{h: h, restart: -1}
	if h.OnReset == nil {
		sc.restart = 0
	}
	return cl.run(ctx, body, path, sc, nil)
}

// StreamReader is a streamed request read as an io.Reader (OpenStream):
// the served bytes as the upstream sends them, then io.EOF when the stream
// ended properly, an error wrapping ErrStreamFailed when it broke, or
// ctx.Err() when ctx was done.  Close it (or read it to its end): until
// then the request is in flight and Client.Close waits for it.
type StreamReader struct {
	Status    int         // the committed answer's, or the whole answer's
	Header    http.Header // likewise
	Committed bool        // false: the request ended before any content (an error, ...): the body is the whole answer

	pr       *io.PipeReader
	body     io.Reader
	fire     chan struct{}
	fireOnce sync.Once
	done     chan struct{}
	resp     *Response
	err      error
}

// OpenStream sends a streamed request and returns once it committed (or
// ended without committing).  Stream restarts are off: bytes once read
// cannot be taken back.  An error is returned only when the request could
// not be made (ErrRequest, ErrClosed, ...) or ctx was done before it committed.
func (cl *Client) OpenStream(ctx context.Context, body []byte, path string) (*StreamReader, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	s := &StreamReader{pr: pr, body: pr, fire: make(chan struct{}), done: make(chan struct{})}
	started := make(chan struct{})
	// ctx done: the reader gets ctx.Err(), and a Write blocked in OnData returns
	sc := &streamCall{restart: 0, onCancel: func(err error) { pw.CloseWithError(err) }}
	sc.h = StreamHandler{
		OnStart: func(status int, h http.Header) error {
			if !s.Committed { // once: restarts are off
				s.Status, s.Header, s.Committed = status, h, true
				close(started)
			}
			return nil
		},
		// blocks until the reader took it all: the upstream is read no
		// faster than the caller reads
		OnData: func(b []byte) error { _, err := pw.Write(b); return err },
	}
	go func() {
		defer close(s.done)
		s.resp, s.err = cl.run(ctx, body, path, sc, s.fire)
		end := s.err
		if end == nil && s.Committed {
			switch s.resp.Outcome {
			case "served":
			case "stream_failed":
				end = ErrStreamFailed
				if a := lastAttempt(s.resp); a != nil && a.StreamError != nil {
					end = fmt.Errorf("%w: %s", ErrStreamFailed, *a.StreamError)
				}
			default:
				end = fmt.Errorf("aigw: the stream ended %s", s.resp.Outcome)
			}
		}
		pw.CloseWithError(end)
	}()
	select {
	case <-started:
		return s, nil
	case <-s.done:
	}
	if s.Committed { // committed and ended at once
		return s, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	s.Status, s.Header = s.resp.Status, s.resp.Header
	s.body = bytes.NewReader(s.resp.Body)
	return s, nil
}

func lastAttempt(r *Response) *Attempt {
	if r == nil || len(r.Attempts) == 0 {
		return nil
	}
	return &r.Attempts[len(r.Attempts)-1]
}

// Read reads the served bytes.
func (s *StreamReader) Read(p []byte) (int, error) { return s.body.Read(p) }

// Close cancels the request if it still runs and waits for it to end.
func (s *StreamReader) Close() error {
	s.fireOnce.Do(func() { close(s.fire) })
	s.pr.Close()
	<-s.done
	return nil
}

// Response waits for the request to end and returns its record (nil when
// it could not be made).
func (s *StreamReader) Response() *Response {
	<-s.done
	return s.resp
}
