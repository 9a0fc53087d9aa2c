package ssetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Follower behaves as a browser's EventSource behind a load balancer: it
// reads a stream and, whenever the stream ends or a node cannot be reached,
// reconnects — to the next of its nodes — sending Last-Event-ID, so that it
// resumes where it stopped.
type Follower struct {
	events     chan Event
	reconnects atomic.Int64
	connects   atomic.Int64 // streams opened (response headers received)
	cancel     context.CancelFunc
	done       chan struct{}

	mu     sync.Mutex
	lastID string
	nodes  []string
}

// Follow starts following path (such as "/v1/events?topic=a") on the nodes,
// starting from lastEventID ("" for a new stream). It stops at the end of the
// test.
func Follow(t testing.TB, nodes []string, path, lastEventID string) *Follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{events: make(chan Event, 1<<16), cancel: cancel, done: make(chan struct{}), lastID: lastEventID, nodes: nodes}
	go f.run(ctx, path)
	t.Cleanup(f.Close)
	return f
}

func (f *Follower) run(ctx context.Context, path string) {
	defer close(f.done)
	for i := 0; ctx.Err() == nil; i++ {
		if i > 0 {
			f.reconnects.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		f.mu.Lock()
		node := f.nodes[i%len(f.nodes)]
		f.mu.Unlock()
		s, err := Dial(ctx, node+path, f.LastEventID())
		if err != nil {
			continue
		}
		f.connects.Add(1)
		for ev := range s.Events() {
			f.mu.Lock()
			f.lastID = ev.ID
			f.mu.Unlock()
			select {
			case f.events <- ev:
			case <-ctx.Done():
			}
		}
		s.Close()
	}
}

// SetNodes changes the nodes the follower reconnects to, as a load balancer
// does when nodes come and go. The stream open now is left as it is.
func (f *Follower) SetNodes(nodes []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = nodes
}

// Events delivers every event received, across reconnects.
func (f *Follower) Events() <-chan Event { return f.events }

// Connected reports whether a stream has been opened: from then on, every
// event committed is the follower's to receive.
func (f *Follower) Connected() bool { return f.connects.Load() > 0 }

// Reconnects counts the connections made after the first.
func (f *Follower) Reconnects() int64 { return f.reconnects.Load() }

// LastEventID is the id of the last event received.
func (f *Follower) LastEventID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastID
}

// Expect reads events until the last of want has arrived and fails the test
// unless exactly want arrived, in order, once: the delivery invariant, as a
// subscriber sees it.
func (f *Follower) Expect(t testing.TB, name string, want []int64) {
	t.Helper()
	var got []int64
	timeout := time.After(60 * time.Second)
	for len(got) == 0 || got[len(got)-1] < want[len(want)-1] {
		select {
		case ev := <-f.Events():
			got = append(got, ev.Seq())
		case <-timeout:
			t.Fatalf("%s: timed out with %d of %d events", name, len(got), len(want))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: received %d events, %d were committed", name, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: event %d is seq %d, want %d", name, i, got[i], want[i])
		}
	}
}

// Close stops following.
func (f *Follower) Close() {
	f.cancel()
	<-f.done
}
