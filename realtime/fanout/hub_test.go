package fanout_test

import (
	"testing"
	"time"

	"github.com/livepg/livepg/realtime/fanout"
)

func ev(seq int64, topic string) *fanout.Event {
	return fanout.NewEvent(seq, "message", topic, []byte(`{}`), time.Now())
}

func sub(t *testing.T, buffer int, selectors ...string) *fanout.Subscriber {
	t.Helper()
	var sels []fanout.Selector
	for _, s := range selectors {
		sel, err := fanout.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		sels = append(sels, sel)
	}
	return fanout.NewSubscriber(sels, buffer)
}

func received(s *fanout.Subscriber) []int64 {
	var seqs []int64
	for {
		select {
		case e := <-s.Events():
			seqs = append(seqs, e.Seq)
		default:
			return seqs
		}
	}
}

// The hub's contract with whoever runs a stream: join only once the log is
// read up to the head; matching events arrive once each, in order; a full
// buffer drops the subscriber from the live flow and says so, and it joins
// again from where it is.
func TestHubRoutesInOrderAndDropsWhoFallsBehind(t *testing.T) {
	t.Parallel()
	h := fanout.NewHub(10)
	s := sub(t, 3, "boards/*", "boards/1") // two selectors matching one topic: still once
	if ok, head := h.Join(s, 5); ok || head != 10 {
		t.Fatalf("join behind the head: %v, %d; want refused with head 10", ok, head)
	}
	if ok, _ := h.Join(s, 10); !ok || h.Subscribers() != 1 {
		t.Fatal("join at the head refused")
	}
	h.Publish([]*fanout.Event{ev(9, "boards/1"), ev(11, "boards/1"), ev(12, "users/1"), ev(13, "boards/2/cards")})
	if got := received(s); len(got) != 2 || got[0] != 11 || got[1] != 13 {
		t.Fatalf("received %v, want [11 13] (9 is behind the head, users/1 not selected)", got)
	}
	if h.Head() != 13 {
		t.Fatalf("head %d, want 13", h.Head())
	}

	h.Publish([]*fanout.Event{ev(14, "boards/1"), ev(15, "boards/1"), ev(16, "boards/1"), ev(17, "boards/1")})
	select {
	case <-s.Lagged():
	default:
		t.Fatal("a full buffer was not signalled")
	}
	if h.Subscribers() != 0 || h.Lagged() != 1 {
		t.Fatalf("after overflow: %d subscribers, %d lagged; want 0, 1", h.Subscribers(), h.Lagged())
	}
	if got := received(s); len(got) != 3 || got[2] != 16 {
		t.Fatalf("buffer held %v, want [14 15 16]", got)
	}
	// Caught up through 16 from the log, it may not join: 17 was routed.
	if ok, head := h.Join(s, 16); ok || head != 17 {
		t.Fatalf("rejoin at 16: %v, %d; want refused with head 17", ok, head)
	}
	if ok, _ := h.Join(s, 17); !ok {
		t.Fatal("rejoin at the head refused")
	}
	h.Leave(s)
	h.Publish([]*fanout.Event{ev(18, "boards/1")})
	if got := received(s); len(got) != 0 || h.Subscribers() != 0 {
		t.Fatalf("after Leave: received %v, %d subscribers", got, h.Subscribers())
	}
}
