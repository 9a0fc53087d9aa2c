package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// syncBuffer collects a running server's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const testTokenKey = "a-test-token-key-of-at-least-32-bytes"

// serviceToken may publish on every topic of a server started by the tests.
func serviceToken(t *testing.T) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "publish": []string{"*"},
	}).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var servingRE = regexp.MustCompile(`serving on (http://localhost:\d+)`)

// startServer runs the whole program with env, as `livepg` would run, and
// returns its URL and a function that stops it (as SIGTERM does) and returns
// run's error.
func startServer(t *testing.T, env map[string]string) (string, func() error) {
	t.Helper()
	base, stop, _ := startServerOutput(t, env)
	return base, stop
}

// startServerOutput is startServer that also returns what the server
// prints and logs. An env that names LIVEPG_TOKEN_KEY, even empty, keeps
// its value; otherwise a server with a DATABASE_URL gets the test key.
func startServerOutput(t *testing.T, env map[string]string) (string, func() error, *syncBuffer) {
	t.Helper()
	// With a database of its own a server wants a token to publish; the
	// tests' requests carry one (see post).
	if _, named := env["LIVEPG_TOKEN_KEY"]; env["DATABASE_URL"] != "" && !named {
		env = maps.Clone(env)
		env["LIVEPG_TOKEN_KEY"] = testTokenKey
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, &out, &out)
	}()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("server did not stop; output:\n%s", out.String())
			}
			stopped = true
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	deadline := time.Now().Add(time.Minute)
	for {
		if m := servingRE.FindStringSubmatch(out.String()); m != nil {
			return m[1], stop, &out
		}
		select {
		case err := <-done:
			stopped, runErr = true, err
			t.Fatalf("server exited: %v; output:\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get(t, base+"/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("server never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The program end to end: it serves health, publishing and streams, and on
// shutdown ends each stream with a retry hint and returns cleanly.
func TestServeAndShutDownGracefully(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, stop := startServer(t, map[string]string{
		"DATABASE_URL":            db,
		"PORT":                    "0",
		"LIVEPG_SHUTDOWN_TIMEOUT": "5s",
	})
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	waitReady(t, base)

	s := ssetest.Open(t, base+"/v1/events?topic=e2e", "")
	_, body := post(t, base+"/v1/publish", `{"topic":"e2e","data":{"n":1}}`, nil)
	var published struct{ Seq int64 }
	_ = json.Unmarshal([]byte(body), &published)
	if ev := s.Next(t, 30*time.Second); ev.Seq() != published.Seq || published.Seq == 0 {
		t.Fatalf("stream got %+v, publish answered %d", ev, published.Seq)
	}

	if err := stop(); err != nil {
		t.Fatalf("run returned %v after shutdown", err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open after shutdown")
	}
	if s.Retry() == "" {
		t.Fatal("stream ended without a retry hint")
	}
}

// With no DATABASE_URL, livepg starts its own PostgreSQL under the data
// folder, migrates it and serves: the README's first command.
func TestServeWithoutConfigurationStartsLocalPostgres(t *testing.T) {
	t.Parallel()
	// Not t.TempDir: that folder is private to root, and the server may run
	// as the postgres user.
	dir, err := os.MkdirTemp("", "livepg-local-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base, stop := startServer(t, map[string]string{"PORT": "0", "LIVEPG_DATA_DIR": dir + "/data"})
	waitReady(t, base)
	s := ssetest.Open(t, base+"/v1/events?topic=local", "")
	resp, err := http.Post(base+"/v1/publish", "application/json", strings.NewReader(`{"topic":"local"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ev := s.Next(t, 30*time.Second); ev.Type != "message" {
		t.Fatalf("got %+v", ev)
	}
	// The demo is on in the local mode, open to this machine's user.
	if code, body := get(t, base+"/api/boards"); code != http.StatusOK {
		t.Fatalf("local mode: GET /api/boards = %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateSubcommands(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	env := func(k string) string { return map[string]string{"DATABASE_URL": db}[k] }
	ctx := context.Background()
	var out bytes.Buffer
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "status"}, "applied"},
		{[]string{"migrate", "down"}, ""},
		{[]string{"migrate", "status"}, "pending"},
		{[]string{"migrate", "up"}, ""},
		{[]string{"migrate", "status"}, "applied"},
	}
	for _, step := range steps {
		out.Reset()
		if err := run(ctx, step.args, env, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", step.args, err)
		}
		if !strings.Contains(out.String(), step.want) {
			t.Fatalf("%v printed %q, want it to mention %q", step.args, out.String(), step.want)
		}
	}
	for _, bad := range [][]string{{"migrate"}, {"migrate", "sideways"}, {"frobnicate"}} {
		if err := run(ctx, bad, env, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	for _, env := range []map[string]string{
		{"PORT": "http"},
		{"LIVEPG_RETENTION": "forever"},
		{"LIVEPG_HEARTBEAT": "-1s"},
		{"LIVEPG_BUFFER": "0"},
		{"LIVEPG_MAX_BODY": "big"},
		{"LIVEPG_MAX_STREAMS": "-5"},
		{"LIVEPG_PRIVATE_TOPICS": "secret/*"},
		{"LIVEPG_PRIVATE_TOPICS": "a b", "LIVEPG_TOKEN_KEY": testTokenKey},
		{"LIVEPG_TOKEN_KEY": "too short"},
		{"LIVEPG_TOKEN_ALG": "none", "LIVEPG_TOKEN_KEY": testTokenKey},
		{"LIVEPG_TOKEN_ALG": "RS256", "LIVEPG_TOKEN_KEY": "not a PEM key"},
		{"LIVEPG_TOKEN_KEY_FILE": "/no/such/file"},
		{"LIVEPG_DEMO": "yes"},
		{"LIVEPG_H2C": "yes"},
		{"LIVEPG_H2C_MAX_STREAMS": "0"},
		{"LIVEPG_H2C_MAX_STREAMS": "1000000"},
		{"LIVEPG_PRESENCE_RENEW": "20s"}, // longer than the lease (15s)
		{"LIVEPG_PRESENCE_JOIN_RATE": "-2"},
		{"LIVEPG_PRESENCE_ANONYMOUS": "yes"},
		{"LIVEPG_PRESENCE_TTL": "2h"},
		{"LIVEPG_PRESENCE_MAX_MEMBERS": "0"},
	} {
		err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: accepted", env)
			continue
		}
		for k := range env {
			if k == "LIVEPG_TOKEN_ALG" || len(env) > 1 && k == "LIVEPG_TOKEN_KEY" {
				continue // a setting that is fine, beside the one at fault
			}
			if !strings.Contains(err.Error(), k) {
				t.Errorf("%v: error %q does not name %s", env, err, k)
			}
		}
	}
}

func mustConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Outside the no-configuration local mode, publishing over HTTP needs a
// token that grants the topic.
func TestPublishNeedsATokenWithADatabaseURL(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0"})
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer not-a-token", http.StatusUnauthorized},
		{"Bearer " + serviceToken(t), http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/publish", strings.NewReader(`{"topic":"t"}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %.20q: %d, want %d", tc.auth, resp.StatusCode, tc.want)
		}
	}
}
