package fanout

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

const testEpoch = "0123456789ab"

// routed publishes events with the given seqs (gaps allowed) on topics
// chosen by topic, and returns them.
func routed(h *Hub, seqs []int64, topic func(seq int64) string) []*Event {
	evs := make([]*Event, len(seqs))
	for i, seq := range seqs {
		evs[i] = NewEvent(EventID{Seq: seq, Epoch: testEpoch}, "message", topic(seq), []byte(`{"n":1}`), time.Now())
	}
	h.Publish(evs)
	return evs
}

func seqsOf(evs []*Event) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func windowHub(maxBytes int64, head int64) *Hub {
	h := NewHub(head)
	h.KeepWindow(maxBytes)
	h.Reset(testEpoch, head)
	return h
}

// readAll reads everything after cursor from the window, batch by batch,
// as a stream does.
func readAll(t *testing.T, h *Hub, sels []Selector, cursor int64, gen uint64, limit int, maxBytes int64) []int64 {
	t.Helper()
	var got []int64
	for cursor < h.Head() {
		evs, through, ok := h.FromWindow(nil, sels, cursor, gen, limit, maxBytes)
		if !ok {
			t.Fatalf("window does not cover %d", cursor)
		}
		if through <= cursor {
			t.Fatalf("no progress from %d", cursor)
		}
		if len(evs) > limit {
			t.Fatalf("%d events in a batch of at most %d", len(evs), limit)
		}
		for _, ev := range evs {
			if ev.Seq <= cursor || ev.Seq > through {
				t.Fatalf("event %d outside (%d, %d]", ev.Seq, cursor, through)
			}
		}
		got = append(got, seqsOf(evs)...)
		cursor = through
	}
	return got
}

func TestWindowServesEveryMatchingEventAfterTheCursorOnceInOrder(t *testing.T) {
	h := windowHub(1<<20, 100)
	gen := h.View().Gen
	// Seqs with gaps, as the log has them; three topics.
	var seqs []int64
	for s := int64(101); s <= 400; s += 1 + s%3 {
		seqs = append(seqs, s)
	}
	topic := func(seq int64) string { return fmt.Sprintf("t/%d", seq%3) }
	routed(h, seqs, topic)

	for _, tc := range []struct {
		name   string
		sels   []Selector
		cursor int64
		limit  int
	}{
		{"everything from the start", []Selector{{Topic: "t/", Prefix: true}}, 100, 1000},
		{"in small batches", []Selector{{Topic: "t/", Prefix: true}}, 100, 7},
		{"one topic from a seq in a gap", []Selector{{Topic: "t/1"}}, 104, 5},
		{"two selectors matching the same events", []Selector{{Topic: "t/2"}, {Topic: "t/", Prefix: true}}, 250, 3},
		{"nothing matches", []Selector{{Topic: "u/1"}}, 100, 10},
		{"at the head", []Selector{{Topic: "t/1"}}, h.Head(), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []int64
			for _, s := range seqs {
				if s > tc.cursor && matchAny(tc.sels, topic(s)) {
					want = append(want, s)
				}
			}
			got := readAll(t, h, tc.sels, tc.cursor, gen, tc.limit, 1<<20)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestWindowBatchesAreBoundedInBytes(t *testing.T) {
	h := windowHub(1<<20, 0)
	evs := routed(h, []int64{1, 2, 3, 4, 5}, func(int64) string { return "a" })
	frame := int64(len(evs[0].Frame))
	got, through, ok := h.FromWindow(nil, []Selector{{Topic: "a"}}, 0, h.View().Gen, 100, 2*frame)
	if !ok || !slices.Equal(seqsOf(got), []int64{1, 2}) || through != 2 {
		t.Fatalf("got %v through %d (ok %v), want [1 2] through 2", seqsOf(got), through, ok)
	}
	// One event larger than the bound still goes, alone.
	got, through, _ = h.FromWindow(nil, []Selector{{Topic: "a"}}, 2, h.View().Gen, 100, 1)
	if !slices.Equal(seqsOf(got), []int64{3}) || through != 3 {
		t.Fatalf("got %v through %d, want [3] through 3", seqsOf(got), through)
	}
}

func TestWindowDropsItsOldestEventsBeyondItsBytes(t *testing.T) {
	// Three-digit seqs: every event the same size.
	one := eventSize(NewEvent(EventID{Seq: 101, Epoch: testEpoch}, "message", "a", []byte(`{"n":1}`), time.Now()))
	h := windowHub(10*one, 100)
	var seqs []int64
	for s := int64(101); s <= 125; s++ {
		seqs = append(seqs, s)
	}
	routed(h, seqs, func(int64) string { return "a" })
	st := h.Window()
	if st.Events != 10 || st.From != 115 || st.Head != 125 || st.Bytes > 10*one {
		t.Fatalf("window %+v, want 10 events after 115 through 125 in at most %d bytes", st, 10*one)
	}
	gen := h.View().Gen
	if _, _, ok := h.FromWindow(nil, []Selector{{Topic: "a"}}, 114, gen, 10, 1<<20); ok {
		t.Fatal("a cursor before the window's start was served: event 115 is gone from it")
	}
	if _, ok := h.InWindow(EventID{Seq: 114, Epoch: testEpoch}); ok {
		t.Fatal("InWindow holds a cursor before the window's start")
	}
	if got := readAll(t, h, []Selector{{Topic: "a"}}, 115, gen, 100, 1<<20); !slices.Equal(got, seqs[15:]) {
		t.Fatalf("from 115: got %v", got)
	}
}

func TestWindowIsEmptiedByAResetAndTrimmedByPruning(t *testing.T) {
	h := windowHub(1<<20, 0)
	routed(h, []int64{1, 2, 3, 4, 5, 6}, func(int64) string { return "a" })
	old := h.View().Gen
	sels := []Selector{{Topic: "a"}}

	h.Pruned(3)
	if _, _, ok := h.FromWindow(nil, sels, 2, old, 10, 1<<20); ok {
		t.Fatal("a cursor the log has pruned was served")
	}
	if got := readAll(t, h, sels, 3, old, 10, 1<<20); !slices.Equal(got, []int64{4, 5, 6}) {
		t.Fatalf("from the pruned point: got %v", got)
	}
	if st := h.Window(); st.Events != 3 || st.From != 3 {
		t.Fatalf("after pruning through 3: %+v", st)
	}

	// A restored backup: the log's history is another, its head 4.
	h.Reset("ba0000000000", 4)
	gen, ok := h.InWindow(EventID{Seq: 4, Epoch: "ba0000000000"})
	if !ok || gen == old {
		t.Fatalf("the new history's head: gen %d ok %v (old gen %d)", gen, ok, old)
	}
	for _, c := range []EventID{{Seq: 5, Epoch: testEpoch}, {Seq: 3, Epoch: testEpoch}, {Seq: 3, Epoch: "ba0000000000"}} {
		if _, ok := h.InWindow(c); ok {
			t.Errorf("%s is in the window after the reset", c)
		}
	}
	if _, _, ok := h.FromWindow(nil, sels, 4, old, 10, 1<<20); ok {
		t.Fatal("a stream of the old generation was served from the new window")
	}
	evs := []*Event{NewEvent(EventID{Seq: 5, Epoch: "ba0000000000"}, "message", "a", nil, time.Now())}
	h.Publish(evs)
	got, _, ok := h.FromWindow(nil, sels, 4, gen, 10, 1<<20)
	if !ok || !slices.Equal(seqsOf(got), []int64{5}) || got[0].Epoch != "ba0000000000" {
		t.Fatalf("the new history's event: %v ok %v", seqsOf(got), ok)
	}
}

func TestInWindowAcceptsAnAncestorEpochOnlyWhereTheWindowHasIt(t *testing.T) {
	h := windowHub(1<<20, 0)
	h.Publish([]*Event{
		NewEvent(EventID{Seq: 1, Epoch: "aaaaaaaaaaaa"}, "m", "a", nil, time.Now()),
		NewEvent(EventID{Seq: 2, Epoch: "aaaaaaaaaaaa"}, "m", "a", nil, time.Now()),
		// A restart forked a new epoch after 2.
		NewEvent(EventID{Seq: 5, Epoch: "bbbbbbbbbbbb"}, "m", "a", nil, time.Now()),
	})
	for _, tc := range []struct {
		id EventID
		ok bool
	}{
		{EventID{Seq: 1, Epoch: "aaaaaaaaaaaa"}, true},
		{EventID{Seq: 2, Epoch: "aaaaaaaaaaaa"}, true},
		{EventID{Seq: 3, Epoch: "aaaaaaaaaaaa"}, false}, // not in the window's history: the log decides
		{EventID{Seq: 5, Epoch: "bbbbbbbbbbbb"}, true},
		{EventID{Seq: 2, Epoch: ""}, true},
		{EventID{Seq: 6, Epoch: "bbbbbbbbbbbb"}, false}, // after the head
		{EventID{Seq: 2, Epoch: "cccccccccccc"}, false},
	} {
		if _, ok := h.InWindow(tc.id); ok != tc.ok {
			t.Errorf("InWindow(%s) = %v, want %v", tc.id, ok, tc.ok)
		}
	}
}

func TestWindowOffServesNothing(t *testing.T) {
	h := windowHub(0, 0)
	routed(h, []int64{1, 2}, func(int64) string { return "a" })
	if _, ok := h.InWindow(EventID{Seq: 0}); ok {
		t.Fatal("InWindow with the window off")
	}
	if _, _, ok := h.FromWindow(nil, []Selector{{Topic: "a"}}, 0, h.View().Gen, 10, 1<<20); ok {
		t.Fatal("FromWindow with the window off")
	}
	if st := h.Window(); st.Events != 0 || st.Bytes != 0 {
		t.Fatalf("window off holds %+v", st)
	}
}

func TestWindowFindsRareTopicsByItsIndexAndBoundsScans(t *testing.T) {
	h := windowHub(64<<20, 0)
	seqs := make([]int64, windowScan+100)
	for i := range seqs {
		seqs[i] = int64(i + 1)
	}
	routed(h, seqs, func(seq int64) string {
		if seq == int64(len(seqs)) {
			return "rare"
		}
		return "busy"
	})
	// The index finds the one event at once.
	got, through, ok := h.FromWindow(nil, []Selector{{Topic: "rare"}}, 0, h.View().Gen, 10, 1<<20)
	if !ok || !slices.Equal(seqsOf(got), seqs[len(seqs)-1:]) || through != h.Head() {
		t.Fatalf("by the index: %v through %d ok %v", seqsOf(got), through, ok)
	}
	// A prefix selector built by hand without its slash scans, a bounded
	// stretch per call.
	sels := []Selector{{Topic: "rar", Prefix: true}}
	got, through, ok = h.FromWindow(nil, sels, 0, h.View().Gen, 10, 1<<20)
	if !ok || len(got) != 0 || through != windowScan {
		t.Fatalf("first call: %v through %d ok %v, want nothing through %d", seqsOf(got), through, ok, windowScan)
	}
	if got := readAll(t, h, sels, through, h.View().Gen, 10, 1<<20); !slices.Equal(got, seqs[len(seqs)-1:]) {
		t.Fatalf("then: %v", got)
	}
}

// The index agrees with a plain scan of everything routed, through
// evictions and prunes, for exact and prefix selectors, overlapping ones
// included; and it holds nothing the window does not.
func TestWindowIndexAgreesWithTheLog(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	topics := []string{"a", "a/b", "a/b/c", "a/x", "z/1", "z/2/3"}
	selectorSets := [][]Selector{
		{{Topic: "a"}},
		{{Topic: "a/", Prefix: true}},
		{{Topic: "a/b/", Prefix: true}, {Topic: "a/b/c"}, {Topic: "z/1"}},
		{{Topic: "z/", Prefix: true}, {Topic: "a/x"}},
		{{Topic: "none"}},
	}
	h := windowHub(40<<10, 0)
	var all []*Event
	seq := int64(0)
	for round := range 200 {
		var batch []*Event
		for range rng.IntN(20) {
			seq += 1 + rng.Int64N(3)
			batch = append(batch, NewEvent(EventID{Seq: seq, Epoch: testEpoch}, "m", topics[rng.IntN(len(topics))], []byte(`{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`), time.Now()))
		}
		h.Publish(batch)
		all = append(all, batch...)
		if round%37 == 36 {
			h.Pruned(h.Window().From + 5)
		}
		st := h.Window()
		for _, sels := range selectorSets {
			cursor := st.From + rng.Int64N(st.Head-st.From+1)
			var want []int64
			for _, ev := range all {
				if ev.Seq > cursor && matchAny(sels, ev.Topic) {
					want = append(want, ev.Seq)
				}
			}
			if got := readAll(t, h, sels, cursor, h.View().Gen, 1+rng.IntN(10), 1<<20); !slices.Equal(got, want) {
				t.Fatalf("round %d, %v from %d: got %v\nwant %v", round, sels, cursor, got, want)
			}
		}
		entries := 0
		for _, list := range h.win.index {
			entries += len(list)
			if len(list) == 0 {
				t.Fatalf("round %d: an empty index list is kept", round)
			}
			if list[0].Seq <= st.From {
				t.Fatalf("round %d: an index list holds event %d, the window starts after %d", round, list[0].Seq, st.From)
			}
		}
		wantEntries := 0
		for _, ev := range h.win.events {
			wantEntries += 1 + strings.Count(ev.Topic, "/")
		}
		if entries != wantEntries {
			t.Fatalf("round %d: index has %d entries for %d events' %d", round, entries, st.Events, wantEntries)
		}
	}
	if h.Window().From == 0 {
		t.Fatal("the window never dropped an event: the test tested no eviction")
	}
}

// Events handed to the hub again (at or below its head) are skipped by the
// window as by routing: each is held once.
func TestWindowHoldsEventsRoutedAgainOnce(t *testing.T) {
	h := windowHub(1<<20, 0)
	topic := func(int64) string { return "a" }
	routed(h, []int64{1, 2, 3}, topic)
	routed(h, []int64{2, 3, 4}, topic)
	routed(h, []int64{4}, topic)
	got := readAll(t, h, []Selector{{Topic: "a"}}, 0, h.View().Gen, 100, 1<<20)
	if !slices.Equal(got, []int64{1, 2, 3, 4}) || h.Window().Events != 4 {
		t.Fatalf("window holds %v (%d events), want [1 2 3 4]", got, h.Window().Events)
	}
}

// A window turned on after the hub routed events covers only what it
// routes from then on: it never claims the events before.
func TestWindowTurnedOnLateCoversOnlyWhatFollows(t *testing.T) {
	h := NewHub(0)
	h.Reset(testEpoch, 0)
	routed(h, []int64{1, 2, 3}, func(int64) string { return "a" })
	h.KeepWindow(1 << 20)
	if _, ok := h.InWindow(EventID{Seq: 1, Epoch: testEpoch}); ok {
		t.Fatal("the window claims events routed before it was on")
	}
	routed(h, []int64{4, 5}, func(int64) string { return "a" })
	if got := readAll(t, h, []Selector{{Topic: "a"}}, 3, h.View().Gen, 10, 1<<20); !slices.Equal(got, []int64{4, 5}) {
		t.Fatalf("from 3: %v", got)
	}
}
