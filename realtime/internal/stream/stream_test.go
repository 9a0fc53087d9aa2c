package stream_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/realtime/internal/stream"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func counter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }

func testMetrics() stream.Metrics {
	m := stream.Metrics{
		Opened: counter(), CutOff: counter(), Delivered: counter(), BytesWritten: counter(),
		CatchUpBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h"}),
		WindowReads:  prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}),
		Closed:       map[string]prometheus.Counter{},
	}
	for _, r := range stream.CloseReasons {
		m.Closed[r] = counter()
	}
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	return strings.Count(buf.String(), fn)
}

// An engine on a real log, with a hub the test feeds itself, served by a
// handler that admits every request for topic "t".
type testEngine struct {
	*stream.Engine
	hub  *fanout.Hub
	done chan struct{}
	url  string
	once sync.Once
}

func (te *testEngine) shutdown() { te.once.Do(func() { close(te.done) }) }

func newTestEngine(t *testing.T, cfg stream.Config) *testEngine {
	t.Helper()
	te := &testEngine{hub: fanout.NewHub(0), done: make(chan struct{})}
	cfg.Log = storetest.NewStore(t)
	cfg.Hub, cfg.Done, cfg.Metrics = te.hub, te.done, testMetrics()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	cfg.MaxStreams, cfg.Buffer, cfg.BatchSize = 10, 16, 100
	cfg.Heartbeat, cfg.WriteTimeout, cfg.Retry = time.Hour, time.Minute, time.Second
	te.Engine = stream.New(cfg)
	sel, _ := fanout.ParseSelector("t")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		place, err := te.Reserve(r.RemoteAddr)
		if err != nil {
			http.Error(w, "full", http.StatusServiceUnavailable)
			return
		}
		start, gen, reset, err := te.Position(r.Context(), fanout.EventID{}, false)
		if err != nil {
			place.Release()
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		te.Serve(w, r, stream.Request{Topics: []string{"t"}, Selectors: []fanout.Selector{sel}, Start: start, Gen: gen, Reset: reset, Place: place})
	}))
	te.url = srv.URL
	t.Cleanup(func() {
		te.shutdown()
		te.Shutdown(5 * time.Second)
		srv.Close()
	})
	return te
}

// A stream holding events back to share a write (WriteCoalesce) still ends
// at once when its client goes or the node shuts down: the wait is a case
// of a select, not a sleep. With 90 s of coalescing, a sleep would hold the
// stream (and the node's shutdown) for 90 s, past the test's wait.
func TestCoalescingWaitEndsWhenTheClientGoesOrTheNodeStops(t *testing.T) {
	for _, plain := range []bool{false, true} {
		for _, end := range []string{"client gone", "shutdown"} {
			t.Run(fmt.Sprintf("plain=%v/%s", plain, end), func(t *testing.T) {
				te := newTestEngine(t, stream.Config{WriteCoalesce: 90 * time.Second, PlainStreams: plain})
				s := ssetest.Open(t, te.url, "")
				waitFor(t, "the stream joined", func() bool { return te.hub.Subscribers() == 1 })

				// Events committed long ago: the node is behind, so a stream
				// that just wrote waits before writing the next.
				old := time.Now().Add(-2 * time.Hour)
				te.hub.Publish([]*fanout.Event{fanout.NewEvent(fanout.EventID{Seq: 1}, "message", "t", []byte("1"), old)})
				if ev := s.Next(t, 30*time.Second); ev.ID != "1" {
					t.Fatalf("first event %+v", ev)
				}
				te.hub.Publish([]*fanout.Event{fanout.NewEvent(fanout.EventID{Seq: 2}, "message", "t", []byte("2"), old)})
				waitFor(t, "the stream holding event 2 back", func() bool {
					return goroutinesIn("stream.(*stream).pause(") == 1
				})

				switch end {
				case "client gone":
					s.Close()
				case "shutdown":
					te.shutdown()
					var ids []string
					deadline := time.After(30 * time.Second)
				read:
					for {
						select {
						case ev, ok := <-s.Events():
							if !ok {
								break read
							}
							ids = append(ids, ev.ID)
						case <-deadline:
							t.Fatalf("the stream did not end after shutdown (events %q)", ids)
						}
					}
					if strings.Join(ids, ",") != "2" {
						t.Fatalf("after shutdown the stream sent %q, want event 2 and its end", ids)
					}
				}
				waitFor(t, "the stream ended", func() bool { return te.Open() == 0 && te.hub.Subscribers() == 0 })
			})
		}
	}
}
