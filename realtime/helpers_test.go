package realtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// testNode is one livepg server: a node and its HTTP server.
type testNode struct {
	*realtime.Node
	Store *store.Store
	URL   string
}

// startNode starts a server on dbURL. Several on one database are several
// nodes of one deployment.
func startNode(t *testing.T, dbURL string, cfg realtime.Config) *testNode {
	t.Helper()
	return startNodeListening(t, dbURL, cfg, nil)
}

// startNodeListening is startNode with the server's listener passed through
// wrap (when not nil).
func startNodeListening(t *testing.T, dbURL string, cfg realtime.Config, wrap func(net.Listener) net.Listener) *testNode {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.ListenURL == "" {
		cfg.ListenURL = dbURL
	}
	if os.Getenv("LIVEPG_TEST_PLAIN_STREAMS") != "" {
		cfg.PlainStreams = true // run the whole suite on streams served through net/http
	}
	if v := os.Getenv("LIVEPG_TEST_WINDOW"); v != "" && cfg.Window == 0 {
		// Run the suite with another window of the log: -1 for none (every
		// catch-up reads the log), 4096 for a tiny one.
		w, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("LIVEPG_TEST_WINDOW=%q: want a number of bytes, or -1 for no window", v)
		}
		cfg.Window = w
	}
	node, err := realtime.NewNode(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	node.Routes(r)
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := node.Ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ConnContext = realtime.ConnContext
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	t.Cleanup(func() {
		node.CloseStreams()
		srv.Close()
		node.Stop()
	})
	tn := &testNode{Node: node, Store: st, URL: srv.URL}
	waitFor(t, "listener connected", func() bool { return metric(t, node, "livepg_listener_connected") == 1 })
	return tn
}

// tinyWindow is a window of the log of a few events (about 15 small
// ones): streams of tests run with it resume and catch up from the window
// when their point is among the last events, and from the log otherwise.
const tinyWindow = 4 << 10

// testWindows are the windows the ordering and fault tests run with, so
// that both ways of catching up are exercised: the default window (most
// catch-ups served from memory) and a tiny one (most from the log).
var testWindows = []struct {
	name   string
	window int64
}{{"window", realtime.DefaultConfig.Window}, {"tiny window", tinyWindow}}

// forEachWindow runs test as parallel subtests, once with each of
// testWindows: window is for realtime.Config.Window.
func forEachWindow(t *testing.T, test func(t *testing.T, window int64)) {
	t.Helper()
	for _, w := range testWindows {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			test(t, w.window)
		})
	}
}

// forEachBusAndWindow runs test in each bus mode (storetest.Buses) with
// each window of forEachWindow, as parallel subtests.
func forEachBusAndWindow(t *testing.T, test func(t *testing.T, bus string, window int64)) {
	t.Helper()
	for _, bus := range storetest.Buses {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			forEachWindow(t, func(t *testing.T, window int64) { test(t, bus, window) })
		})
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: it waits on a fact, it asserts no timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// payload is the data of a stream event: {"topic": ..., "data": ...}.
type payload struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

func decode(t *testing.T, ev ssetest.Event) payload {
	t.Helper()
	var p payload
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		t.Fatalf("event %s data %q: %v", ev.ID, ev.Data, err)
	}
	return p
}

// collect reads events from s until one has seq >= last, failing on
// timeout.
func collect(t *testing.T, s *ssetest.Stream, last int64) []ssetest.Event {
	t.Helper()
	var got []ssetest.Event
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatalf("stream ended after %d events: %v", len(got), s.Err())
			}
			got = append(got, ev)
			if ev.Seq() >= last {
				return got
			}
		case <-timeout:
			t.Fatalf("timed out after %d events, waiting for seq %d", len(got), last)
		}
	}
}

// expectNothingMore checks that no further event is already queued on s.
func expectNothingMore(t *testing.T, s *ssetest.Stream) {
	t.Helper()
	select {
	case ev := <-s.Events():
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

// stuckClient opens a stream on path and never reads a byte of it, with a
// small receive buffer so that the server's writes soon block.
func stuckClient(t *testing.T, n *testNode, path string) net.Conn {
	t.Helper()
	u, _ := url.Parse(n.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, u.Host)
	return conn
}
