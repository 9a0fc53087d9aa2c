package fanout

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkFromWindow: the cost of serving a resume from a full window
// (200,000 events over 5,000 topics "t/<n>/x", a busy topic "hot" with
// one event in ten), by the stream's selectors: an op reads every event
// after the point, in batches of 1,000, as a stream does.
func BenchmarkFromWindow(b *testing.B) {
	const total, topics = 200_000, 5000
	h := NewHub(0)
	h.KeepWindow(1 << 30)
	h.Reset(testEpoch, 0)
	evs := make([]*Event, 0, total)
	for i := int64(1); i <= total; i++ {
		topic := fmt.Sprintf("t/%d/x", i%topics)
		if i%10 == 0 {
			topic = "hot"
		}
		evs = append(evs, NewEvent(EventID{Seq: i, Epoch: testEpoch}, "message", topic, []byte(`{"n":1}`), time.Now()))
	}
	h.Publish(evs)
	st := h.Window()
	if st.Events != total {
		b.Fatalf("window holds %d events", st.Events)
	}
	gen := h.View().Gen
	for _, bc := range []struct {
		name   string
		sels   []Selector
		cursor int64
	}{
		{"hot topic, 1000 events back", []Selector{{Topic: "hot"}}, total - 10_000},
		{"rare topic, from the window's start", []Selector{{Topic: "t/7/x"}}, 0},
		{"prefix of one topic, from the window's start", []Selector{{Topic: "t/7/", Prefix: true}}, 0},
		{"prefix of every topic, 1000 events back", []Selector{{Topic: "t/", Prefix: true}}, total - 1111},
		{"32 empty selectors, from the window's start", emptySelectors(32), 0},
		{"hand-built prefix (scan), 1000 events back", []Selector{{Topic: "ho", Prefix: true}}, total - 10_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var dst []*Event
			delivered := 0
			for range b.N {
				cursor := bc.cursor
				for cursor < total {
					var through int64
					var ok bool
					dst, through, ok = h.FromWindow(dst[:0], bc.sels, cursor, gen, 1000, 4<<20)
					if !ok {
						b.Fatal("not in the window")
					}
					delivered += len(dst)
					cursor = through
				}
			}
			b.ReportMetric(float64(delivered)/float64(b.N), "events/op")
			b.ReportMetric(float64(st.Bytes)/total, "window-B/event")
		})
	}
}

func emptySelectors(n int) []Selector {
	sels := make([]Selector, n)
	for i := range sels {
		sels[i] = Selector{Topic: fmt.Sprintf("empty/%d/", i), Prefix: true}
	}
	return sels
}
