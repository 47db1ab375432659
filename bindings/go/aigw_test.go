package aigw

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func fakeProvider(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, key)
		mu.Unlock()
		var body map[string]interface{}
		_ = json.Unmarshal(b, &body)
		w.Header().Set("Content-Type", "application/json")
		if key == "k-primary" {
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"code":"rate_limit_exceeded"}}`)
			return
		}
		fmt.Fprintf(w, `{"id":"x","model":%q}`, body["model"])
	}))
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

func gateway(base string, secondKey string) []byte {
	return []byte(fmt.Sprintf(`{
	  "providers": [{"providerId": "fake", "name": "Fake", "baseUrl": %q}],
	  "providerKeys": [{"id": "primary", "providerId": "fake", "name": "p", "value": "k-primary"},
	                   {"id": "backup", "providerId": "fake", "name": "b", "value": "k-backup"}],
	  "accessKeyConfiguration": {"name": "go", "router": {"rules": [{"provider": "fake",
	    "steps": [{"type": "user", "keySelectionStrategy": "ordered",
	               "keys": [{"id": "primary"}, {"id": %q}]}]}]}}}`, base+"/v1", secondKey))
}

func TestFailover(t *testing.T) {
	srv, seen := fakeProvider(t)
	defer srv.Close()
	cfg, err := ParseConfig(gateway(srv.URL, "backup"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.Send([]byte(`{"model":"fake:m1","messages":[]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Outcome != "served" || string(resp.Body) != `{"id":"x","model":"m1"}` {
		t.Fatalf("got %d %s %s", resp.Status, resp.Outcome, resp.Body)
	}
	var got []string
	for _, a := range resp.Attempts {
		got = append(got, a.Event.ProviderKeyID+":"+a.RetryAction)
	}
	if strings.Join(got, " ") != "primary:next_key backup:succeeded" {
		t.Fatalf("attempts %v", got)
	}
	if s := strings.Join(seen(), " "); s != "k-primary k-backup" {
		t.Fatalf("provider saw %q", s)
	}
}

func TestConfigErrorPath(t *testing.T) {
	_, err := ParseConfig(gateway("http://127.0.0.1:9", "nope"))
	e, ok := err.(*Error)
	if !ok || e.Code != ErrConfig {
		t.Fatalf("want a config error, got %v", err)
	}
	found := false
	for _, p := range e.Problems {
		if p.Path == "accessKeyConfiguration.router.rules[0].steps[0].keys[1].id" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no problem at the key's path: %+v", e.Problems)
	}
}

func TestConcurrent(t *testing.T) {
	srv, seen := fakeProvider(t)
	defer srv.Close()
	cfg, _ := ParseConfig(gateway(srv.URL, "backup"))
	cl, _ := NewClient(cfg)
	defer cl.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				r, err := cl.Send([]byte(`{"model":"fake:m1"}`), "")
				if err != nil || r.Status != 200 {
					t.Errorf("send: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	// every request is served by the backup; the rate-limited primary is
	// tried until the client has seen its 429, then skipped while it cools
	primary, backup := 0, 0
	for _, k := range seen() {
		switch k {
		case "k-primary":
			primary++
		case "k-backup":
			backup++
		}
	}
	if backup != 100 || primary < 1 || primary >= 100 {
		t.Fatalf("provider saw primary %d, backup %d; want backup 100, primary 1..99", primary, backup)
	}
}

type keyStat struct {
	ID        string `json:"id"`
	Provider  string `json:"provider"`
	State     string `json:"state"`
	Requests  uint64 `json:"requests"`
	Successes uint64 `json:"successes"`
	Failures  uint64 `json:"failures"`
	Skips     uint64 `json:"skips"`
}

type snapshot struct {
	Keys        []keyStat              `json:"keys"`
	Endpoints   []keyStat              `json:"endpoints"` // a key with one model
	Backends    []json.RawMessage      `json:"backends"`
	Hosts       []json.RawMessage      `json:"hosts"`
	RetryBudget map[string]interface{} `json:"retryBudget"`
}

func stats(t *testing.T, cl *Client) snapshot {
	t.Helper()
	js, err := cl.StatsJSON()
	if err != nil {
		t.Fatal(err)
	}
	var snap snapshot
	if err := json.Unmarshal([]byte(js), &snap); err != nil {
		t.Fatalf("stats JSON %q: %v", js, err)
	}
	if snap.RetryBudget == nil || snap.Endpoints == nil || snap.Backends == nil || snap.Hosts == nil {
		t.Fatalf("stats JSON lacks a member: %s", js)
	}
	return snap
}

func byID(entries []keyStat) map[string]keyStat {
	out := map[string]keyStat{}
	for _, k := range entries {
		out[k.ID] = k
	}
	return out
}

func keyStats(t *testing.T, cl *Client) map[string]keyStat {
	t.Helper()
	return byID(stats(t, cl).Keys)
}

// Each key's health with model m1, the only model the tests send.
func endpointStats(t *testing.T, cl *Client) map[string]keyStat {
	t.Helper()
	return byID(stats(t, cl).Endpoints)
}

func newClient(t *testing.T, base, secondKey string) *Client {
	t.Helper()
	cfg, err := ParseConfig(gateway(base, secondKey))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func keysOf(resp *Response) string {
	var got []string
	for _, a := range resp.Attempts {
		got = append(got, a.Event.ProviderKeyID)
	}
	return strings.Join(got, " ")
}

func TestStatsJSON(t *testing.T) {
	srv, seen := fakeProvider(t)
	defer srv.Close()
	cl := newClient(t, srv.URL, "backup")
	defer cl.Close()
	if k := keyStats(t, cl)["primary"]; k.State != "ready" || k.Requests != 0 {
		t.Fatalf("before any request: %+v", k)
	}
	for i := 0; i < 3; i++ {
		if _, err := cl.Send([]byte(`{"model":"fake:m1"}`), ""); err != nil {
			t.Fatal(err)
		}
	}
	// a 429 naming no wait: the primary cools (keyCooldown), skipped twice
	if s := strings.Join(seen(), " "); s != "k-primary k-backup k-backup k-backup" {
		t.Fatalf("provider saw %q", s)
	}
	ks := keyStats(t, cl)
	p, b := ks["primary"], ks["backup"]
	// the key is ready: its rate limit is for m1, where it cools
	if p.State != "ready" || p.Requests != 1 || p.Failures != 1 || p.Skips != 2 || p.Provider != "fake" {
		t.Fatalf("primary %+v", p)
	}
	if pm := endpointStats(t, cl)["primary"]; pm.State != "cooling" || pm.Requests != 1 || pm.Skips != 2 {
		t.Fatalf("primary with m1 %+v", pm)
	}
	if b.State != "ready" || b.Requests != 3 || b.Successes != 3 {
		t.Fatalf("backup %+v", b)
	}
	cl.Close()
	if _, err := cl.StatsJSON(); err == nil {
		t.Fatal("StatsJSON on a closed client: no error")
	}
}

func TestResetHealth(t *testing.T) {
	srv, seen := fakeProvider(t)
	defer srv.Close()
	cl := newClient(t, srv.URL, "backup")
	defer cl.Close()
	body := []byte(`{"model":"fake:m1"}`)
	if _, err := cl.Send(body, ""); err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Send(body, "")
	if err != nil {
		t.Fatal(err)
	}
	if keysOf(resp) != "backup" || len(resp.Skipped) != 1 || resp.Skipped[0].ProviderKeyID != "primary" ||
		resp.Skipped[0].Reason != "key_cooling" {
		t.Fatalf("second request: attempts %q, skipped %+v", keysOf(resp), resp.Skipped)
	}
	if err := cl.ResetHealth("primary"); err != nil {
		t.Fatal(err)
	}
	if k := keyStats(t, cl)["primary"]; k.State != "ready" || k.Requests != 1 {
		t.Fatalf("after the reset: %+v", k) // ready, counters kept
	}
	if resp, err = cl.Send(body, ""); err != nil || keysOf(resp) != "primary backup" {
		t.Fatalf("after the reset: %v %q", err, keysOf(resp))
	}
	if err := cl.ResetHealth(""); err != nil {
		t.Fatal(err)
	}
	if k := keyStats(t, cl)["primary"]; k.State != "ready" {
		t.Fatalf("after resetting all: %+v", k)
	}
	err = cl.ResetHealth("no-such-key")
	if e, ok := err.(*Error); !ok || e.Code != ErrInvalid {
		t.Fatalf("an unknown key: want ErrInvalid, got %v", err)
	}
	if s := strings.Join(seen(), " "); s != "k-primary k-backup k-backup k-primary k-backup" {
		t.Fatalf("provider saw %q", s)
	}
}

func TestSetConfig(t *testing.T) {
	srv, seen := fakeProvider(t)
	defer srv.Close()
	cl := newClient(t, srv.URL, "backup")
	defer cl.Close()
	body := []byte(`{"model":"fake:m1"}`)
	if _, err := cl.Send(body, ""); err != nil {
		t.Fatal(err)
	}
	// the same keys, the backup alone in the step
	swapped := strings.Replace(string(gateway(srv.URL, "backup")), `{"id": "primary"}, `, "", 1)
	cfg2, err := ParseConfig([]byte(swapped))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.SetConfig(cfg2); err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Send(body, "")
	if err != nil || keysOf(resp) != "backup" || len(resp.Skipped) != 0 {
		t.Fatalf("after the swap: %v %q %+v", err, keysOf(resp), resp.Skipped)
	}
	ks := keyStats(t, cl)
	if endpointStats(t, cl)["primary"].State != "cooling" || ks["backup"].Successes != 2 {
		t.Fatalf("health did not carry over: %+v", ks) // same provider, id and value
	}
	// a bare configuration naming keys it does not hold: refused, unchanged
	bare, err := ParseConfig([]byte(`{"name":"bare","router":{"rules":[{"provider":"fake",
	  "steps":[{"type":"user","keys":[{"id":"primary"}]}]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	err = cl.SetConfig(bare)
	if e, ok := err.(*Error); !ok || e.Code != ErrConfig {
		t.Fatalf("a bare configuration: want ErrConfig, got %v", err)
	}
	if resp, err = cl.Send(body, ""); err != nil || keysOf(resp) != "backup" {
		t.Fatalf("after the refused swap: %v %q", err, keysOf(resp))
	}
	if s := strings.Join(seen(), " "); s != "k-primary k-backup k-backup k-backup" {
		t.Fatalf("provider saw %q", s)
	}
	if err := cl.SetConfig(nil); err == nil {
		t.Fatal("SetConfig(nil): no error")
	}
}
