package aigw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const placeholder = "sk-placeholder-from-the-sdk"

// A fake provider: "k-primary" is rate limited (unless allLimited is off
// and ... see limited), every other key served; "stream":true bodies get a
// chat-completions SSE stream; credentials seen are recorded.
type fakeUpstream struct {
	srv *httptest.Server

	mu    sync.Mutex
	creds []string // every Authorization and x-api-key value seen
	keys  []string // the key of each request, in order

	limited    func(key string) bool // answers 429 (Retry-After: retryAfter)
	retryAfter string
	// a stream's second part waits for this (nil: no wait)
	gate chan struct{}
	// stall: requests wait until their connection closes or release closes
	stall   bool
	release chan struct{}
	arrived chan struct{} // one send per request, when it arrived
	closed  chan struct{} // one send per stalled request whose connection closed
}

func newFake(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{
		limited: func(key string) bool { return key == "k-primary" },
		release: make(chan struct{}),
		arrived: make(chan struct{}, 1000),
		closed:  make(chan struct{}, 1000),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	for _, h := range []string{"Authorization", "X-Api-Key"} {
		f.creds = append(f.creds, r.Header.Values(h)...)
	}
	f.keys = append(f.keys, key)
	stall, limited, retryAfter, gate := f.stall, f.limited, f.retryAfter, f.gate
	f.mu.Unlock()
	f.arrived <- struct{}{}
	var body struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.Unmarshal(b, &body)
	if stall {
		select {
		case <-r.Context().Done(): // the client closed the connection
			f.closed <- struct{}{}
			return
		case <-f.release:
		case <-time.After(20 * time.Second):
			return
		}
	}
	if limited(key) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"code":"rate_limit_exceeded","message":"slow down"}}`)
		return
	}
	if !body.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "fake")
		fmt.Fprintf(w, `{"id":"x","model":%q,"path":%q}`, body.Model, r.URL.Path)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Upstream", "fake")
	fl := w.(http.Flusher)
	fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n")
	fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n")
	fl.Flush()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			f.closed <- struct{}{}
			return
		case <-time.After(20 * time.Second):
			return
		}
	}
	fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n")
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// set changes the fake's behaviour (under its lock: the handlers read it).
func (f *fakeUpstream) set(change func(f *fakeUpstream)) {
	f.mu.Lock()
	change(f)
	f.mu.Unlock()
}

func (f *fakeUpstream) seen() (creds, keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.creds...), append([]string(nil), f.keys...)
}

// No placeholder credential ever reached the upstream; only the gateway
// file's keys did.
func (f *fakeUpstream) checkCreds(t *testing.T) {
	t.Helper()
	creds, _ := f.seen()
	for _, c := range creds {
		if strings.Contains(c, placeholder) || (c != "Bearer k-primary" && c != "Bearer k-backup") {
			t.Fatalf("the upstream saw credential %q", c)
		}
	}
}

// An SDK's request: a placeholder key in both of the SDKs' headers.
func sdkRequest(ctx context.Context, t *testing.T, path, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://aigw.invalid"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+placeholder)
	req.Header.Set("X-Api-Key", placeholder)
	req.Header.Set("Content-Type", "application/json")
	return req
}

func httpClient(t *testing.T, f *fakeUpstream) (*Client, *http.Client) {
	t.Helper()
	cl := newClient(t, f.srv.URL, "backup")
	t.Cleanup(func() { cl.Close() })
	return cl, &http.Client{Transport: NewTransport(cl)}
}

func TestTransportWhole(t *testing.T) {
	f := newFake(t)
	_, hc := httpClient(t, f)
	resp, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions",
		`{"model":"fake:m1","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"id":"x","model":"m1","path":"/v1/chat/completions"}` {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	if resp.ContentLength != int64(len(b)) || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("X-Upstream") != "fake" {
		t.Fatalf("headers %v, length %d", resp.Header, resp.ContentLength)
	}
	if !strings.HasPrefix(resp.Header.Get("X-Aigw-Request-Id"), "rq_") ||
		resp.Header.Get("X-Aigw-Attempts") != "2" || resp.Header.Get("X-Aigw-Provider") != "fake" ||
		resp.Header.Get("X-Aigw-Model") != "m1" {
		t.Fatalf("x-aigw headers %v", resp.Header)
	}
	if _, keys := f.seen(); strings.Join(keys, " ") != "k-primary k-backup" {
		t.Fatalf("provider saw keys %v", keys)
	}
	f.checkCreds(t)

	// the API surface from the path, whatever the base URL's prefix
	for path, want := range map[string]string{
		"/v1/responses":            "/v1/responses",
		"/proxy/v1/messages":       "/v1/messages",
		"/openai/chat/completions": "/v1/chat/completions",
	} {
		resp, err := hc.Do(sdkRequest(context.Background(), t, path, `{"model":"fake:m1"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"path":"`+want+`"`) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	f.checkCreds(t)

	// not a POST: 405 in the provider's shape; a body without a model: 400
	resp, err = hc.Get("http://aigw.invalid/v1/models")
	if err != nil || resp.StatusCode != 405 {
		t.Fatalf("GET: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = hc.Post("http://aigw.invalid/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[]}`))
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("no model: %v %v", err, resp)
	}
	var e struct {
		Error struct{ Type, Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Code != "invalid_request" {
		t.Fatalf("no model: %v %+v", err, e)
	}
	resp.Body.Close()
}

func TestTransportLibraryError(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeUpstream) {
		f.limited = func(string) bool { return true }
		f.retryAfter = "30" // past retryAfterMax: not waited for
	})
	_, hc := httpClient(t, f)
	resp, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions", `{"model":"fake:m1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var oa struct {
		Error struct {
			Message, Type, Code string
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&oa)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 429 || oa.Error.Code != "rate_limited" || oa.Error.Message == "" {
		t.Fatalf("got %d %+v %v", resp.StatusCode, oa, err)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("no Retry-After: %v", resp.Header)
	}
	if resp.Header.Get("X-Aigw-Attempts") != "2" || resp.Header.Get("X-Aigw-Provider") != "" {
		t.Fatalf("x-aigw headers %v", resp.Header)
	}
	// Anthropic's shape for /v1/messages (every key now cooling: no attempt)
	resp, err = hc.Do(sdkRequest(context.Background(), t, "/v1/messages", `{"model":"fake:m1","max_tokens":5}`))
	if err != nil {
		t.Fatal(err)
	}
	var an struct {
		Type  string
		Error struct{ Type, Message string }
	}
	err = json.NewDecoder(resp.Body).Decode(&an)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 429 || an.Type != "error" || an.Error.Type != "rate_limit_error" ||
		an.Error.Message == "" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("messages: %d %+v %v %v", resp.StatusCode, an, err, resp.Header)
	}
	if resp.Header.Get("X-Aigw-Attempts") != "0" {
		t.Fatalf("messages: x-aigw headers %v", resp.Header)
	}
	f.checkCreds(t)
}

// readUntil reads r until the bytes read contain want.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q: %v before %q", got, err, want)
		}
	}
	return string(got)
}

func TestTransportStream(t *testing.T) {
	f := newFake(t)
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	f.set(func(f *fakeUpstream) { f.gate = gate })
	_, hc := httpClient(t, f)
	done := make(chan struct{})
	go func() { // a guard: the test fails, not hangs, if the answer is buffered
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			open()
		}
	}()
	defer close(done)
	resp, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions",
		`{"model":"fake:m1","stream":true,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.ContentLength != -1 || resp.Header.Get("X-Upstream") != "fake" {
		t.Fatalf("head %d %v", resp.StatusCode, resp.Header)
	}
	// the first content arrives while the upstream still holds the rest
	first := readUntil(t, resp.Body, `"Hel"`)
	select {
	case <-gate:
		t.Fatal("the first content came only after the upstream's end")
	default:
	}
	open()
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	all := first + string(rest)
	if !strings.HasPrefix(all, "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\"") ||
		!strings.HasSuffix(all, "data: [DONE]\n\n") {
		t.Fatalf("stream %q", all)
	}
	if !strings.HasPrefix(resp.Trailer.Get("X-Aigw-Request-Id"), "rq_") ||
		resp.Trailer.Get("X-Aigw-Attempts") != "2" || resp.Trailer.Get("X-Aigw-Model") != "m1" ||
		resp.Trailer.Get("X-Aigw-Provider") != "fake" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
	if _, keys := f.seen(); strings.Join(keys, " ") != "k-primary k-backup" {
		t.Fatalf("provider saw keys %v", keys)
	}
	f.checkCreds(t)

	// a stream that ends before it commits is a whole answer
	f.set(func(f *fakeUpstream) {
		f.limited = func(string) bool { return true }
		f.retryAfter = "30" // past retryAfterMax: not waited for
	})
	resp2, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions",
		`{"model":"fake:m1","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 429 || !strings.Contains(string(b), `"rate_limited"`) ||
		resp2.Header.Get("X-Aigw-Request-Id") == "" {
		t.Fatalf("uncommitted stream: %d %s %v", resp2.StatusCode, b, resp2.Header)
	}
}

func TestTransportCancel(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeUpstream) { f.stall = true })
	_, hc := httpClient(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-f.arrived
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	resp, err := hc.Do(sdkRequest(ctx, t, "/v1/chat/completions", `{"model":"fake:m1"}`))
	took := time.Since(start)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("no error: %d", resp.StatusCode)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if took > 2*time.Second {
		t.Fatalf("returned after %v", took)
	}
	select { // the attempt was abandoned: its connection closed
	case <-f.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream connection stayed open")
	}
	if _, keys := f.seen(); len(keys) != 1 {
		t.Fatalf("provider saw %v", keys) // no failover after a cancel
	}

	// a context already done: nothing is sent
	resp, err = hc.Do(sdkRequest(ctx, t, "/v1/chat/completions", `{"model":"fake:m1"}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("done context: %v %v", resp, err)
	}
}

func TestTransportStreamCancel(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeUpstream) { f.gate = make(chan struct{}) }) // never opened: the upstream stalls mid-stream
	cl, hc := httpClient(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := hc.Do(sdkRequest(ctx, t, "/v1/chat/completions", `{"model":"fake:m1","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, resp.Body, `"Hel"`)
	cancel()
	start := time.Now()
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("read after cancel: %v after %v", err, time.Since(start))
	}
	resp.Body.Close()
	select {
	case <-f.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream connection stayed open")
	}
	// closing a body early cancels too
	resp, err = hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions", `{"model":"fake:m1","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, resp.Body, `"Hel"`)
	start = time.Now()
	resp.Body.Close()
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Close took %v", time.Since(start))
	}
	select {
	case <-f.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream connection stayed open after Body.Close")
	}
	if st, err := cl.Stats(); err != nil || st.Key("backup").Failures != 0 {
		t.Fatalf("an abandoned attempt told key health something: %v %+v", err, st)
	}
}

func TestTransportConcurrent(t *testing.T) {
	f := newFake(t)
	_, hc := httpClient(t, f)
	var wg sync.WaitGroup
	var served int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				stream := (g+i)%2 == 0
				body := fmt.Sprintf(`{"model":"fake:m1","stream":%v}`, stream)
				resp, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions", body))
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				ok := resp.StatusCode == 200 && err == nil
				if stream {
					ok = ok && strings.HasSuffix(string(b), "data: [DONE]\n\n") &&
						resp.Trailer.Get("X-Aigw-Model") == "m1"
				} else {
					ok = ok && strings.Contains(string(b), `"model":"m1"`) &&
						resp.Header.Get("X-Aigw-Model") == "m1"
				}
				if !ok {
					t.Errorf("goroutine %d: %d %v %q", g, resp.StatusCode, err, b)
					return
				}
				atomic.AddInt64(&served, 1)
			}
		}(g)
	}
	wg.Wait()
	if served != 120 {
		t.Fatalf("served %d of 120", served)
	}
	f.checkCreds(t)
}

func TestCloseInFlight(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeUpstream) { f.stall = true })
	f.set(func(f *fakeUpstream) { f.limited = func(string) bool { return false } })
	cl := newClient(t, f.srv.URL, "backup")
	hc := &http.Client{Transport: NewTransport(cl)}
	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		go func(i int) {
			switch i {
			case 0, 1: // through the transport, whole and streamed
				resp, err := hc.Do(sdkRequest(context.Background(), t, "/v1/chat/completions",
					fmt.Sprintf(`{"model":"fake:m1","stream":%v}`, i == 1)))
				if err != nil {
					results <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				results <- result{resp.StatusCode, string(b), err}
			case 2:
				r, err := cl.Send([]byte(`{"model":"fake:m1"}`), "")
				if err != nil {
					results <- result{err: err}
					return
				}
				results <- result{r.Status, string(r.Body), nil}
			case 3:
				var got bytes.Buffer
				r, err := cl.Stream(context.Background(), []byte(`{"model":"fake:m1","stream":true}`), "",
					StreamHandler{OnData: func(b []byte) error { got.Write(b); return nil }})
				if err != nil {
					results <- result{err: err}
					return
				}
				results <- result{r.Status, got.String(), nil}
			}
		}(i)
	}
	for i := 0; i < 4; i++ {
		<-f.arrived
	}
	closed := make(chan struct{})
	go func() { cl.Close(); close(closed) }()
	// new requests are refused while Close waits
	for closing := false; !closing; {
		time.Sleep(time.Millisecond)
		cl.mu.Lock()
		closing = cl.closing
		cl.mu.Unlock()
	}
	if _, err := cl.Send([]byte(`{"model":"fake:m1"}`), ""); err != ErrClosed {
		t.Fatalf("a new request while closing: %v", err)
	}
	if _, err := cl.OpenStream(context.Background(), []byte(`{"model":"fake:m1","stream":true}`), ""); err != ErrClosed {
		t.Fatalf("a new stream while closing: %v", err)
	}
	if _, err := hc.Post("http://aigw.invalid/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"fake:m1"}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("transport on a closing client: %v", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with requests in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(f.release)
	for i := 0; i < 4; i++ {
		r := <-results
		if r.err != nil || r.status != 200 || !(strings.Contains(r.body, `"model":"m1"`) ||
			strings.HasSuffix(r.body, "data: [DONE]\n\n")) {
			t.Fatalf("a request in flight during Close: %+v", r)
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the requests ended")
	}
	if _, err := cl.Stats(); err != ErrClosed {
		t.Fatalf("Stats after Close: %v", err)
	}
	cl.Close() // again: a no-op
}

func TestStreamCallbacks(t *testing.T) {
	f := newFake(t)
	cl := newClient(t, f.srv.URL, "backup")
	defer cl.Close()
	body := []byte(`{"model":"fake:m1","stream":true}`)
	var status int
	var events []string
	resp, err := cl.Stream(context.Background(), body, "", StreamHandler{
		OnStart: func(s int, h http.Header) error {
			status = s
			if h.Get("Content-Type") != "text/event-stream" {
				return fmt.Errorf("headers %v", h)
			}
			return nil
		},
		OnData: func(b []byte) error { events = append(events, string(b)); return nil },
	})
	all := strings.Join(events, "")
	if err != nil || status != 200 || resp.Outcome != "served" || !strings.HasSuffix(all, "data: [DONE]\n\n") ||
		keysOf(resp) != "primary backup" || resp.Served() == nil {
		t.Fatalf("%v %d %+v %q", err, status, resp, all)
	}
	// an error from a callback cancels the request and is returned
	stop := errors.New("enough")
	resp, err = cl.Stream(context.Background(), body, "", StreamHandler{
		OnData: func([]byte) error { return stop }})
	if err != stop || resp == nil || resp.Outcome != "cancelled" {
		t.Fatalf("callback error: %v %+v", err, resp)
	}
	// a panic in a callback is raised again on the caller's side
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		_, _ = cl.Stream(context.Background(), body, "", StreamHandler{
			OnData: func([]byte) error { panic("boom") }})
		t.Fatal("no panic")
	}()
	// the reader form
	s, err := cl.OpenStream(context.Background(), body, "")
	if err != nil || !s.Committed || s.Status != 200 {
		t.Fatalf("OpenStream: %v %+v", err, s)
	}
	b, err := io.ReadAll(s)
	if err != nil || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("OpenStream read: %v %q", err, b)
	}
	s.Close()
	if r := s.Response(); r == nil || r.Outcome != "served" {
		t.Fatalf("OpenStream response %+v", r)
	}
	// a request that cannot be made
	if _, err := cl.OpenStream(context.Background(), []byte(`not json`), ""); err == nil {
		t.Fatal("OpenStream of a bad body: no error")
	} else if e, ok := err.(*Error); !ok || e.Code != ErrRequest {
		t.Fatalf("OpenStream of a bad body: %v", err)
	}
}

func TestSendContextCancel(t *testing.T) {
	f := newFake(t)
	f.set(func(f *fakeUpstream) { f.stall = true })
	cl := newClient(t, f.srv.URL, "backup")
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := cl.SendContext(ctx, []byte(`{"model":"fake:m1"}`), "")
	if !errors.Is(err, context.DeadlineExceeded) || resp == nil || resp.Outcome != "cancelled" ||
		resp.Status != 499 || time.Since(start) > 2*time.Second {
		t.Fatalf("%v %+v after %v", err, resp, time.Since(start))
	}
	if len(resp.Attempts) != 1 || *resp.Attempts[0].TransportError != "cancelled" {
		t.Fatalf("attempts %+v", resp.Attempts)
	}
}

func TestStatsTyped(t *testing.T) {
	f := newFake(t)
	cl := newClient(t, f.srv.URL, "backup")
	defer cl.Close()
	for i := 0; i < 2; i++ {
		if _, err := cl.Send([]byte(`{"model":"fake:m1"}`), ""); err != nil {
			t.Fatal(err)
		}
	}
	st, err := cl.Stats()
	if err != nil {
		t.Fatal(err)
	}
	p, b, pm := st.Key("primary"), st.Key("backup"), st.Endpoint("primary", "m1")
	if p == nil || b == nil || pm == nil || st.Key("nope") != nil {
		t.Fatalf("stats %+v", st)
	}
	if p.Provider != "fake" || p.State != "ready" || p.Requests != 1 || p.Failures != 1 ||
		p.FailuresByClass["rate_limit"] != 1 || p.Skips != 1 || p.Latency.Count != 0 || p.Latency.Mean != nil {
		t.Fatalf("primary %+v", p)
	}
	if pm.State != "cooling" || pm.Reason != "rate_limit" || pm.WaitMs <= 0 {
		t.Fatalf("primary with m1 %+v", pm)
	}
	if b.Successes != 2 || b.Latency.Count != 2 || b.Latency.Mean == nil || b.Reason != "" {
		t.Fatalf("backup %+v", b)
	}
	if len(st.Backends) != 1 || st.Backends[0].Model != "m1" || len(st.Hosts) != 1 ||
		!strings.HasPrefix(st.Hosts[0].Host, "http://127.0.0.1:") {
		t.Fatalf("backends %+v hosts %+v", st.Backends, st.Hosts)
	}
	if st.HealthStore.Kind != "local" || st.HealthStore.State != "ok" || !st.RetryBudget.Enabled ||
		st.RetryBudget.Requests != 2 || st.RetryBudget.Available == nil {
		t.Fatalf("store %+v budget %+v", st.HealthStore, st.RetryBudget)
	}
}

func TestAPIPath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/chat/completions": "/v1/chat/completions",
		"/chat/completions":    "/v1/chat/completions",
		"/x/y/v1/responses":    "/v1/responses",
		"/v1/messages":         "/v1/messages",
		"/v1/embeddings":       "/v1/embeddings",
		"/gw/v1/embeddings":    "/v1/embeddings",
		"":                     "/",
	} {
		if got := apiPath(in); got != want {
			t.Errorf("apiPath(%q) = %q, want %q", in, got, want)
		}
	}
}
