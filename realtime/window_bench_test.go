package realtime_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkResume: a stream resuming from 1,000 events back (events of
// about 80 bytes), served from the node's window, or from the log (no
// window): the time from the request to the last byte of the 1,000th
// event, and the queries of the log per resume.
func BenchmarkResume(b *testing.B) {
	for _, w := range []struct {
		name   string
		window int64
	}{{"window", 0}, {"log", -1}} {
		b.Run(w.name, func(b *testing.B) {
			url, want, reads := benchResumeNode(b, w.window)
			before := reads()
			b.ResetTimer()
			for range b.N {
				got, err := dialResume(url, "/v1/events?topic=deploy", "0", len(want), "")
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					b.Fatal("a resume was sent other bytes")
				}
			}
			b.StopTimer()
			b.ReportMetric((reads()-before)/float64(b.N), "queries/op")
		})
	}
}

// BenchmarkResumeStorm: 500 streams resuming at once from 1,000 events
// back, as after a rolling deploy; one op is all of them served.
func BenchmarkResumeStorm(b *testing.B) {
	const streams = 500
	for _, w := range []struct {
		name   string
		window int64
	}{{"window", 0}, {"log", -1}} {
		b.Run(w.name, func(b *testing.B) {
			url, want, reads := benchResumeNode(b, w.window)
			before := reads()
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				errs := make(chan error, streams)
				for range streams {
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, err := dialResume(url, "/v1/events?topic=deploy", "0", len(want), "")
						if err == nil && !bytes.Equal(got, want) {
							err = fmt.Errorf("a resume was sent other bytes")
						}
						if err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric((reads()-before)/float64(b.N), "queries/op")
		})
	}
}

// benchResumeNode starts a node with window on a log of 1,000 events on
// topic deploy, and returns its URL, the body of a stream resuming from 0
// through the last event, and a reader of livepg_catchup_reads_total.
func benchResumeNode(b *testing.B, window int64) (url string, want []byte, reads func() float64) {
	const events = 1000
	db := storetest.NewDatabase(b)
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Logger: slog.New(slog.DiscardHandler),
		Window: window, MaxStreamsPerClient: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := node.Start(ctx); err != nil {
		b.Fatal(err)
	}
	r := chi.NewRouter()
	node.Routes(r)
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ConnContext = realtime.ConnContext
	srv.Start()
	b.Cleanup(func() {
		node.CloseStreams()
		srv.Close()
		node.Stop()
	})
	metric := func(name string) float64 {
		families, err := node.Metrics().Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name {
				m := f.GetMetric()[0]
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		b.Fatalf("no metric %s", name)
		return 0
	}
	// Written after the node started, which routes them (into its window,
	// when it has one), as a running node does.
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`SELECT livepg.publish_batch(array_fill('deploy'::text, ARRAY[%d]), array_fill('message'::text, ARRAY[%d]),
	        array(SELECT jsonb_build_object('i', g) FROM generate_series(1, %d) g))`, events, events, events)); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for metric("livepg_log_head") < events {
		if time.Now().After(deadline) {
			b.Fatal("the node did not read the events")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The head once the node has numbered and read them: before, it may be
	// a head position ('<seq>.<skip>-<epoch>', events not numbered yet),
	// which no event's id equals.
	var head string
	if err := conn.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head); err != nil {
		b.Fatal(err)
	}
	want, err = dialResume(srv.URL, "/v1/events?topic=deploy", "0", -1, "\nid: "+head+"\n")
	if err != nil {
		b.Fatal(err)
	}
	return srv.URL, want, func() float64 { return metric("livepg_catchup_reads_total") }
}
