package fanout_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime/fanout"
)

// The hub's index must route exactly as checking every selector of every
// subscriber would (Selector.Match), with the same buffers, overflows and
// rejoins. routeProgram runs a program of joins, leaves, publishes and
// drains, read from bytes, against the hub and against that naive model, and
// fails at the first difference.
//
// TestHubRoutesLikeCheckingEverySelector runs random programs on every test
// run; FuzzHubRoutesLikeCheckingEverySelector searches for more:
//
//	go test -run '^$' -fuzz FuzzHubRoutes -fuzztime 60s ./realtime/fanout
func TestHubRoutesLikeCheckingEverySelector(t *testing.T) {
	t.Parallel()
	var delivered, prefixDelivered, lagged int
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 11))
		program := make([]byte, 50+r.IntN(400))
		for i := range program {
			program[i] = byte(r.UintN(256))
		}
		st, ok := routeProgram(t, program)
		if !ok {
			t.Fatalf("seed %d: the hub routed otherwise than the selectors match (program %x)", seed, program)
		}
		delivered += st.delivered
		prefixDelivered += st.prefixDelivered
		lagged += st.lagged
	}
	// The programs must exercise what they check.
	if delivered < 1000 || prefixDelivered < 1000 || lagged < 100 {
		t.Fatalf("the programs delivered %d events (%d to prefix-only subscribers) and overflowed %d buffers: too few to prove anything", delivered, prefixDelivered, lagged)
	}
	t.Logf("%d events delivered (%d to prefix-only subscribers), %d overflows", delivered, prefixDelivered, lagged)
}

func FuzzHubRoutesLikeCheckingEverySelector(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x01\x05\x02\x00\x03\x07\x01\x00\x03\x01\x02\x04"))
	f.Add([]byte("boards/42/cards and users/1/inbox, prefixes and exact topics"))
	f.Fuzz(func(t *testing.T, program []byte) {
		routeProgram(t, program)
	})
}

// programReader hands out the program's bytes, then zeros.
type programReader struct{ b []byte }

func (p *programReader) done() bool { return len(p.b) == 0 }

func (p *programReader) next() int {
	if len(p.b) == 0 {
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return int(v)
}

// topic returns a string made of few, colliding segments (so that selectors
// and topics often share prefixes), now and then an empty segment or raw
// bytes: the hub must route any string as Selector.Match says, valid topic
// or not.
func (p *programReader) topic() string {
	if p.next()%16 == 15 {
		n := p.next() % 8
		s := make([]byte, 0, n)
		for range n {
			s = append(s, byte(p.next()))
		}
		return string(s)
	}
	segments := []string{"a", "b", "ab", "b.c", ""}
	s := segments[p.next()%4]
	for range p.next() % 4 {
		s += "/" + segments[p.next()%len(segments)]
	}
	return s
}

func (p *programReader) selector() fanout.Selector {
	topic := p.topic()
	switch p.next() % 4 {
	case 0:
		return fanout.Selector{Topic: topic}
	case 1: // a prefix as ParseSelector makes it, "a/b/*" -> "a/b/"
		return fanout.Selector{Topic: topic + "/", Prefix: true}
	case 2: // a prefix built by hand, without the trailing slash
		return fanout.Selector{Topic: topic, Prefix: true}
	default:
		if sel, err := fanout.ParseSelector(topic + "/*"); err == nil {
			return sel
		}
		return fanout.Selector{Topic: topic}
	}
}

// modelSubscriber is what checking every selector says a subscriber holds.
type modelSubscriber struct {
	sub      *fanout.Subscriber
	sels     []fanout.Selector
	buffer   int
	joined   bool
	queued   []int64 // seqs in its buffer, in order
	lagged   bool    // a Lagged signal is pending
	topicsOf map[int64]string
}

func (m *modelSubscriber) wants(topic string) bool {
	return slices.ContainsFunc(m.sels, func(s fanout.Selector) bool { return s.Match(topic) })
}

// routeStats counts what a program exercised: events delivered, those
// delivered to a subscriber whose exact selectors did not match them, and
// buffers that overflowed.
type routeStats struct{ delivered, prefixDelivered, lagged int }

// routeProgram reports whether the hub and the model agreed all along (it
// has already called t.Error where they did not).
func routeProgram(t *testing.T, program []byte) (routeStats, bool) {
	t.Helper()
	p := &programReader{b: program}
	h := fanout.NewHub(0)
	topics := map[int64]string{}
	subs := make([]*modelSubscriber, 1+p.next()%8)
	for i := range subs {
		m := &modelSubscriber{buffer: 1 + p.next()%4, topicsOf: topics}
		for range p.next() % 5 {
			m.sels = append(m.sels, p.selector())
		}
		if len(m.sels) > 1 && p.next()%4 == 0 {
			m.sels = append(m.sels, m.sels[0]) // the same selector twice
		}
		m.sub = fanout.NewSubscriber(m.sels, m.buffer)
		subs[i] = m
	}
	var seq, lagged int64
	var st routeStats
	ok := true
	check := func(m *modelSubscriber) {
		var got []int64
		for _, e := range m.sub.Take(nil) {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, m.queued) {
			t.Errorf("subscriber %v received %v, want %v (topics %v)", m.sels, got, m.queued, topics)
			ok = false
		}
		m.queued = nil
		var signalled bool
		select {
		case <-m.sub.Lagged():
			signalled = true
		default:
		}
		if signalled != m.lagged {
			t.Errorf("subscriber %v: lagged signalled %v, want %v", m.sels, signalled, m.lagged)
			ok = false
		}
		m.lagged = false
	}
	for !p.done() && ok {
		m := subs[p.next()%len(subs)]
		switch p.next() % 5 {
		case 0:
			if !m.joined {
				if joined, view := h.Join(m.sub, h.Head(), h.View().Gen); !joined {
					t.Fatalf("join at the head %d refused", view.Head)
				}
				m.joined = true
			}
		case 1:
			h.Leave(m.sub)
			m.joined = false
		case 2:
			check(m)
		case 3:
			var batch []*fanout.Event
			for range 1 + p.next()%3 {
				seq++
				topic := p.topic()
				topics[seq] = topic
				batch = append(batch, fanout.NewEvent(fanout.EventID{Seq: seq}, "message", topic, []byte(`{}`), time.Time{}))
				for _, m := range subs {
					switch {
					case !m.joined || !m.wants(topic):
					case len(m.queued) < m.buffer:
						m.queued = append(m.queued, seq)
						st.delivered++
						if !slices.Contains(m.sels, fanout.Selector{Topic: topic}) {
							st.prefixDelivered++
						}
					default:
						m.joined, m.lagged = false, true
						lagged++
						st.lagged++
					}
				}
			}
			h.Publish(batch)
		case 4:
			for _, m := range subs {
				check(m)
			}
		}
	}
	for _, m := range subs {
		check(m)
	}
	joined := 0
	for _, m := range subs {
		if m.joined {
			joined++
		}
	}
	if h.Subscribers() != joined || h.Lagged() != lagged || h.Head() != seq {
		t.Errorf("hub: %d subscribers, %d lagged, head %d; want %d, %d, %d", h.Subscribers(), h.Lagged(), h.Head(), joined, lagged, seq)
		ok = false
	}
	return st, ok
}
