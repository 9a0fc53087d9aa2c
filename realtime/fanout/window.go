package fanout

import (
	"sort"
	"strings"
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
// Its cost. Memory: the frames are the live path's own, so the window
// adds the events' frames and topics plus windowEventOverhead and
// windowIndexEntry per index entry each, at most maxBytes (events go from
// the oldest end first; from moves up to the last one gone). Reads: the
// window is indexed like the hub, by exact topic and by each prefix of a
// topic that ends at a slash ("a/b/c" is listed under "a/b/c", "a/" and
// "a/b/"), each list in seq order. A read (Hub.FromWindow) finds the
// resume point in each of the stream's selectors' lists by binary search
// and merges them: O(selectors x log n + selectors x events returned),
// whatever the window holds besides; a stream whose topics are rare in a
// busy window costs what it receives. Only a prefix Selector built by hand
// without its trailing slash (ParseSelector never makes one) scans the
// window, at most windowScan events per call.

// windowEventOverhead is what an event costs the window besides its frame,
// its topic and its index entries: the Event struct, its slot in the
// window and the headers of its frame and topic, rounded up.
const windowEventOverhead = 128

// windowIndexEntry is what one entry of the index costs, with its share
// of the lists' and the map's room.
const windowIndexEntry = 24

// windowScan is the most events one FromWindow call scans for a selector
// the index cannot serve, so that such a stream holds the read lock for a
// bounded time (a publisher waits for readers); it calls again.
const windowScan = 16 << 10

// window is the hub's window of the log. Appends, prune and reset happen
// under Hub.mu and window.mu; reads under window.mu (read) alone, so that
// streams reading it never wait for the hub to route a batch.
type window struct {
	mu       sync.RWMutex
	maxBytes int64 // 0: the window is off
	bytes    int64
	events   []*Event // in seq order; events[0] is the oldest held
	// index lists the events held by topic (keys without a trailing
	// slash) and by each prefix of their topic that ends at a slash (keys
	// ending in one): a topic never ends in a slash, so the two never
	// share a key.
	index map[string][]*Event
	// The window covers (from, head] of the history of generation gen
	// (Hub.View's Gen), whose newest epoch is epoch: it holds every event
	// the log has there.
	from, head int64
	gen        uint64
	epoch      string
}

// indexKeys calls f with each key ev is listed under: its topic, and each
// prefix of it that ends at a slash.
func indexKeys(topic string, f func(key string)) {
	f(topic)
	for i := 0; i < len(topic); i++ {
		if topic[i] == '/' {
			f(topic[:i+1])
		}
	}
}

// eventSize is what ev costs the window: its frame's memory (its
// capacity), its topic, windowEventOverhead and its index entries.
func eventSize(ev *Event) int64 {
	entries := int64(1 + strings.Count(ev.Topic, "/"))
	return int64(cap(ev.Frame)+len(ev.Topic)) + windowEventOverhead + entries*windowIndexEntry
}

// reset empties the window at head of a new history.
func (w *window) reset(gen uint64, epoch string, head int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.events)
	w.events = w.events[:0]
	w.index = nil
	w.bytes = 0
	w.from, w.head, w.gen, w.epoch = head, head, gen, epoch
}

// add appends the events the hub routes, those after the window's head
// (the hub's), in seq order, and drops the oldest beyond maxBytes.
func (w *window) add(events []*Event) {
	if w.maxBytes <= 0 || len(events) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.index == nil {
		w.index = make(map[string][]*Event)
	}
	for _, ev := range events {
		if ev.Seq <= w.head {
			continue // routed before: the hub skips it too
		}
		w.head, w.epoch = ev.Seq, ev.Epoch
		if ev.Seq <= w.from {
			continue // already pruned from the log (see prune)
		}
		w.events = append(w.events, ev)
		w.bytes += eventSize(ev)
		indexKeys(ev.Topic, func(key string) { w.index[key] = append(w.index[key], ev) })
	}
	w.dropLocked(func(*Event) bool { return w.bytes > w.maxBytes })
}

// dropLocked drops the oldest events while drop says so; from moves up to
// the last one dropped.
func (w *window) dropLocked(drop func(*Event) bool) {
	n := 0
	for n < len(w.events) && drop(w.events[n]) {
		ev := w.events[n]
		w.bytes -= eventSize(ev)
		w.from = ev.Seq
		// ev is the oldest event held, so the first of each of its lists.
		indexKeys(ev.Topic, func(key string) {
			list := w.index[key]
			list[0] = nil
			if len(list) == 1 {
				delete(w.index, key) // the index holds only what the window does
			} else {
				w.index[key] = list[1:]
			}
		})
		w.events[n] = nil
		n++
	}
	if n > 0 {
		// The slices' fronts move on; append reallocates each once its
		// end is reached, copying only what is held.
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
	w.dropLocked(func(ev *Event) bool { return ev.Seq <= through })
	w.from = max(w.from, through)
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
	if id.Skip > 0 || id.Snap != "" {
		// A head position ("after Seq, skip the next Skip events", or the
		// events the page's snapshot saw, which were not numbered when the
		// page read it): the log resolves it.
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
// of them (see eventSize); 0 or less keeps none. A window turned on covers
// what the hub routes from then on.
func (h *Hub) KeepWindow(maxBytes int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &h.win
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxBytes <= 0 {
		// Turned on: it covers nothing routed before, so it starts here.
		w.from, w.head, w.gen, w.epoch = h.head, h.head, h.gen, h.epoch
	}
	w.maxBytes = max(maxBytes, 0)
	w.dropLocked(func(*Event) bool { return w.bytes > w.maxBytes })
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
	return h.win.covers(id)
}

// FromWindow appends to dst the window's events after cursor that sels
// match, in seq order: at most limit events and maxBytes of frames (but
// at least one event). It returns them, and through: the seq through
// which the stream then has every matching event (the last event
// returned, or the window's head). ok is false when the window does not
// hold every event after cursor in the history of generation gen: the
// caller reads the log instead. Its cost is the index's (see above).
func (h *Hub) FromWindow(dst []*Event, sels []Selector, cursor int64, gen uint64, limit int, maxBytes int64) (events []*Event, through int64, ok bool) {
	w := &h.win
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.maxBytes <= 0 || gen != w.gen || cursor < w.from || cursor > w.head {
		return dst, cursor, false
	}
	// Each selector's list, from its first event after cursor.
	var lists [][]*Event
	for _, sel := range sels {
		if sel.Prefix && !strings.HasSuffix(sel.Topic, "/") {
			return w.scan(dst, sels, cursor, limit, maxBytes)
		}
		list := w.index[sel.Topic]
		i := sort.Search(len(list), func(i int) bool { return list[i].Seq > cursor })
		if i < len(list) {
			lists = append(lists, list[i:])
		}
	}
	n, bytes := 0, int64(0)
	for {
		// The next event: the lowest seq at the lists' fronts; a list
		// whose front is that same event (selectors that overlap) moves on
		// too, so that it goes once.
		var next *Event
		for _, l := range lists {
			if len(l) > 0 && (next == nil || l[0].Seq < next.Seq) {
				next = l[0]
			}
		}
		if next == nil {
			return dst, w.head, true
		}
		if n > 0 && (n >= limit || bytes+int64(len(next.Frame)) > maxBytes) {
			return dst, dst[len(dst)-1].Seq, true
		}
		for k, l := range lists {
			if len(l) > 0 && l[0] == next {
				lists[k] = l[1:]
			}
		}
		dst = append(dst, next)
		n++
		bytes += int64(len(next.Frame))
	}
}

// scan is FromWindow for selectors the index cannot serve: it looks at
// each event after cursor, at most windowScan of them.
func (w *window) scan(dst []*Event, sels []Selector, cursor int64, limit int, maxBytes int64) (events []*Event, through int64, ok bool) {
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
