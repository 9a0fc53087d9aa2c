package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/storetest"
)

// flakyProxy stands between `livepg tail` and a server: it can cut every
// connection and refuse new ones (503) until told otherwise.
type flakyProxy struct {
	*httptest.Server
	down atomic.Bool
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // pass stream bytes at once
	p := &flakyProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "proxy down", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// `livepg tail` prints each event as it arrives, resumes from
// --last-event-id, rides out a dropped connection and a server that
// refuses it for a while, resuming from the last id it printed, and stops
// on SIGINT (its context ending).
func TestTailPrintsEventsAndResumesAfterDisconnects(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})
	waitReady(t, base)
	proxy := newFlakyProxy(t, base)

	publish := func(topic, data string) int64 {
		t.Helper()
		resp, body := post(t, base+"/v1/publish", fmt.Sprintf(`{"topic":%q,"type":"note","data":%s}`, topic, data), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish = %d %s", resp.StatusCode, body)
		}
		var seq int64
		fmt.Sscanf(body, `{"seq":%d}`, &seq)
		return seq
	}
	// An id is '<seq>-<epoch>'; the log's epoch stays the same through
	// this test (the database does not restart).
	var epoch string
	if err := pgxConnectQueryRow(t, db, `SELECT epoch FROM livepg.state`, &epoch); err != nil {
		t.Fatal(err)
	}
	line := func(seq int64, topic, data string) string {
		return fmt.Sprintf("%d-%s\tnote\t%s\t%s\n", seq, epoch, topic, data)
	}

	skipped := publish("boards/1", `{"n": 0}`)
	var want strings.Builder
	want.WriteString(line(publish("boards/1", `{"n": 1}`), "boards/1", `{"n":1}`))
	publish("other/1", `{"n": "not selected"}`)

	ctx, sigint := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tail", "--url", proxy.URL, "--topic", "boards/*", "--topic", "cards/7",
			"--last-event-id", fmt.Sprint(skipped), "--retry", "20ms"}, func(string) string { return "" }, &stdout, &stderr)
	}()
	waitOutput := func(what string, out *syncBuffer, cond func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond(out.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s; stdout:\n%s\nstderr:\n%s", what, stdout.String(), stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOutput("the resumed event", &stdout, func(s string) bool { return s == want.String() })

	want.WriteString(line(publish("cards/7", `{"text": "live"}`), "cards/7", `{"text":"live"}`))
	waitOutput("a live event", &stdout, func(s string) bool { return s == want.String() })

	// The connection drops and the server is unreachable for a while;
	// events committed meanwhile arrive once it is back.
	proxy.down.Store(true)
	proxy.CloseClientConnections()
	waitOutput("two failed reconnects", &stderr, func(s string) bool { return strings.Count(s, "503") >= 2 })
	want.WriteString(line(publish("boards/2", `{"n": 2}`), "boards/2", `{"n":2}`))
	want.WriteString(line(publish("boards/3", `[1, 2]`), "boards/3", `[1,2]`))
	proxy.down.Store(false)
	waitOutput("the missed events, once each", &stdout, func(s string) bool { return s == want.String() })

	sigint()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail returned %v on SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tail did not stop")
	}
	if !strings.Contains(stderr.String(), "resuming after event") {
		t.Errorf("stderr does not say where tail resumes:\n%s", stderr.String())
	}
}

// Bad arguments and refused streams end tail with an error at once.
func TestTailRefusesBadArguments(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_MAX_TOPICS": "1"})
	for _, args := range [][]string{
		{},
		{"--topic", "boards//1"},
		{"--topic", "boards/*", "--last-event-id", "x"},
		{"--topic", "boards/*", "--url", "ftp://x"},
		{"--topic", "a", "--topic", "b", "--url", base}, // the server allows one topic: 400
	} {
		err := run(context.Background(), append([]string{"tail"}, args...), func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("tail %v: no error", args)
		}
	}
}

// Private topics need a token: tail without one is refused at once, with
// one it follows the topic.
func TestTailSendsItsToken(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{
		"DATABASE_URL": db, "PORT": "0", "LIVEPG_TOKEN_KEY": testTokenKey, "LIVEPG_PRIVATE_TOPICS": "secret/*",
	})
	waitReady(t, base)
	args := []string{"tail", "--url", base, "--topic", "secret/1"}
	noEnv := func(string) string { return "" }
	err := run(context.Background(), args, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("tail without a token: %v, want a 401 refusal", err)
	}

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"secret/*"},
	}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	ctx, sigint := context.WithCancel(context.Background())
	defer sigint()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append(args, "--token", tok), noEnv, &stdout, &stderr) }()
	// Publish until tail prints one: it may connect after the first.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "\tsecret/1\t") {
		if time.Now().After(deadline) {
			t.Fatalf("tail printed nothing; stderr:\n%s", stderr.String())
		}
		if resp, body := post(t, base+"/v1/publish", `{"topic":"secret/1"}`, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("publish = %d %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sigint()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// pgxConnectQueryRow runs one query on db and scans its row into dest.
func pgxConnectQueryRow(t *testing.T, db, sql string, dest ...any) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest...)
}
