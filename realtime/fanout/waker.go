package fanout

import (
	"context"
	"runtime"
	"sync"
)

// Waking subscribers a slice at a time.
//
// A Publish that reaches ten thousand subscribers makes ten thousand stream
// goroutines runnable at once, and Go's scheduler runs runnable goroutines
// first come, first served: a goroutine that becomes runnable meanwhile —
// the node's listener, woken by the next notification, or its reader, by
// the database's reply — queues behind all of them, and the next event is
// read only once the whole fan-out of the previous one has run. With a
// waker running (Hub.RunWaker), Publish queues the events and lists whom
// to wake; the waker wakes them WakeChunk at a time and yields between
// slices, so that the scheduler's queue holds a slice or two and the
// reader gets its turn within one. The work is the same; the streams are
// woken over the fan-out instead of all at its start.

// WakeChunk is how many subscribers the waker wakes before it yields.
const WakeChunk = 64

// waker holds the subscribers waiting to be woken.
type waker struct {
	mu      sync.Mutex
	pending []*Subscriber
	signal  chan struct{} // one waits when pending has news
}

// add lists subs to be woken, each once however many Publish calls reach
// it before the waker gets to it, and signals the waker.
func (w *waker) add(subs []*Subscriber) {
	w.mu.Lock()
	for _, sub := range subs {
		if sub.wakePending.CompareAndSwap(false, true) {
			w.pending = append(w.pending, sub)
		} // else listed: the waker wakes it after this, and it takes all that is queued
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// take returns the subscribers listed so far and starts a new list in
// spare's memory.
func (w *waker) take(spare []*Subscriber) []*Subscriber {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.pending
	w.pending = spare[:0]
	return out
}

// wake signals sub's Ready.
func wake(sub *Subscriber) {
	sub.wakePending.Store(false)
	select {
	case sub.ready <- struct{}{}:
	default: // a signal already waits
	}
}

// RunWaker wakes the subscribers Publish gives events to, WakeChunk at a
// time (see above), until ctx ends; Publish then wakes them itself again.
// Run it in a goroutine of the hub's owner, one per hub.
func (h *Hub) RunWaker(ctx context.Context) {
	w := &waker{signal: make(chan struct{}, 1)}
	h.mu.Lock()
	h.waker = w
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.waker = nil
		h.mu.Unlock()
		for _, sub := range w.take(nil) {
			wake(sub) // listed before the hub went back to waking them itself
		}
	}()
	var batch []*Subscriber
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.signal:
		}
		batch = w.take(batch)
		for i, sub := range batch {
			if i > 0 && i%WakeChunk == 0 {
				runtime.Gosched()
			}
			wake(sub)
		}
		clear(batch)
	}
}
