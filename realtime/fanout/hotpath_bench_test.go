package fanout

import (
	"fmt"
	"strings"
	"testing"
)

// The hot paths of delivery, measured with allocations:
//
//	go test ./realtime/fanout -run '^$' -bench 'Frame|Hub|Selector' -benchmem

func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{32, 1024, 16 << 10} {
		data := []byte(`{"text":"` + strings.Repeat("x", size) + `"}`)
		b.Run(fmt.Sprintf("data=%dB", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var buf []byte
			for i := range b.N {
				buf = AppendFrame(buf[:0], EventID{Seq: int64(i), Epoch: "0123456789ab"}, "update", "boards/42", data)
			}
		})
	}
}

// newBenchHub returns a hub with subs subscribers on topic, each with a
// buffer of buffer events.
func newBenchHub(subs, buffer int, topic string) (*Hub, []*Subscriber) {
	h := NewHub(0)
	all := make([]*Subscriber, subs)
	for i := range all {
		sel, err := ParseSelector(topic)
		if err != nil {
			panic(err)
		}
		all[i] = NewSubscriber([]Selector{sel}, buffer)
		if ok, _ := h.Join(all[i], 0, 0); !ok {
			panic("join refused")
		}
	}
	return h, all
}

func drainAll(subs []*Subscriber) {
	for _, s := range subs {
		s.mu.Lock()
		clear(s.queue)
		s.queue = s.queue[:0]
		s.mu.Unlock()
	}
}

// BenchmarkHubPublish routes one event to every subscriber of its topic:
// ns/op is the cost of one event, ns/delivery of one subscriber's share.
func BenchmarkHubPublish(b *testing.B) {
	for _, selector := range []string{"boards/42", "boards/*"} {
		for _, subs := range []int{1, 100, 10_000} {
			b.Run(fmt.Sprintf("selector=%s/subscribers=%d", selector, subs), func(b *testing.B) {
				const buffer = 256
				h, all := newBenchHub(subs, buffer, selector)
				ev := benchEvent(1)
				events := []*Event{ev}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if i%buffer == buffer-1 {
						b.StopTimer()
						drainAll(all)
						b.StartTimer()
					}
					ev.Seq = int64(i + 1)
					h.Publish(events)
				}
				b.StopTimer()
				if h.Subscribers() != subs {
					b.Fatalf("%d subscribers left the live flow", subs-h.Subscribers())
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
			})
		}
	}
}

func BenchmarkSelectorMatch(b *testing.B) {
	exact, _ := ParseSelector("boards/42")
	prefix, _ := ParseSelector("boards/*")
	many := make([]Selector, 0, 32)
	for i := range 31 {
		s, _ := ParseSelector(fmt.Sprintf("users/%d/inbox", i))
		many = append(many, s)
	}
	many = append(many, prefix)
	topic := "boards/42/cards"
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			exact.Match(topic)
		}
	})
	b.Run("prefix", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			prefix.Match(topic)
		}
	})
	b.Run("any-of-32", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			matchAny(many, topic)
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = ParseSelector("boards/*")
		}
	})
}

// BenchmarkHubRouteBesideBystanders routes one event on boards/42 to the one
// subscriber that wants it, beside 20,000 bystanders holding 32 selectors
// each that match nothing (the storm of issue 11 item 5: streams of
// ?topic=none0/*&...&topic=none31/*, or the same with exact topics). ns/op
// is the cost of routing one event; it must not grow with the bystanders.
//
//	go test -run '^$' -bench HubRouteBesideBystanders ./realtime/fanout
func BenchmarkHubRouteBesideBystanders(b *testing.B) {
	for _, kind := range []string{"prefix", "exact"} {
		for _, bystanders := range []int{0, 20_000} {
			b.Run(fmt.Sprintf("selectors=%s/bystanders=%dx32", kind, bystanders), func(b *testing.B) {
				const buffer = 256
				h := NewHub(0)
				sels := make([]Selector, 32)
				for i := range sels {
					s := fmt.Sprintf("none%d/x%d", i, i)
					if kind == "prefix" {
						s = fmt.Sprintf("none%d/*", i)
					}
					sel, err := ParseSelector(s)
					if err != nil {
						b.Fatal(err)
					}
					sels[i] = sel
				}
				for range bystanders {
					if ok, _ := h.Join(NewSubscriber(sels, buffer), 0, 0); !ok {
						b.Fatal("join refused")
					}
				}
				want, _ := ParseSelector("boards/42")
				receiver := NewSubscriber([]Selector{want}, buffer)
				if ok, _ := h.Join(receiver, 0, 0); !ok {
					b.Fatal("join refused")
				}
				all := []*Subscriber{receiver}
				ev := benchEvent(1)
				events := []*Event{ev}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if i%buffer == buffer-1 {
						b.StopTimer()
						drainAll(all)
						b.StartTimer()
					}
					ev.Seq = int64(i + 1)
					h.Publish(events)
				}
				b.StopTimer()
				if h.Subscribers() != bystanders+1 {
					b.Fatalf("%d subscribers left the live flow", bystanders+1-h.Subscribers())
				}
			})
		}
	}
}
