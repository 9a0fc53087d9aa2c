package realtime_test

import (
	"bytes"
	"context"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// A client that stops reading is cut off once it accepts no bytes for the
// write timeout, and its goroutines are released; a fast client beside it
// receives everything meanwhile. (Not parallel: it counts the goroutines of
// the process.)
func TestStuckClientIsCutOffWithoutSlowingOthers(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{WriteTimeout: 300 * time.Millisecond, Buffer: 8, PollInterval: time.Hour})
	fast := ssetest.Open(t, n.URL+"/v1/events?topic=s", "")

	// The stuck client sends its request and never reads a byte.
	stuckClient(t, n, "/v1/events?topic=s")
	waitFor(t, "both streams joined", func() bool { return metric(t, n.Node, "livepg_subscribers_live") == 2 })

	// Far more than the socket buffers hold: 40 events of 256 KB.
	blob := strings.Repeat("x", 256<<10)
	var last int64
	for range 40 {
		seq, err := n.Store.Publish(ctx, "s", "message", []byte(`"`+blob+`"`))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	if got := collect(t, fast, last); len(got) != 40 {
		t.Fatalf("fast client received %d events, want 40", len(got))
	}
	// The stuck client's stream has ended on the server; the fast one is open.
	waitFor(t, "stuck stream cut off", func() bool { return n.Streams() == 1 })
	waitFor(t, "the stuck stream's goroutines released", func() bool {
		// The fast stream's alone remain: its stream, and either its
		// net/http connection or (a lean stream) its taken connection's
		// goroutine and reader.
		return goroutinesIn("stream.(*Engine).run(") == 1 &&
			goroutinesIn("net/http.(*conn).serve") <= 1 && goroutinesIn("stream.(*takenStreams).take") <= 2
	})
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

func TestIdleStreamGetsHeartbeats(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Heartbeat: 20 * time.Millisecond})
	s := ssetest.Open(t, n.URL+"/v1/events?topic=idle", "")
	// One comment opens every stream; heartbeats add more.
	waitFor(t, "heartbeat comments", func() bool { return s.Comments() >= 3 })
	if s.Retry() == "" {
		t.Fatal("no initial retry: field")
	}
}
