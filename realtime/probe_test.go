package realtime_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// logBuffer collects a node's log lines (and passes them to the test's
// output too).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func newLogBuffer(t *testing.T) (*logBuffer, *slog.Logger) {
	b := &logBuffer{out: t.Output()}
	return b, slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, _ = b.out.Write(p)
	return b.buf.Write(p)
}

// Count is how many lines contain all of parts.
func (b *logBuffer) Count(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for line := range strings.Lines(b.buf.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func readyz(t *testing.T, n *testNode) (int, string) {
	t.Helper()
	resp, err := http.Get(n.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A listener that reaches another database than the pool (as one on a
// replica or behind a transaction pooler would: it LISTENs, and hears
// nothing the pool sends) keeps the node from becoming ready, and the log
// names the cause and the fix.
func TestListenerThatDoesNotHearThePoolKeepsNodeUnready(t *testing.T) {
	t.Parallel()
	poolDB, otherDB := storetest.NewDatabase(t), storetest.NewDatabase(t)
	logs, logger := newLogBuffer(t)
	n := startNode(t, poolDB, realtime.Config{
		ListenURL:     otherDB,
		ProbeTimeout:  100 * time.Millisecond,
		ProbeInterval: 100 * time.Millisecond,
		Logger:        logger,
	})
	// The listener is connected: only the probe can tell.
	if metric(t, n.Node, "livepg_listener_connected") != 1 {
		t.Fatal("listener not connected")
	}
	// Several probes fail, one after another; the node is never ready.
	failed := func() int {
		return logs.Count("wiring probe failed", "LISTEN_DATABASE_URL", "replica", "PgBouncer", "primary")
	}
	for want := 1; want <= 3; want++ {
		waitFor(t, "a failed wiring probe logged", func() bool { return failed() >= want })
		if err := n.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "LISTEN_DATABASE_URL") {
			t.Fatalf("after %d failed probes, Ready = %v; want an error naming LISTEN_DATABASE_URL", want, err)
		}
		if code, body := readyz(t, n); code != http.StatusServiceUnavailable || !strings.Contains(body, "LISTEN_DATABASE_URL") {
			t.Fatalf("/readyz = %d %q", code, body)
		}
	}
}

// A node's listener that hears another node's probes, but not its own,
// is still not ready: a probe proves only the node that sent it. The
// other node, wired right, is ready.
func TestAnotherNodesProbeProvesNothing(t *testing.T) {
	t.Parallel()
	db, otherDB := storetest.NewDatabase(t), storetest.NewDatabase(t)
	// The mis-wired node's probes fail fast; the right node's may take their
	// time (on a loaded machine a round trip can outlast 100 ms, and a late
	// probe would rightly make it unready for a moment).
	right := startNode(t, db, realtime.Config{ProbeTimeout: time.Minute, ProbeInterval: 50 * time.Millisecond})
	logs, logger := newLogBuffer(t)
	wrong := realtime.Config{ProbeTimeout: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}
	wrong.ListenURL, wrong.Logger = db, logger
	misWired := startNode(t, otherDB, wrong) // pool on otherDB, listener on db
	waitFor(t, "the right node ready", func() bool { return right.Ready(context.Background()) == nil })
	waitFor(t, "two failed probes on the mis-wired node", func() bool {
		return logs.Count("wiring probe failed") >= 2
	})
	if err := misWired.Ready(context.Background()); err == nil {
		t.Fatal("mis-wired node is ready")
	}
	if code, _ := readyz(t, right); code != http.StatusOK {
		t.Fatalf("right node /readyz = %d", code)
	}
}

// A node wired right becomes ready once its listener hears its probe, and
// its events still arrive by notification (probes do not replace them).
func TestWiredNodeBecomesReady(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{PollInterval: time.Hour, ProbeInterval: 20 * time.Millisecond})
	waitFor(t, "ready", func() bool { return n.Ready(context.Background()) == nil })
	s := ssetest.Open(t, n.URL+"/v1/events?topic=w", "")
	seq, err := n.Store.Publish(context.Background(), "w", "message", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev := collect(t, s, seq); ev[len(ev)-1].Seq() != seq {
		t.Fatalf("got %+v, want seq %d", ev, seq)
	}
	if code, _ := readyz(t, n); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
}
