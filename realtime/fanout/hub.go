package fanout

import (
	"strings"
	"sync"
)

// Hub routes each event to the subscribers whose selectors match it. It
// never waits for a subscriber: each has a bounded buffer, and one whose
// buffer is full is dropped from the live flow and told so (Subscriber.Lagged);
// its owner catches up from the log and joins again.
type Hub struct {
	mu     sync.Mutex
	head   int64  // seq of the last event routed: the node's place in the log
	epoch  string // the epoch of the history the node's place is in
	gen    uint64 // how many times Reset moved the node to another history
	exact  map[string]map[*Subscriber]struct{}
	prefix map[*Subscriber][]string // prefix selectors, with trailing slash
	count  int
	lagged int64 // subscribers moved off the live flow, ever
}

// Subscriber is one stream's membership in the hub.
type Subscriber struct {
	selectors []Selector
	// events is the bounded buffer the hub fills and the stream drains.
	events chan *Event
	// lagged receives a signal when the hub dropped the subscriber because
	// events was full.
	lagged chan struct{}

	// Guarded by Hub.mu.
	joined bool
	queued int64 // seq of the last event put in events (or skipped as seen)
}

// NewSubscriber returns a subscriber to the topics selectors match, with a
// buffer of buffer events. It receives nothing until it joins a hub.
func NewSubscriber(selectors []Selector, buffer int) *Subscriber {
	return &Subscriber{
		selectors: selectors,
		events:    make(chan *Event, buffer),
		lagged:    make(chan struct{}, 1),
	}
}

// Selectors are the subscriber's selectors.
func (s *Subscriber) Selectors() []Selector { return s.selectors }

// Events is the subscriber's buffer: the events the hub routed to it, in
// seq order.
func (s *Subscriber) Events() <-chan *Event { return s.events }

// Lagged receives a signal when the hub dropped the subscriber from the
// live flow because its buffer was full. What is left in Events is still
// in order; the rest is in the log.
func (s *Subscriber) Lagged() <-chan struct{} { return s.lagged }

// NewHub returns a hub positioned at head: the next event it routes must
// have a greater seq.
func NewHub(head int64) *Hub {
	return &Hub{
		head:   head,
		exact:  make(map[string]map[*Subscriber]struct{}),
		prefix: make(map[*Subscriber][]string),
	}
}

// View is the hub's place in the log: the id of the last event routed, and
// the generation of its view of the log's history.
type View struct {
	Head  int64
	Epoch string
	// Gen changes each time Reset moves the hub to another history: a
	// position read under an older Gen may belong to a history the node
	// has left.
	Gen uint64
}

// ID is the view's place as an event id.
func (v View) ID() EventID { return EventID{Seq: v.Head, Epoch: v.Epoch} }

// View returns the hub's place in the log.
func (h *Hub) View() View {
	h.mu.Lock()
	defer h.mu.Unlock()
	return View{Head: h.head, Epoch: h.epoch, Gen: h.gen}
}

// Reset moves the hub to the log's current history at head, when the node
// finds that its place is no longer in the log's history (a restored backup,
// a promoted replica that lost the tail): every subscriber is dropped from
// the live flow and signalled (Lagged); the generation changes, so that
// Join refuses them until their owner has told its client to reset.
func (h *Hub) Reset(epoch string, head int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	h.head, h.epoch = head, epoch
	for _, set := range h.exact {
		for sub := range set {
			h.dropLocked(sub)
		}
	}
	for sub := range h.prefix {
		h.dropLocked(sub)
	}
}

// Head is the seq of the last event routed.
func (h *Hub) Head() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head
}

// Subscribers is the number of subscribers in the live flow.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// Lagged counts the times a subscriber's buffer was full and it was moved
// off the live flow to catch up from the log.
func (h *Hub) Lagged() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lagged
}

// Publish routes events, which must be in seq order, and advances the head.
// Events at or below the head were routed before and are skipped.
func (h *Hub) Publish(events []*Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		if ev.Seq <= h.head {
			continue
		}
		for sub := range h.exact[ev.Topic] {
			h.offer(sub, ev)
		}
		for sub, prefixes := range h.prefix {
			for _, p := range prefixes {
				if strings.HasPrefix(ev.Topic, p) {
					h.offer(sub, ev)
					break
				}
			}
		}
		h.head = ev.Seq
		h.epoch = ev.Epoch
	}
}

// offer puts ev in sub's buffer. When the buffer is full, sub has fallen
// behind the live flow: it leaves the hub (removing it while ranging over the
// hub's maps is safe) and is signalled to catch up from the log.
func (h *Hub) offer(sub *Subscriber, ev *Event) {
	if !sub.joined || ev.Seq <= sub.queued {
		return // already dropped, or matched by an earlier selector
	}
	select {
	case sub.events <- ev:
		sub.queued = ev.Seq
	default:
		h.lagged++
		h.dropLocked(sub)
	}
}

// dropLocked takes sub off the live flow and signals it to catch up.
func (h *Hub) dropLocked(sub *Subscriber) {
	if !sub.joined {
		return
	}
	h.removeLocked(sub)
	select {
	case sub.lagged <- struct{}{}:
	default:
	}
}

// Join adds sub to the live flow if the hub has routed nothing after cursor,
// the seq through which sub has everything, and its view of the log's
// history is still gen (see View). Otherwise it returns false and the
// view: with the same Gen, the caller first reads (cursor, Head] from the
// log; with another, its cursor is from a history the node has left, and
// its client must be told to reset.
func (h *Hub) Join(sub *Subscriber, cursor int64, gen uint64) (bool, View) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := View{Head: h.head, Epoch: h.epoch, Gen: h.gen}
	if h.head > cursor || gen != h.gen {
		return false, v
	}
	sub.queued = cursor
	h.addLocked(sub)
	return true, v
}

// Leave removes sub from the live flow, if it is there.
func (h *Hub) Leave(sub *Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub.joined {
		h.removeLocked(sub)
	}
}

func (h *Hub) addLocked(sub *Subscriber) {
	sub.joined = true
	h.count++
	for _, sel := range sub.selectors {
		if sel.Prefix {
			h.prefix[sub] = append(h.prefix[sub], sel.Topic)
			continue
		}
		set := h.exact[sel.Topic]
		if set == nil {
			set = make(map[*Subscriber]struct{})
			h.exact[sel.Topic] = set
		}
		set[sub] = struct{}{}
	}
}

func (h *Hub) removeLocked(sub *Subscriber) {
	sub.joined = false
	h.count--
	delete(h.prefix, sub)
	for _, sel := range sub.selectors {
		if sel.Prefix {
			continue
		}
		if set := h.exact[sel.Topic]; set != nil {
			delete(set, sub)
			if len(set) == 0 {
				delete(h.exact, sel.Topic)
			}
		}
	}
}
