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
	if n := len(seen()); n != 200 {
		t.Fatalf("provider saw %d requests, want 200", n)
	}
}
