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

// BenchmarkWindowAdd: what keeping the window adds to routing an event
// (Hub.Publish with no subscriber, batches of 16 events on 1,000 topics
// "boards/<n>/cards"), once the window is full and drops an event for each
// one it adds; "off" is the hub without a window. The events are made
// before the timer and reused once the window has long dropped them.
// cpu-ns/op is the process's CPU time per event (getrusage), which a
// loaded machine inflates less than ns/op.
func BenchmarkWindowAdd(b *testing.B) {
	for _, w := range []struct {
		name  string
		bytes int64
	}{{"off", 0}, {"8MiB", 8 << 20}} {
		b.Run(w.name, func(b *testing.B) {
			const batch, ring = 16, 1 << 17 // the window holds about 30,000
			h := NewHub(0)
			h.KeepWindow(w.bytes)
			h.Reset(testEpoch, 0)
			events := make([]*Event, ring)
			for i := range events {
				events[i] = NewEvent(EventID{Seq: 1_000_000_000, Epoch: testEpoch}, "message", fmt.Sprintf("boards/%d/cards", i%1000), []byte(`{"n":1}`), time.Now())
			}
			seq := int64(0)
			publish := func(k int) {
				evs := events[k%ring : k%ring+batch]
				for _, ev := range evs {
					seq++
					ev.Seq = seq
				}
				h.Publish(evs)
			}
			k := 0
			for ; w.bytes > 0 && h.Window().From == 0; k += batch {
				publish(k) // fill the window: then each event added drops one
			}
			cpu := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				publish(k)
				k += batch
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
