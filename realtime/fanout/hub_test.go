package fanout_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime/fanout"
)

func ev(seq int64, topic string) *fanout.Event {
	return fanout.NewEvent(fanout.EventID{Seq: seq, Epoch: "00000000000a"}, "message", topic, []byte(`{}`), time.Now())
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
	for _, e := range s.Take(nil) {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// The hub's contract with whoever runs a stream: join only once the log is
// read up to the head; matching events arrive once each, in order; a full
// buffer drops the subscriber from the live flow and says so, and it joins
// again from where it is.
func TestHubRoutesInOrderAndDropsWhoFallsBehind(t *testing.T) {
	t.Parallel()
	h := fanout.NewHub(10)
	s := sub(t, 3, "boards/*", "boards/1") // two selectors matching one topic: still once
	if ok, v := h.Join(s, 5, 0); ok || v.Head != 10 {
		t.Fatalf("join behind the head: %v, %d; want refused with head 10", ok, v.Head)
	}
	if ok, _ := h.Join(s, 10, 0); !ok || h.Subscribers() != 1 {
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
	if ok, v := h.Join(s, 16, 0); ok || v.Head != 17 {
		t.Fatalf("rejoin at 16: %v, %d; want refused with head 17", ok, v.Head)
	}
	if ok, _ := h.Join(s, 17, 0); !ok {
		t.Fatal("rejoin at the head refused")
	}
	h.Leave(s)
	h.Publish([]*fanout.Event{ev(18, "boards/1")})
	if got := received(s); len(got) != 0 || h.Subscribers() != 0 {
		t.Fatalf("after Leave: received %v, %d subscribers", got, h.Subscribers())
	}
}

// A hub moved to another history (Reset) drops every subscriber from the
// live flow and refuses them until they come with the new generation: a
// subscriber whose cursor is from the history the node left never joins the
// new one as if nothing happened.
func TestHubResetDropsEverySubscriberAndRefusesTheOldGeneration(t *testing.T) {
	t.Parallel()
	h := fanout.NewHub(20)
	old := h.View()
	a, b := sub(t, 8, "boards/1"), sub(t, 8, "boards/*")
	for _, s := range []*fanout.Subscriber{a, b} {
		if ok, _ := h.Join(s, 20, old.Gen); !ok {
			t.Fatal("join at the head refused")
		}
	}
	h.Reset("00000000000b", 10)
	for _, s := range []*fanout.Subscriber{a, b} {
		select {
		case <-s.Lagged():
		default:
			t.Fatal("a subscriber was not signalled by Reset")
		}
	}
	if h.Subscribers() != 0 {
		t.Fatalf("%d subscribers after Reset, want 0", h.Subscribers())
	}
	v := h.View()
	if v.Head != 10 || v.Epoch != "00000000000b" || v.Gen == old.Gen {
		t.Fatalf("view after Reset %+v (before %+v)", v, old)
	}
	// Its cursor (20) is above the new head: under the old generation it
	// would join and skip 11-20 of the new history.
	if ok, _ := h.Join(a, 20, old.Gen); ok {
		t.Fatal("joined with the old generation")
	}
	if ok, _ := h.Join(a, 10, v.Gen); !ok {
		t.Fatal("join at the new head with the new generation refused")
	}
	h.Publish([]*fanout.Event{ev(11, "boards/1")})
	if got := received(a); len(got) != 1 || got[0] != 11 {
		t.Fatalf("after rejoining: received %v, want [11]", got)
	}
	if id := h.View().ID().String(); id != "11-00000000000a" {
		t.Fatalf("view id %q, want the last event's", id)
	}
}

// A stream wakes once per batch of events, not once per event: the hub
// signals a subscriber once per Publish call, however many of the call's
// events it queued, and Take hands them all over in order.
func TestHubWakesOncePerBatch(t *testing.T) {
	t.Parallel()
	h := fanout.NewHub(0)
	s := sub(t, 16, "a", "a/*")
	if ok, _ := h.Join(s, 0, 0); !ok {
		t.Fatal("join refused")
	}
	var batch []*fanout.Event
	for seq := int64(1); seq <= 5; seq++ {
		batch = append(batch, &fanout.Event{Seq: seq, Topic: "a/1"})
	}
	h.Publish(batch)
	wakeups := 0
	for {
		select {
		case <-s.Ready():
			wakeups++
			continue
		default:
		}
		break
	}
	if wakeups != 1 {
		t.Fatalf("%d wake-ups for one batch of 5 events, want 1", wakeups)
	}
	if got := received(s); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("took %v, want 1..5", got)
	}
	h.Publish([]*fanout.Event{{Seq: 6, Topic: "b"}}) // matches nothing of s: no wake-up
	select {
	case <-s.Ready():
		t.Fatal("woken by a batch with nothing for it")
	default:
	}
}

// With a waker running (Hub.RunWaker), every subscriber a Publish reaches
// is still woken and takes its events, however many there are (more than
// one slice of WakeChunk); once the waker stops, Publish wakes them itself.
func TestHubWakerWakesEverySubscriber(t *testing.T) {
	t.Parallel()
	h := fanout.NewHub(0)
	subs := make([]*fanout.Subscriber, 5*fanout.WakeChunk+3)
	for i := range subs {
		subs[i] = sub(t, 16, "a")
		if ok, _ := h.Join(subs[i], 0, 0); !ok {
			t.Fatal("join refused")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.RunWaker(ctx)
	}()
	// Whether a Publish comes before the waker is in place or after, each
	// subscriber is woken and takes what was queued for it.
	for seq := int64(1); seq <= 3; seq++ {
		h.Publish([]*fanout.Event{ev(seq, "a")})
		for i, s := range subs {
			select {
			case <-s.Ready():
			case <-time.After(time.Minute):
				t.Fatalf("subscriber %d never woken for event %d", i, seq)
			}
			if got := received(s); !slices.Equal(got, []int64{seq}) {
				t.Fatalf("subscriber %d took %v, want [%d]", i, got, seq)
			}
		}
	}
	cancel()
	<-done
	h.Publish([]*fanout.Event{ev(4, "a")})
	for i, s := range subs {
		select {
		case <-s.Ready():
		default:
			t.Fatalf("after the waker stopped, subscriber %d was not woken by Publish", i)
		}
		if got := received(s); !slices.Equal(got, []int64{4}) {
			t.Fatalf("subscriber %d took %v, want [4]", i, got)
		}
	}
}
