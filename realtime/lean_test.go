package realtime_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// Lean streams (connections taken from net/http) behave as streams served
// through net/http: every event once and in order, resume on another node,
// the client going noticed, a retry hint at shutdown. They are the default;
// LIVEPG_TEST_PLAIN_STREAMS=1 runs the whole suite on plain ones instead.
func TestLeanStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	cfg := realtime.Config{PollInterval: time.Hour, Retry: 1500 * time.Millisecond}
	a, b := startNode(t, db, cfg), startNode(t, db, cfg)

	s := ssetest.Open(t, a.URL+"/v1/events?topic=lean/*", "")
	if ct := s.Resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var seqs []int64
	for i := range 20 {
		seq, err := a.Store.Publish(ctx, fmt.Sprintf("lean/%d", i%2), "message", fmt.Appendf(nil, "%d", i))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	got := collect(t, s, seqs[9])
	if len(got) != 10 {
		t.Fatalf("received %d events, want 10", len(got))
	}
	if s.Retry() != "1500" {
		t.Fatalf("retry %q, want 1500", s.Retry())
	}

	// Resume on the other node from the tenth event.
	r := ssetest.Open(t, b.URL+"/v1/events?topic=lean/*", got[9].ID)
	rest := collect(t, r, seqs[19])
	for i, ev := range rest {
		if ev.Seq() != seqs[10+i] || string(decode(t, ev).Data) != fmt.Sprint(10+i) {
			t.Fatalf("resumed event %d: seq %d data %s", i, ev.Seq(), decode(t, ev).Data)
		}
	}
	expectNothingMore(t, r)

	// A client that goes is noticed.
	waitFor(t, "both streams on a", func() bool { return a.Streams() == 1 })
	s.Close()
	waitFor(t, "the closed stream ended", func() bool { return a.Streams() == 0 && metric(t, a.Node, "livepg_subscribers_live") == 0 })

	// Shutdown ends the stream after a retry hint; Stop waits for it.
	b.CloseStreams()
	select {
	case _, ok := <-r.Events():
		if ok {
			t.Fatal("an event after shutdown")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not end at shutdown")
	}
	b.Stop()
	if b.Streams() != 0 {
		t.Fatalf("%d streams after Stop", b.Streams())
	}
}

// opaqueListener hands out connections that hide their file descriptor, as
// a listener wrapping its connections (TLS, PROXY protocol) does.
type opaqueListener struct{ net.Listener }

type opaqueConn struct{ net.Conn }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

// A lean stream on a connection the node's epoll watcher cannot take still
// delivers, and still notices its client go.
func TestLeanStreamsOnConnectionsWithoutDescriptor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNodeListening(t, db, realtime.Config{PollInterval: time.Hour}, func(l net.Listener) net.Listener {
		return opaqueListener{l}
	})
	s := ssetest.Open(t, n.URL+"/v1/events?topic=opaque", "")
	seq, err := n.Store.Publish(ctx, "opaque", "message", []byte(`1`))
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, s, seq); len(got) != 1 || got[0].Seq() != seq {
		t.Fatalf("received %v, want the event %d", got, seq)
	}
	waitFor(t, "the stream open", func() bool { return n.Streams() == 1 })
	s.Close()
	waitFor(t, "the closed stream ended", func() bool { return n.Streams() == 0 && metric(t, n.Node, "livepg_subscribers_live") == 0 })
}
