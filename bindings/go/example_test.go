package aigw_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	aigw "github.com/libaigw/libaigw/bindings/go"
)

// exampleGateway writes gateway.json (gpt-4o's openai pointed at a fake
// provider whose primary key is rate limited) into a new directory and
// makes it the working directory; the returned func undoes it.
func exampleGateway() func() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "Bearer sk-primary" {
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"code":"rate_limit_exceeded"}}`)
			return
		}
		fmt.Fprint(w, `{"id":"chatcmpl-1","choices":[{"message":{"content":"Hi"}}]}`)
	}))
	dir, err := os.MkdirTemp("", "aigw-example")
	if err != nil {
		log.Fatal(err)
	}
	gw := fmt.Sprintf(`{"providers": [{"providerId": "openai", "name": "OpenAI", "baseUrl": %q},
	    {"providerId": "anthropic", "name": "Anthropic", "baseUrl": %q}],
	  "providerKeys": [{"id": "primary", "providerId": "openai", "name": "p", "value": "sk-primary"},
	                   {"id": "backup", "providerId": "openai", "name": "b", "value": "sk-backup"}],
	  "accessKeyConfiguration": {"name": "example"}}`, srv.URL+"/v1", srv.URL)
	if err := os.WriteFile(filepath.Join(dir, "gateway.json"), []byte(gw), 0o600); err != nil {
		log.Fatal(err)
	}
	old, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		log.Fatal(err)
	}
	return func() {
		_ = os.Chdir(old)
		os.RemoveAll(dir)
		srv.CloseClientConnections()
		srv.Close()
	}
}

// The README's Go snippet (README.md, "## Go"), as it is there: between the
// markers, TestReadmeSnippet checks the README holds the same lines.
func Example() {
	defer exampleGateway()()
	// README:begin
	ctx := context.Background()                 // a request's context: cancelling it cancels the request
	cfg, err := aigw.LoadConfig("gateway.json") // *aigw.Error carries Problems{Path, Problem}
	if err != nil {
		log.Fatal(err)
	}
	client, err := aigw.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close() // waits for requests in flight, refuses new ones
	resp, err := client.SendContext(ctx, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}`), "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, resp.Outcome, string(resp.Body))
	for _, a := range resp.Attempts { // none when nothing was sent (every key cooling, ...)
		fmt.Println(a.Event.ProviderKeyID, a.Event.StatusCode, a.RetryAction)
	}

	// net/http, and so openai-go / anthropic-sdk-go: option.WithHTTPClient(hc)
	hc := &http.Client{Transport: aigw.NewTransport(client)}
	r, err := hc.Post("http://aigw.invalid/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	fmt.Println(r.StatusCode, r.Header.Get("x-aigw-attempts"), r.Header.Get("x-aigw-model"), string(body))
	// README:end

	// Output:
	// 200 served {"id":"chatcmpl-1","choices":[{"message":{"content":"Hi"}}]}
	// primary 429 next_key
	// backup 200 succeeded
	// 200 1 gpt-4o {"id":"chatcmpl-1","choices":[{"message":{"content":"Hi"}}]}
}

func snippetLines(t *testing.T, path, begin, end string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !in && line == begin:
			in = true
		case in && line == end:
			return out
		case in && line != "":
			out = append(out, line)
		}
	}
	t.Fatalf("%s: no %q ... %q block", path, begin, end)
	return nil
}

// The README's Go snippet is Example's code, line for line.
func TestReadmeSnippet(t *testing.T) {
	ex := snippetLines(t, "example_test.go", "// README:begin", "// README:end")
	readme := snippetLines(t, filepath.Join("..", "..", "README.md"), "<!-- go-example: bindings/go/example_test.go -->", "```")
	if len(readme) == 0 || readme[0] != "```go" {
		t.Fatalf("README: the go-example marker is not followed by a ```go block")
	}
	readme = readme[1:]
	if strings.Join(readme, "\n") != strings.Join(ex, "\n") {
		t.Fatalf("README.md's Go snippet differs from Example (bindings/go/example_test.go):\n%s\n---\n%s",
			strings.Join(readme, "\n"), strings.Join(ex, "\n"))
	}
}
