package fanout

import (
	"sort"
	"sync"
)

// The window: the hub's copy of the last events it routed, bounded in
// bytes, so that a stream that fell behind the live flow, or a client
// resuming after a reconnect or a deploy, is served from memory instead of
// a query, when its resume point is inside it.
//
// What it holds is exactly what the hub routed: the same *Event values,
// their frames encoded once, and it knows the range it covers: every
// event the log had in (from, head] at the reader's reads, in seq order,
// with no event missing (seq numbers can have gaps; a gap is no missing
// event, since the reader reads the log in order and routes everything it
// reads). It covers (from, head] of one history only: Reset empties it,
// and a new generation (Hub.View's Gen) never finds the old one's events.
//
// Its cost: the frames are the live path's own, so memory is the events'
// frames and topics plus windowEventOverhead each, at most maxBytes (an
// event is dropped from the oldest end first; from moves up to it). A read
// (Hub.FromWindow) finds the resume point by binary search and then scans
// the window in seq order, matching each event's topic against the
// stream's selectors: O(log n + scanned x selectors), with at most
// windowScan events scanned under the read lock per call.

// windowEventOverhead is what an event costs the window besides its frame
// and topic: the Event struct, its slot in the window and the frame's and
// topic's headers, rounded up.
const windowEventOverhead = 128

// windowScan is the most events one FromWindow call looks at, so that a
// stream with rare topics resuming from far back holds the read lock for a
// bounded time (a publisher waits for readers); it calls again.
const windowScan = 16 << 10

// window is the hub's window of the log. Appends, Prune and reset happen
// under Hub.mu and window.mu; reads under window.mu (read) alone, so that
// streams reading it never wait for the hub to route a batch.
type window struct {
	mu       sync.RWMutex
	maxBytes int64 // 0: the window is off
	bytes    int64
	events   []*Event // in seq order; events[0] is the oldest held
	// The window covers (from, head] of the history of generation gen
	// (Hub.View's Gen), whose newest epoch is epoch: it holds every event
	// the log has there.
	from, head int64
	gen        uint64
	epoch      string
}

func eventSize(ev *Event) int64 {
	return int64(len(ev.Frame)+len(ev.Topic)) + windowEventOverhead
}

// reset empties the window at head of a new history.
func (w *window) reset(gen uint64, epoch string, head int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.events)
	w.events = w.events[:0]
	w.bytes = 0
	w.from, w.head, w.gen, w.epoch = head, head, gen, epoch
}

// add appends events the hub routed, in seq order, all after the window's
// head, and drops the oldest beyond maxBytes.
func (w *window) add(events []*Event) {
	if w.maxBytes <= 0 || len(events) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range events {
		w.head, w.epoch = ev.Seq, ev.Epoch
		if ev.Seq <= w.from {
			continue // already pruned from the log (see prune)
		}
		w.events = append(w.events, ev)
		w.bytes += eventSize(ev)
	}
	w.evictLocked(w.maxBytes)
}

// evictLocked drops the oldest events until the window holds at most
// limit bytes; from moves up to the last one dropped.
func (w *window) evictLocked(limit int64) {
	n := 0
	for n < len(w.events) && w.bytes > limit {
		w.bytes -= eventSize(w.events[n])
		w.from = w.events[n].Seq
		w.events[n] = nil
		n++
	}
	if n > 0 {
		// The slice's front moves on; append reallocates it once its end
		// is reached, copying only what is held.
		w.events = w.events[n:]
	}
}

// prune moves the window's start up to through: the log no longer has
// the events at or below it (pruned, or truncated), and a resume point
// below it must be reset, as the log would.
func (w *window) prune(through int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if through <= w.from {
		return
	}
	n := sort.Search(len(w.events), func(i int) bool { return w.events[i].Seq > through })
	for _, ev := range w.events[:n] {
		w.bytes -= eventSize(ev)
	}
	clear(w.events[:n])
	w.events = w.events[n:]
	w.from = through
}

// covers reports whether the window holds every event after id in the
// history of generation gen: id is in that history (its epoch is the
// window's, or that of a held event at or after its seq, or an id without
// an epoch), and from <= id.Seq <= head.
func (w *window) covers(id EventID) (gen uint64, ok bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.maxBytes <= 0 || id.Seq < w.from || id.Seq > w.head {
		return 0, false
	}
	if id.Epoch != "" && id.Epoch != w.epoch {
		// An ancestor epoch (the log forked at a restart): id is in the
		// history if the first event held at or after its seq is of its
		// epoch too.
		i := sort.Search(len(w.events), func(i int) bool { return w.events[i].Seq >= id.Seq })
		if i == len(w.events) || w.events[i].Epoch != id.Epoch {
			return 0, false
		}
	}
	return w.gen, true
}

// WindowStats is what the window holds now.
type WindowStats struct {
	Events int
	Bytes  int64
	// From and Head: the window covers the events after From through Head.
	From, Head int64
}

// Window returns what the hub's window holds now.
func (h *Hub) Window() WindowStats {
	w := &h.win
	w.mu.RLock()
	defer w.mu.RUnlock()
	return WindowStats{Events: len(w.events), Bytes: w.bytes, From: w.from, Head: w.head}
}

// KeepWindow makes the hub keep the last events it routes, up to maxBytes
// of them (frames, topics and windowEventOverhead each); 0 or less keeps
// none. Call it before the hub routes anything: the window covers what is
// routed after.
func (h *Hub) KeepWindow(maxBytes int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &h.win
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxBytes = max(maxBytes, 0)
	w.evictLocked(w.maxBytes)
}

// Pruned tells the hub that the log no longer has the events at or below
// through (pruned, or truncated): the window stops serving resume points
// below it, as the log would reset them.
func (h *Hub) Pruned(through int64) {
	h.win.prune(through)
}

// InWindow reports whether the window holds every event after id, and the
// generation of the history it holds them in: a stream resuming from id
// can start with Gen gen and be served from the window (FromWindow)
// without reading the log's bounds.
func (h *Hub) InWindow(id EventID) (gen uint64, ok bool) {
	return h.win.covers(EventID{Seq: id.Seq, Epoch: id.Epoch})
}

// FromWindow appends to dst the window's events after cursor that sels
// match, in seq order: at most limit events and maxBytes of frames (but
// at least one event), and no more than windowScan events looked at. It
// returns them, and through: the seq through which the stream then has
// every matching event (the last event looked at, or the window's head).
// ok is false when the window does not hold every event after cursor in
// the history of generation gen: the caller reads the log instead.
func (h *Hub) FromWindow(dst []*Event, sels []Selector, cursor int64, gen uint64, limit int, maxBytes int64) (events []*Event, through int64, ok bool) {
	w := &h.win
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.maxBytes <= 0 || gen != w.gen || cursor < w.from || cursor > w.head {
		return dst, cursor, false
	}
	i := sort.Search(len(w.events), func(i int) bool { return w.events[i].Seq > cursor })
	end := min(len(w.events), i+windowScan)
	through = w.head
	if end < len(w.events) {
		through = w.events[end-1].Seq
	}
	n, bytes := 0, int64(0)
	for j := i; j < end; j++ {
		ev := w.events[j]
		if !matchAny(sels, ev.Topic) {
			continue
		}
		if n > 0 && (n >= limit || bytes+int64(len(ev.Frame)) > maxBytes) {
			return dst, w.events[j-1].Seq, true
		}
		dst = append(dst, ev)
		n++
		bytes += int64(len(ev.Frame))
	}
	return dst, through, true
}
