package realtime_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkPublishBesideBadPublishers measures what bad publishers cost good
// ones (issue 11 item 9): 32 publishers POST valid events (b.N in all)
// while 0 or 2 others POST events the database would refuse ("\u0000" in
// the data), each 100 a second at most (one waiting for its answer before
// the next: a refusal that comes fast must not turn them into a CPU flood
// on the machine the benchmark shares with the node). It reports the good
// publishers' rate and median latency:
//
//	go test ./realtime -run '^$' -bench PublishBesideBadPublishers -benchtime 20000x
func BenchmarkPublishBesideBadPublishers(b *testing.B) {
	for _, bad := range []int{0, 2} {
		b.Run(fmt.Sprintf("bad=%d", bad), func(b *testing.B) { benchBadPublishers(b, 32, bad) })
	}
}

func benchBadPublishers(b *testing.B, good, bad int) {
	db := storetest.NewDatabase(b)
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := node.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer node.Stop()
	r := chi.NewRouter()
	node.Routes(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: good + bad}}
	post := func(body string) (int, error) {
		resp, err := client.Post(srv.URL+"/v1/publish", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	stop := make(chan struct{})
	var badWG sync.WaitGroup
	var badSent atomic.Int64
	for range bad {
		badWG.Add(1)
		go func() {
			defer badWG.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if code, err := post(`{"topic":"bench/bad","data":"\u0000"}`); err == nil && code != http.StatusBadRequest {
					b.Errorf("bad publish: status %d, want 400", code)
					return
				}
				badSent.Add(1)
			}
		}()
	}
	var next atomic.Int64
	latencies := make([][]time.Duration, good)
	var wg sync.WaitGroup
	b.ResetTimer()
	began := time.Now()
	for w := range good {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				code, err := post(fmt.Sprintf(`{"topic":"bench/%d","data":{"n":%d}}`, w, w))
				if err != nil || code != http.StatusOK {
					b.Errorf("good publish: status %d, err %v", code, err)
					return
				}
				latencies[w] = append(latencies[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	close(stop)
	badWG.Wait()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "good_publishes/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50_ms")
	}
	b.ReportMetric(float64(badSent.Load())/elapsed.Seconds(), "bad_publishes/s")
}
