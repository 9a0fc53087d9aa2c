package fanout

import (
	"strings"
	"sync"
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
// Events at or below the head were routed before and are skipped.
func (h *Hub) Publish(events []*Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
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

// offerAll offers ev to every subscriber in set.
func (h *Hub) offerAll(set subscriberSet, ev *Event) {
	if set.one != nil {
		h.offer(set.one, ev)
	}
	for sub := range set.many {
		h.offer(sub, ev)
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
