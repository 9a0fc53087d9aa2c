package fanout

import (
	"strings"
	"sync"
	"sync/atomic"
)

// The hub's index: what it costs to route an event depends on the event's
// topic and on the subscribers it reaches, never on how many subscribers
// hold selectors that do not match it.
//
//   - exact selectors: a map from the topic to its subscribers;
//   - prefix selectors (their Topic ends in a slash, "boards/"): a map from
//     the prefix to its subscribers, looked up at each slash of the event's
//     topic: "a/b/c" visits "a/" and "a/b/" only, whatever else is held;
//   - a prefix Selector built by hand without the trailing slash (ParseSelector
//     never makes one) cannot be found at a slash: it is kept apart and
//     checked on every event, as before the index, so that the hub routes
//     exactly as Selector.Match says for any selector.
//
// A subscriber matched by several selectors is offered the event once per
// selector; offer keeps only the first (Subscriber.queued).

// Hub routes each event to the subscribers whose selectors match it. It
// never waits for a subscriber: each has a bounded buffer, and one whose
// buffer is full is dropped from the live flow and told so (Subscriber.Lagged);
// its owner catches up from the log and joins again.
type Hub struct {
	mu     sync.Mutex
	head   int64           // seq of the last event routed: the node's place in the log
	epoch  string          // the epoch of the history the node's place is in
	gen    uint64          // how many times Reset moved the node to another history
	exact  subscriberIndex // by exact topic
	prefix subscriberIndex // by prefix selector, with its trailing slash
	loose  subscriberIndex // by prefix selector without a trailing slash
	count  int
	lagged int64 // subscribers moved off the live flow, ever
	// touched are the subscribers given events by the Publish call under
	// way: each is woken once, at its end, however many events it got.
	touched []*Subscriber
	// win keeps the last events routed (see window.go); off until
	// KeepWindow.
	win window
	// waker, while RunWaker runs, wakes the subscribers Publish gave events
	// to (see waker.go); nil: Publish wakes them itself.
	waker *waker
}

// Subscriber is one stream's membership in the hub.
//
// The hub hands events over in batches: it appends each event of a Publish
// call to the subscriber's queue and signals Ready once, when the call
// ends; the stream takes everything queued with Take. A stream that writes
// a batch of events so wakes once for it, not once per event.
type Subscriber struct {
	selectors []Selector
	buffer    int // the most events queue may hold
	// ready receives a signal (at most one waits) when the hub has queued
	// events since the stream last took them.
	ready chan struct{}
	// lagged receives a signal when the hub dropped the subscriber because
	// its queue was full.
	lagged chan struct{}

	// mu guards queue: the hub appends under Hub.mu and mu, the stream
	// takes under mu alone, so that a stream taking its events never waits
	// for the hub to route a whole batch to everyone else.
	mu sync.Mutex
	// queue is the bounded buffer the hub fills and the stream empties, in
	// seq order. Made with its full capacity on the first event, so that
	// an idle stream holds none of it and routing never grows it.
	queue []*Event

	// Guarded by Hub.mu.
	joined  bool
	touched bool  // in Hub.touched: to be woken when the Publish call ends
	queued  int64 // seq of the last event put in queue (or skipped as seen)

	// wakePending: listed with the hub's waker, not woken yet.
	wakePending atomic.Bool
}

// NewSubscriber returns a subscriber to the topics selectors match, with a
// buffer of buffer events. It receives nothing until it joins a hub.
func NewSubscriber(selectors []Selector, buffer int) *Subscriber {
	return &Subscriber{
		selectors: selectors,
		buffer:    max(buffer, 1),
		ready:     make(chan struct{}, 1),
		lagged:    make(chan struct{}, 1),
	}
}

// Selectors are the subscriber's selectors.
func (s *Subscriber) Selectors() []Selector { return s.selectors }

// Ready receives a signal when the hub has queued events for the
// subscriber: Take them. A signal may find nothing to take (the events
// went with an earlier Take).
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Take appends every event queued for the subscriber to dst, in seq order,
// empties the queue and returns dst.
func (s *Subscriber) Take(dst []*Event) []*Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.queue...)
	clear(s.queue) // the events' memory goes with the stream's write
	s.queue = s.queue[:0]
	return dst
}

// Queued is how many events wait to be taken.
func (s *Subscriber) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Lagged receives a signal when the hub dropped the subscriber from the
// live flow because its queue was full. What is left to Take is still in
// order; the rest is in the log.
func (s *Subscriber) Lagged() <-chan struct{} { return s.lagged }

// NewHub returns a hub positioned at head: the next event it routes must
// have a greater seq.
func NewHub(head int64) *Hub {
	return &Hub{
		head:   head,
		exact:  make(subscriberIndex),
		prefix: make(subscriberIndex),
		loose:  make(subscriberIndex),
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
	// The window's events are of the history the node left: none may
	// serve a stream again.
	h.win.reset(h.gen, epoch, head)
	// Collected first: dropping a subscriber changes the indexes.
	var joined []*Subscriber
	for _, x := range []subscriberIndex{h.exact, h.prefix, h.loose} {
		for _, set := range x {
			if set.one != nil {
				joined = append(joined, set.one)
			}
			for sub := range set.many {
				joined = append(joined, sub)
			}
		}
	}
	for _, sub := range joined {
		h.dropLocked(sub) // once: a second time finds it gone
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
// Events at or below the head were routed before and are skipped. Each
// subscriber given events is woken once, when all of them are queued.
func (h *Hub) Publish(events []*Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.wakeTouched()
	// Kept in the window under the same lock, so that the window's head is
	// always the hub's (it skips what the hub skips).
	h.win.add(events)
	for _, ev := range events {
		if ev.Seq <= h.head {
			continue
		}
		h.offerAll(h.exact[ev.Topic], ev)
		if len(h.prefix) > 0 {
			// Every prefix of the topic that ends at a slash, shortest first.
			// topic[:i+1] is a slice of the topic: the lookup allocates nothing.
			topic := ev.Topic
			for i := 0; i < len(topic); i++ {
				if topic[i] != '/' {
					continue
				}
				h.offerAll(h.prefix[topic[:i+1]], ev)
			}
		}
		for p, set := range h.loose {
			if strings.HasPrefix(ev.Topic, p) {
				h.offerAll(set, ev)
			}
		}
		h.head = ev.Seq
		h.epoch = ev.Epoch
	}
}

// wakeTouched signals Ready to each subscriber given events by this
// Publish call.
func (h *Hub) wakeTouched() {
	for _, sub := range h.touched {
		sub.touched = false
		if h.waker == nil {
			wake(sub)
		}
	}
	if h.waker != nil && len(h.touched) > 0 {
		h.waker.add(h.touched)
	}
	clear(h.touched)
	h.touched = h.touched[:0]
}

// offerAll offers ev to every subscriber in set.
func (h *Hub) offerAll(set subscriberSet, ev *Event) {
	if set.one != nil {
		h.offer(set.one, ev)
	}
	for sub := range set.many {
		h.offer(sub, ev)
	}
}

// offer puts ev in sub's queue. When the queue is full, sub has fallen
// behind the live flow: it leaves the hub (removing it while ranging over the
// hub's maps is safe) and is signalled to catch up from the log.
func (h *Hub) offer(sub *Subscriber, ev *Event) {
	if !sub.joined || ev.Seq <= sub.queued {
		return // already dropped, or matched by an earlier selector
	}
	sub.mu.Lock()
	full := len(sub.queue) >= sub.buffer
	if !full {
		if sub.queue == nil {
			sub.queue = make([]*Event, 0, sub.buffer)
		}
		sub.queue = append(sub.queue, ev)
	}
	sub.mu.Unlock()
	if full {
		h.lagged++
		h.dropLocked(sub)
		return
	}
	sub.queued = ev.Seq
	if !sub.touched {
		sub.touched = true
		h.touched = append(h.touched, sub)
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
		h.indexOf(sel).add(sel.Topic, sub)
	}
}

func (h *Hub) removeLocked(sub *Subscriber) {
	sub.joined = false
	h.count--
	for _, sel := range sub.selectors {
		h.indexOf(sel).remove(sel.Topic, sub)
	}
}

// indexOf is the index that holds sel.
func (h *Hub) indexOf(sel Selector) subscriberIndex {
	switch {
	case !sel.Prefix:
		return h.exact
	case strings.HasSuffix(sel.Topic, "/"):
		return h.prefix
	default:
		return h.loose
	}
}

// subscriberIndex maps a selector's Topic to the subscribers holding it.
type subscriberIndex map[string]subscriberSet

// subscriberSet is the subscribers holding one selector. Most selectors of
// a node with many streams are held by one stream (users/42/inbox), so one
// subscriber is kept without a map of its own: a map per selector would
// cost four times the memory.
type subscriberSet struct {
	one  *Subscriber              // the only subscriber, while many is nil
	many map[*Subscriber]struct{} // every subscriber, once there were two
}

func (x subscriberIndex) add(key string, sub *Subscriber) {
	set := x[key]
	switch {
	case set.many != nil:
		set.many[sub] = struct{}{}
	case set.one == nil || set.one == sub:
		set.one = sub
	default:
		set.many = map[*Subscriber]struct{}{set.one: {}, sub: {}}
		set.one = nil
	}
	x[key] = set
}

// remove drops sub from key's set, and the set once it is empty, so that the
// index holds only what joined subscribers select. Removing what is not
// there (a selector listed twice) does nothing. Removing while offerAll
// ranges over the set is safe.
func (x subscriberIndex) remove(key string, sub *Subscriber) {
	set, ok := x[key]
	switch {
	case !ok:
	case set.many != nil:
		delete(set.many, sub)
		if len(set.many) == 0 {
			delete(x, key)
		}
	case set.one == sub:
		delete(x, key)
	}
}
