package stream

import (
	"context"
	"sync"
	"time"

	"github.com/livepg/livepg/store"
)

// sharedBounds lets streams that open together share their read of the
// log's bounds: ten thousand browsers reconnecting at once cost a few
// queries, not ten thousand. A stream needs bounds read after it arrived
// (its start must reflect every event committed before it answers), so a
// read already under way when it arrives began too early for it: it waits
// for the next read, which serves everyone who arrived before it began. At
// most one read is in flight. The zero value is ready to use.
type sharedBounds struct {
	mu      sync.Mutex
	next    *boundsRead // what arrivals wait for; nil when none waits yet
	running bool        // a reader goroutine is at work
}

type boundsRead struct {
	done   chan struct{}
	bounds store.LogBounds
	err    error
}

// boundsReadTimeout bounds one shared read: the reader goroutine ends on its
// own once no stream waits, so nothing needs to stop it.
const boundsReadTimeout = 10 * time.Second

// get returns bounds read after the call began.
func (s *sharedBounds) get(ctx context.Context, read func(context.Context) (store.LogBounds, error)) (store.LogBounds, error) {
	s.mu.Lock()
	r := s.next
	if r == nil {
		r = &boundsRead{done: make(chan struct{})}
		s.next = r
	}
	if !s.running {
		s.running = true
		go s.readAll(read)
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r.bounds, r.err
	case <-ctx.Done():
		return store.LogBounds{}, ctx.Err()
	}
}

// readAll runs reads while streams wait for one.
func (s *sharedBounds) readAll(read func(context.Context) (store.LogBounds, error)) {
	for {
		s.mu.Lock()
		r := s.next
		if r == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.next = nil // later arrivals wait for the read after this one
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), boundsReadTimeout)
		r.bounds, r.err = read(ctx)
		cancel()
		close(r.done)
	}
}
