package fanout

import (
	"testing"
	"time"
)

// benchEvent is a typical tracked-table event on boards/42.
func benchEvent(seq int64) *Event {
	return NewEvent(EventID{Seq: seq}, "update", "boards/42", []byte(`{"op":"update","new":{"id":7,"text":"hello"}}`), time.Now())
}

// TestDeliveryToOneMoreSubscriberDoesNotAllocate: the hub hands every
// subscriber the same encoded event, so routing allocates nothing, however
// many subscribers there are.
//
// Not parallel: AllocsPerRun counts the whole process's allocations.
func TestDeliveryToOneMoreSubscriberDoesNotAllocate(t *testing.T) {
	for _, subs := range []int{1, 2, 100, 1000} {
		for _, selector := range []string{"boards/42", "boards/*"} {
			h, all := newBenchHub(subs, 128, selector)
			ev := benchEvent(1)
			events := []*Event{ev}
			seq := int64(0)
			allocs := testing.AllocsPerRun(100, func() {
				seq++
				ev.Seq = seq
				h.Publish(events)
			})
			if allocs != 0 {
				t.Errorf("%d subscribers on %s: %.1f allocations per routed event, want 0", subs, selector, allocs)
			}
			if h.Subscribers() != subs {
				t.Fatalf("%d subscribers left the live flow", subs-h.Subscribers())
			}
			// Every subscriber holds the very same frame.
			for _, s := range all {
				got := s.Take(nil)[0]
				if got != ev || &got.Frame[0] != &ev.Frame[0] {
					t.Fatal("a subscriber received a copy of the event, not the shared one")
				}
			}
		}
	}
}
