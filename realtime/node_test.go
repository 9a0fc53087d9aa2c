package realtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// Delivery below relies on NOTIFY alone: the slow timer never fires.
var notifyOnly = realtime.Config{PollInterval: time.Hour}

func TestSQLWritersReachStreamsOnBothNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	a, b := startNode(t, db, notifyOnly), startNode(t, db, notifyOnly)

	// A plain connection, as psql would use.
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE notes (id int PRIMARY KEY, board_id int NOT NULL, text text NOT NULL)`)
	exec(`SELECT livepg.track('notes', 'boards/{board_id}')`)

	onA := ssetest.Open(t, a.URL+"/v1/events?topic=boards/1", "")
	onB := ssetest.Open(t, b.URL+"/v1/events?topic=boards/*", "")

	exec(`SELECT livepg.publish('boards/1', '{"hello": "from sql"}')`)
	exec(`INSERT INTO notes VALUES (1, 1, 'first')`)
	exec(`BEGIN`)
	exec(`SELECT livepg.publish('boards/1', '{"rolled": "back"}')`)
	exec(`UPDATE notes SET text = 'never' WHERE id = 1`)
	exec(`ROLLBACK`)
	exec(`UPDATE notes SET text = 'second' WHERE id = 1`)

	for _, s := range []*ssetest.Stream{onA, onB} {
		var got []string
		for range 3 {
			ev := s.Next(t, 30*time.Second)
			got = append(got, ev.Type+" "+string(decode(t, ev).Data))
		}
		want := []string{
			`message {"hello": "from sql"}`,
			`insert {"op": "insert", "new": {"id": 1, "text": "first", "board_id": 1}, "table": "notes"}`,
			`update {"op": "update", "new": {"id": 1, "text": "second", "board_id": 1}, "old": {"id": 1, "text": "first", "board_id": 1}, "table": "notes"}`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestResumeOnAnotherNodeReceivesExactlyWhatWasMissed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	a, b := startNode(t, db, notifyOnly), startNode(t, db, notifyOnly)
	publish := func(n int) int64 {
		t.Helper()
		seq, err := a.Store.Publish(ctx, "r/1", "message", []byte(fmt.Sprint(n)))
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	// Noise on another topic interleaves with the stream's own events.
	noise := func() {
		if _, err := a.Store.Publish(ctx, "r/2", "message", nil); err != nil {
			t.Fatal(err)
		}
	}

	for _, via := range []string{"header", "query"} {
		first := ssetest.Open(t, a.URL+"/v1/events?topic=r/1", "")
		for i := 1; i <= 3; i++ {
			publish(i)
			noise()
		}
		for i := 1; i <= 3; i++ {
			if got := first.Next(t, 30*time.Second); decodeInt(t, got) != i {
				t.Fatalf("first stream event %d = %s", i, got.Data)
			}
		}
		resumeFrom := first.LastEventID()
		first.Close()

		var missed []int64
		for i := 4; i <= 7; i++ {
			missed = append(missed, publish(i))
			noise()
		}
		var second *ssetest.Stream
		if via == "header" {
			second = ssetest.Open(t, b.URL+"/v1/events?topic=r/1", resumeFrom)
		} else {
			second = ssetest.Open(t, b.URL+"/v1/events?topic=r/1&lastEventId="+resumeFrom, "")
		}
		for i, seq := range missed {
			got := second.Next(t, 30*time.Second)
			if got.Seq() != seq || decodeInt(t, got) != i+4 {
				t.Fatalf("%s resume: event %d = id %s data %s, want id %d data %d", via, i, got.ID, got.Data, seq, i+4)
			}
		}
		// Then live, with nothing repeated in between.
		live := publish(8)
		if got := second.Next(t, 30*time.Second); got.Seq() != live || decodeInt(t, got) != 8 {
			t.Fatalf("%s resume: first live event = id %s data %s, want id %d", via, got.ID, got.Data, live)
		}
		second.Close()
	}
}

func decodeInt(t *testing.T, ev ssetest.Event) int {
	t.Helper()
	var n int
	if err := json.Unmarshal(decode(t, ev).Data, &n); err != nil {
		t.Fatalf("event %s: %v", ev.ID, err)
	}
	return n
}

func TestLargePayloadRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, notifyOnly)
	s := ssetest.Open(t, n.URL+"/v1/events?topic=big", "")

	// 150 KB, with characters JSON must escape, through HTTP and through SQL.
	blob := strings.Repeat("line one\nline \"two\"\r\n\u00e9\u4e16 ", 150_000/32)
	body, _ := json.Marshal(map[string]any{"topic": "big", "type": "blob", "data": map[string]string{"blob": blob}})
	resp, err := http.Post(n.URL+"/v1/publish", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var published struct{ Seq int64 }
	if err := json.NewDecoder(resp.Body).Decode(&published); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %s %v", resp.Status, err)
	}
	resp.Body.Close()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT livepg.publish('big', jsonb_build_object('blob', $1::text), 'blob')`, blob); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ev := s.Next(t, 30*time.Second)
		if i == 0 && ev.Seq() != published.Seq {
			t.Errorf("event id %s, publish answered seq %d", ev.ID, published.Seq)
		}
		var data struct{ Blob string }
		if err := json.Unmarshal(decode(t, ev).Data, &data); err != nil {
			t.Fatal(err)
		}
		if ev.Type != "blob" || data.Blob != blob {
			t.Fatalf("event %d: type %q, blob of %d bytes, want %d bytes intact", i, ev.Type, len(data.Blob), len(blob))
		}
	}
}

// A subscriber whose buffer overflows falls behind the live flow: it reads
// the rest from the log and rejoins, losing and repeating nothing, while a
// subscriber beside it keeps up.
func TestSubscriberThatFallsBehindCatchesUpFromTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{Buffer: 2, BatchSize: 100, PollInterval: time.Hour})
	streams := []*ssetest.Stream{
		ssetest.Open(t, n.URL+"/v1/events?topic=burst", ""),
		ssetest.Open(t, n.URL+"/v1/events?topic=burst&topic=burst/*", ""),
	}
	waitFor(t, "streams joined", func() bool { return metric(t, n.Node, "livepg_subscribers_live") == 2 })
	const events = 3000
	var first, last int64
	err := n.Store.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT livepg.publish('burst', to_jsonb(i)) FROM generate_series(1, $1) i`, events)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	storetest.NumberPending(t, n.Store.Pool)
	if err := n.Store.Pool.QueryRow(ctx, `SELECT min(seq), max(seq) FROM livepg.events`).Scan(&first, &last); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		got := collect(t, s, last)
		if len(got) != events {
			t.Fatalf("stream %d received %d events, want %d", i, len(got), events)
		}
		for j, ev := range got {
			if ev.Seq() != first+int64(j) || decodeInt(t, ev) != j+1 {
				t.Fatalf("stream %d event %d: id %s data %s", i, j, ev.ID, ev.Data)
			}
		}
	}
	if metric(t, n.Node, "livepg_subscribers_lagged_total") == 0 {
		t.Fatal("no subscriber fell behind: the test did not exercise catch-up")
	}
	waitFor(t, "streams rejoined the live flow", func() bool { return metric(t, n.Node, "livepg_subscribers_live") == 2 })
}

func TestResumePointOutsideTheLogGetsReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, notifyOnly)
	var seqs []int64
	for range 3 {
		seq, err := n.Store.Publish(ctx, "p", "message", nil)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if _, err := n.Store.Prune(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, from := range []int64{seqs[0], seqs[2] + 100} {
		s := ssetest.Open(t, n.URL+"/v1/events?topic=p", fmt.Sprint(from))
		ev := s.Next(t, 30*time.Second)
		if ev.Type != "reset" || ev.Seq() != seqs[2] {
			t.Fatalf("resume from %d: got %+v, want reset at %d", from, ev, seqs[2])
		}
		// The stream goes on live.
		seq, err := n.Store.Publish(ctx, "p", "message", nil)
		if err != nil {
			t.Fatal(err)
		}
		if ev := s.Next(t, 30*time.Second); ev.Seq() != seq {
			t.Fatalf("after reset: got %+v, want %d", ev, seq)
		}
		s.Close()
		seqs[2] = seq
		if _, err := n.Store.Prune(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Resuming at the head itself misses nothing: no reset.
	s := ssetest.Open(t, n.URL+"/v1/events?topic=p", fmt.Sprint(seqs[2]))
	seq, err := n.Store.Publish(ctx, "p", "message", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev := s.Next(t, 30*time.Second); ev.Type != "message" || ev.Seq() != seq {
		t.Fatalf("resume at head: got %+v, want message %d", ev, seq)
	}
}

func TestBadStreamRequestsGetClearErrors(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{MaxTopics: 2})
	for _, tc := range []struct {
		name, query, lastEventID string
	}{
		{"no topic", "", ""},
		{"bad selector", "topic=" + url.QueryEscape("boards/**"), ""},
		{"bare wildcard", "topic=*", ""},
		{"empty topic", "topic=", ""},
		{"too many topics", "topic=a&topic=b&topic=c", ""},
		{"negative id", "topic=a", "-1"},
		{"non-numeric id", "topic=a", "abc"},
		{"bad query id", "topic=a&lastEventId=1e3", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, n.URL+"/v1/events?"+tc.query, nil)
			if tc.lastEventID != "" {
				req.Header.Set("Last-Event-ID", tc.lastEventID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadRequest || body.Error == "" {
				t.Fatalf("%s: %d %q, want 400 with an error", tc.name, resp.StatusCode, body.Error)
			}
		})
	}
}

func TestPublishOverHTTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{MaxBody: 1000})
	s := ssetest.Open(t, n.URL+"/v1/events?topic=h/*", "")
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"ok", `{"topic":"h/1","type":"note","data":{"x":1}}`, 200},
		{"default type, no data", `{"topic":"h/2"}`, 200},
		{"malformed", `{"topic":`, 400},
		{"not an object", `[1]`, 400},
		{"wrong type", `{"topic":5}`, 400},
		{"unknown field", `{"topic":"h/1","extra":1}`, 400},
		{"two values", `{"topic":"h/1"}{"topic":"h/1"}`, 400},
		{"bad topic", `{"topic":"h/*"}`, 400},
		{"bad type", `{"topic":"h/1","type":"a\nb"}`, 400},
		{"too large", `{"topic":"h/1","data":"` + strings.Repeat("x", 1000) + `"}`, 413},
	} {
		resp, err := http.Post(n.URL+"/v1/publish", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status {
			t.Errorf("%s: %d %v, want %d", tc.name, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.status != 200 && body["error"] == nil {
			t.Errorf("%s: no error message: %v", tc.name, body)
		}
	}
	// Exactly the two good requests were published.
	for _, want := range []string{`note h/1 {"x": 1}`, `message h/2 null`} {
		ev := s.Next(t, 30*time.Second)
		p := decode(t, ev)
		if got := ev.Type + " " + p.Topic + " " + string(p.Data); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	var count int
	if err := n.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.events`).Scan(&count); err != nil || count != 2 {
		t.Fatalf("log holds %d events (%v), want 2", count, err)
	}
}

// The handler an application mounts answers what is not livepg's with a
// JSON error, as every other refusal.
func TestHandlerRefusesOtherPathsAndMethodsWithJSON(t *testing.T) {
	t.Parallel()
	n := startNode(t, storetest.NewDatabase(t), realtime.Config{})
	srv := httptest.NewServer(n.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/v1/nothing", http.StatusNotFound},
		{http.MethodDelete, "/v1/publish", http.StatusMethodNotAllowed},
		{http.MethodGet, "/v1/events", http.StatusBadRequest}, // no topic
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || err != nil || body.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q (%v), want %d with a JSON error", tc.method, tc.path, resp.StatusCode, body.Error, err, tc.want)
		}
	}
}

// A handler mounted before the node starts (an application wires its
// router first) turns streams away with 503 and a retry hint; once the node
// starts, the same handler serves them.
func TestHandlerBeforeStartRefusesStreams(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(node.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/events?topic=early")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body.Error, "not started") {
		t.Fatalf("before Start: %d %q (Retry-After %q)", resp.StatusCode, body.Error, resp.Header.Get("Retry-After"))
	}

	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer node.Stop()
	defer node.CloseStreams() // before srv.Close, which waits for streams served through net/http
	s := ssetest.Open(t, srv.URL+"/v1/events?topic=early", "")
	seq, err := st.Publish(context.Background(), "early", "message", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, s, seq); got[len(got)-1].Seq() != seq {
		t.Fatalf("after Start: got %+v, want seq %d", got, seq)
	}
}
