package realtime_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// TestBatchedHTTPPublishes: concurrent POST /v1/publish requests, gathered
// into shared transactions by a wide batch window, each get the seq of their
// own event; one the database refuses fails alone with 400; a stream
// receives every committed event once, in seq order.
func TestBatchedHTTPPublishes(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{PublishBatchWindow: 50 * time.Millisecond, PollInterval: time.Hour})
	stream := ssetest.Open(t, n.URL+"/v1/events?topic=batch/*", "")

	const publishers, bad = 64, 17
	type answer struct {
		status int
		seq    int64
		body   string
	}
	answers := make([]answer, publishers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := fmt.Sprintf(`{"i": %d}`, i)
			if i == bad {
				data = `{"s": "\u0000"}` // valid JSON that jsonb refuses
			}
			body := fmt.Sprintf(`{"topic": "batch/%d", "data": %s}`, i%4, data)
			<-start
			resp, err := http.Post(n.URL+"/v1/publish", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var got struct{ Seq int64 }
			_ = json.Unmarshal(b, &got)
			answers[i] = answer{resp.StatusCode, got.Seq, string(b)}
		}()
	}
	close(start)
	wg.Wait()

	rows, err := n.Store.Pool.Query(t.Context(), `SELECT seq, data->>'i' FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	bySeq := map[int64]string{}
	var seqs []int64
	for rows.Next() {
		var seq int64
		var i string
		if err := rows.Scan(&seq, &i); err != nil {
			t.Fatal(err)
		}
		bySeq[seq] = i
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var txs int
	if err := n.Store.Pool.QueryRow(t.Context(), `SELECT count(DISTINCT xmin::text) FROM livepg.events`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events committed in %d transactions", len(seqs), txs)

	for i, a := range answers {
		if i == bad {
			if a.status != http.StatusBadRequest || !strings.Contains(a.body, `"error"`) {
				t.Errorf("refused publish: %d %s, want 400 with an error", a.status, a.body)
			}
			continue
		}
		if a.status != http.StatusOK || bySeq[a.seq] != fmt.Sprint(i) {
			t.Errorf("publish %d: %d %s; the log holds %q at that seq", i, a.status, a.body, bySeq[a.seq])
		}
	}
	if len(seqs) != publishers-1 {
		t.Fatalf("log holds %d events, want %d", len(seqs), publishers-1)
	}
	got := collect(t, stream, seqs[len(seqs)-1])
	var gotSeqs []int64
	for _, ev := range got {
		gotSeqs = append(gotSeqs, ev.Seq())
	}
	if !slices.Equal(gotSeqs, seqs) {
		t.Fatalf("stream received %v, want %v", gotSeqs, seqs)
	}
	expectNothingMore(t, stream)
}
