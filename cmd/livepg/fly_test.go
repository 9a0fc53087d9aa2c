package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

func logHead(t *testing.T, db string) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var head int64
	if err := conn.QueryRow(ctx, `SELECT head FROM livepg.position(NULL, NULL)`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

func post(t *testing.T, url, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+serviceToken(t))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A node in a region away from the primary answers writes with fly-replay
// (Fly's proxy replays them in the primary region) and writes nothing;
// streams and reads are served where they land.
func TestWritesAwayFromThePrimaryRegionAreReplayed(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{
		"DATABASE_URL": db, "PORT": "0", "FLY_REGION": "syd", "PRIMARY_REGION": "ams",
	})
	waitReady(t, base)
	s := ssetest.Open(t, base+"/v1/events?topic=fly", "")

	before := logHead(t, db)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		req, _ := http.NewRequest(method, base+"/v1/publish", strings.NewReader(`{"topic":"fly"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Fly-Replay"); got != "region=ams" {
			t.Errorf("%s /v1/publish: fly-replay %q, want region=ams (status %d %s)", method, got, resp.StatusCode, body)
		}
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "ams") {
			t.Errorf("%s /v1/publish: body %q, want a JSON error naming the primary region", method, body)
		}
	}
	// Any other mutation route, present or to come, is replayed alike.
	if resp, _ := post(t, base+"/no/such/mutation", `{}`, nil); resp.Header.Get("Fly-Replay") != "region=ams" {
		t.Errorf("POST to another route: fly-replay %q", resp.Header.Get("Fly-Replay"))
	}
	if after := logHead(t, db); after != before {
		t.Fatalf("log head moved from %d to %d: a replayed write was written", before, after)
	}

	// Reads are local.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := get(t, base+p); code != http.StatusOK {
			t.Errorf("GET %s = %d", p, code)
		}
	}
	// Once Fly has replayed a request, it is served where it lands: a write
	// is never bounced twice.
	resp, body := post(t, base+"/v1/publish", `{"topic":"fly","data":1}`, http.Header{"Fly-Replay-Src": {"instance=abc;region=syd;t=1"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Fly-Replay") != "" {
		t.Fatalf("replayed publish = %d %q, fly-replay %q", resp.StatusCode, body, resp.Header.Get("Fly-Replay"))
	}
	if ev := s.Next(t, 30*time.Second); ev.Type != "message" {
		t.Fatalf("stream got %+v", ev)
	}
}

// In the primary region, or off Fly, writes are served.
func TestWritesInThePrimaryRegionAreServed(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	for _, env := range []map[string]string{
		{"FLY_REGION": "ams", "PRIMARY_REGION": "ams"},
		{"FLY_REGION": "ams"},
		{"PRIMARY_REGION": "ams"},
	} {
		env["DATABASE_URL"], env["PORT"] = db, "0"
		base, stop := startServer(t, env)
		resp, body := post(t, base+"/v1/publish", `{"topic":"here"}`, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Fly-Replay") != "" {
			t.Errorf("%v: publish = %d %q, fly-replay %q", env, resp.StatusCode, body, resp.Header.Get("Fly-Replay"))
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// GET /metrics serves the node's metrics and the build's version;
// `livepg version` prints it.
func TestMetricsEndpointAndVersion(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})
	waitReady(t, base)
	s := ssetest.Open(t, base+"/v1/events?topic=m", "")
	if resp, body := post(t, base+"/v1/publish", `{"topic":"m"}`, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("publish = %d %s", resp.StatusCode, body)
	}
	s.Next(t, 30*time.Second)
	// The stream's write is counted once it returns, which may be a moment
	// after the client has read it: scrape until the figures are there.
	wants := []string{
		`livepg_build_info{goversion="go`, `version="` + version + `"} 1`,
		"livepg_streams_open 1", "livepg_events_delivered_total 1", "livepg_listener_wiring_ok 1",
		"go_goroutines", "process_resident_memory_bytes",
	}
	var missing []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := get(t, base+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range missing {
		t.Errorf("/metrics lacks %q", want)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "livepg "+version+" go") {
		t.Fatalf("livepg version printed %q", out.String())
	}
}
