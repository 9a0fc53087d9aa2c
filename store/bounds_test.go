package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// hugeNumbers is JSON of n numbers 1e131071: a few bytes each as jsonb and
// as the request body, 131,072 digits each as PostgreSQL prints them.
func hugeNumbers(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat("1e131071,", n), ",") + "]"
}

// TestEventSizeIsBoundedAsDeliveredForEveryWriter: an event is measured as
// JSON text, the form nodes deliver, whoever writes it, and one over
// livepg.limits.max_event_size is refused at write time with SQLSTATE 54000
// and leaves nothing in the log.
func TestEventSizeIsBoundedAsDeliveredForEveryWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	bomb := hugeNumbers(8) // 91 bytes of JSON, 1 MiB as printed
	refused := func(what string, err error) {
		t.Helper()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "54000" || !strings.Contains(pgErr.Message, "more than the limit of 524288 bytes") {
			t.Errorf("%s: err = %v, want SQLSTATE 54000 naming the limit", what, err)
		}
	}
	_, err := s.Pool.Exec(ctx, `SELECT livepg.publish('t/1', $1::jsonb)`, bomb)
	refused("livepg.publish", err)
	_, err = s.Pool.Exec(ctx, `SELECT livepg.publish_batch(ARRAY['t/1'], ARRAY['message'], ARRAY[$1::jsonb])`, bomb)
	refused("livepg.publish_batch", err)
	if _, err := s.Pool.Exec(ctx, `CREATE TABLE docs (id int PRIMARY KEY, body jsonb)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.track('docs', 'docs/{id}')`); err != nil {
		t.Fatal(err)
	}
	_, err = s.Pool.Exec(ctx, `INSERT INTO docs VALUES (1, $1::jsonb)`, bomb)
	refused("tracked table", err)
	seqs, errs, err := s.PublishBatch(ctx, []store.NewEvent{
		{Topic: "t/1", Type: "message", Data: []byte(`{"fine":true}`)},
		{Topic: "t/1", Type: "message", Data: []byte(bomb)},
	})
	if err != nil || errs[0] != nil || !errors.Is(errs[1], store.ErrTooLarge) || !errors.Is(errs[1], store.ErrInvalid) {
		t.Errorf("PublishBatch: seqs %v, errs %v, err %v: want the small one committed and the bomb refused alone with ErrTooLarge", seqs, errs, err)
	}

	// Just at the limit passes; the limit is one setting, in the database.
	atLimit := `"` + strings.Repeat("x", 524288-2) + `"`
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish('t/2', $1::jsonb)`, atLimit); err != nil {
		t.Errorf("an event of exactly the limit: %v", err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE livepg.limits SET max_event_size = 100`); err != nil {
		t.Fatal(err)
	}
	_, err = s.Pool.Exec(ctx, `SELECT livepg.publish('t/3', $1::jsonb)`, `"`+strings.Repeat("y", 99)+`"`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "54000" {
		t.Errorf("101 bytes under a limit of 100: %v", err)
	}

	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || string(events[0].Data) != `{"fine": true}` || events[0].Size != 14 {
		t.Fatalf("log = %d events, first %+v: want only the two accepted ones", len(events), events[0])
	}
	// The one at the old limit is over the new one: delivered as a
	// placeholder, its data not read.
	if e := events[1]; e.Omitted != store.OmittedTooLarge || e.Data != nil || e.Size != 524288 || e.Topic != "t/2" {
		t.Errorf("event over a lowered limit = seq %d topic %s omitted %q size %d data %d bytes", e.Seq, e.Topic, e.Omitted, e.Size, len(e.Data))
	}
}

// TestReadsSkipRowsTheDatabaseCannotPrint: a row written before the log
// measured events (size NULL) that PostgreSQL cannot print (8,300 numbers
// 1e131071: over 1 GB of text, "out of memory") does not stop the reader
// or a catch-up: it comes back as a placeholder with its id, topic and
// type, and the events after it come back whole.
func TestReadsSkipRowsTheDatabaseCannotPrint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Publish(ctx, "a/1", "message", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	// As the log was before 00007: an event nobody measured.
	storetest.WriteUnmeasured(t, s, `SELECT 'a/2', 'bomb', $1::jsonb`, hugeNumbers(8300))
	if _, err := s.Publish(ctx, "a/3", "message", []byte(`3`)); err != nil {
		t.Fatal(err)
	}
	check := func(what string, events []store.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var got []string
		for _, e := range events {
			got = append(got, fmt.Sprintf("%d %s %s %q %s", e.Seq, e.Topic, e.Type, e.Omitted, e.Data))
		}
		want := []string{`1 a/1 message "" 1`, `2 a/2 bomb "unreadable" `, `3 a/3 message "" 3`}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	check("ReadAfter", events, err)
	numberAll(t, s)
	events, err = s.ReadMatching(ctx, 0, 3, nil, []string{"a/"}, 10, 1<<30)
	check("ReadMatching", events, err)
}

// TestReadsAreBoundedInBytes: a read returns no more than its byte budget
// of data (but always one event, so that it moves on), however many rows
// it may return.
func TestReadsAreBoundedInBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish('big/' || (i % 2), to_jsonb(repeat('x', 100000)))
	                                FROM generate_series(1, 10) i`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		budget int64
		want   int
	}{{1, 1}, {100002, 1}, {100003, 2}, {250000, 3}, {1 << 30, 10}} {
		numberAll(t, s)
		events, err := s.ReadAfter(ctx, 0, 1000, c.budget)
		if err != nil || len(events) != c.want {
			t.Errorf("ReadAfter within %d bytes: %d events, %v; want %d", c.budget, len(events), err, c.want)
		}
		numberAll(t, s)
		events, err = s.ReadMatching(ctx, 0, 10, nil, []string{"big/"}, 1000, c.budget)
		if err != nil || len(events) != c.want {
			t.Errorf("ReadMatching within %d bytes: %d events, %v; want %d", c.budget, len(events), err, c.want)
		}
	}
}

// TestReadsOfUnmeasuredRowsSayWhenTheyAreCut: rows written before the log
// measured events (size NULL) count their stored size against the budget,
// which may exceed their text; a read they cut still says it may have more
// (FullBatch), so that no caller takes it for the end of its window and
// skips the rest.
func TestReadsOfUnmeasuredRowsSayWhenTheyAreCut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	storetest.WriteUnmeasured(t, s, `SELECT 'old/1', 'message', jsonb_build_object('a', i) FROM generate_series(1, 10) i`)
	var stored, text int64
	numberAll(t, s)
	if err := s.Pool.QueryRow(ctx, `SELECT pg_column_size(data), octet_length(data::text) FROM livepg.events LIMIT 1`).Scan(&stored, &text); err != nil {
		t.Fatal(err)
	}
	budget := 2 * stored // two rows' worth, as the read counts them
	for name, read := range map[string]func() ([]store.Event, error){
		"ReadAfter":    func() ([]store.Event, error) { return s.ReadAfter(ctx, 0, 1000, budget) },
		"ReadMatching": func() ([]store.Event, error) { return s.ReadMatching(ctx, 0, 10, []string{"old/1"}, nil, 1000, budget) },
	} {
		events, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 2 || !store.FullBatch(events, 1000, budget) {
			t.Errorf("%s within %d bytes (rows of %d stored, %d as text): %d events, FullBatch %v; want 2 and true",
				name, budget, stored, text, len(events), store.FullBatch(events, 1000, budget))
		}
	}
}

// TestCatchUpOfEmptySelectorsCostsIndexProbes: on a log of 100,000 events,
// a catch-up for 32 prefixes and 32 exact topics that have no events, from
// the start of the log, touches a few pages per selector (EXPLAIN ANALYZE's
// buffer counts), not the log; and selectors that do match, overlapping,
// get each event once, in order.
func TestCatchUpOfEmptySelectorsCostsIndexProbes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish_batch(array_agg('t/' || (i % 100)), array_agg('message'::text), array_agg(to_jsonb(i)))
	                                FROM generate_series(1, 100000) i`); err != nil {
		t.Fatal(err)
	}
	numberAll(t, s)
	if _, err := s.Pool.Exec(ctx, `VACUUM ANALYZE livepg.events`); err != nil {
		t.Fatal(err)
	}
	var exact, prefixes []string
	for i := range 32 {
		exact = append(exact, fmt.Sprintf("none%d/x", i))
		prefixes = append(prefixes, fmt.Sprintf("none%d/", i))
	}
	lo, hi := store.PrefixRanges(prefixes)
	var plan string
	if err := s.Pool.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+store.MatchingSQL,
		0, 100000, exact, lo, hi, 1000, int64(4<<20)).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	var parsed []struct {
		Plan struct {
			SharedHit  int `json:"Shared Hit Blocks"`
			SharedRead int `json:"Shared Read Blocks"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(plan), &parsed); err != nil || len(parsed) != 1 {
		t.Fatalf("plan: %v\n%s", err, plan)
	}
	// 64 selectors, a few index pages each; the log itself is ~700 pages
	// of heap and ~300 of each index.
	if pages := parsed[0].Plan.SharedHit + parsed[0].Plan.SharedRead; pages > 400 {
		t.Errorf("catch-up of 64 empty selectors touched %d pages:\n%s", pages, plan)
	}
	numberAll(t, s)
	events, err := s.ReadMatching(ctx, 99000, 100000, []string{"t/7", "t/17"}, []string{"t/", "t/1"}, 1000, 1<<30)
	if err != nil || len(events) != 1000 || events[0].Seq != 99001 || events[999].Seq != 100000 {
		t.Fatalf("overlapping selectors: %d events, %v", len(events), err)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Seq != events[i-1].Seq+1 {
			t.Fatalf("event %d has seq %d after %d", i, events[i].Seq, events[i-1].Seq)
		}
	}
}
