package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// logged reads the log: data by seq, and how many transactions wrote it.
func logged(t *testing.T, s *store.Store) (map[int64]string, int) {
	t.Helper()
	ctx := context.Background()
	rows, err := s.Pool.Query(ctx, `SELECT seq, data::text FROM livepg.events`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	bySeq := map[int64]string{}
	for rows.Next() {
		var seq int64
		var data string
		if err := rows.Scan(&seq, &data); err != nil {
			t.Fatal(err)
		}
		bySeq[seq] = data
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var txs int
	if err := s.Pool.QueryRow(ctx, `SELECT count(DISTINCT xmin::text) FROM livepg.events`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	return bySeq, txs
}

func TestPublishBatchCommitsOnceAndAnswersEachSeq(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t)
	var events []store.NewEvent
	for i := range 50 {
		events = append(events, store.NewEvent{Topic: fmt.Sprintf("b/%d", i%3), Type: "message", Data: fmt.Appendf(nil, `{"i": %d}`, i)})
	}
	seqs, errs, err := s.PublishBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	log, txs := logged(t, s)
	if len(log) != len(events) || txs != 1 {
		t.Fatalf("log holds %d events from %d transactions, want %d from 1", len(log), txs, len(events))
	}
	for i, seq := range seqs {
		if errs[i] != nil {
			t.Fatalf("event %d: %v", i, errs[i])
		}
		if i > 0 && seq <= seqs[i-1] {
			t.Fatalf("seqs out of order: %v", seqs)
		}
		if want := fmt.Sprintf(`{"i": %d}`, i); log[seq] != want {
			t.Fatalf("seq %d holds %s, want %s", seq, log[seq], want)
		}
	}
}

func TestPublishBatchLeavesOutRefusedEventsAlone(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t)
	events := []store.NewEvent{
		{Topic: "b/1", Type: "message", Data: []byte(`{"i": 0}`)},
		{Topic: "b/1", Type: "message", Data: []byte(`{"s": "\u0000"}`)}, // valid JSON, refused by jsonb
		{Topic: "b/1", Type: "message", Data: []byte(`{"i": 2}`)},
		{Topic: "not a topic", Type: "message", Data: []byte(`{"i": 3}`)},
		{Topic: "b/2", Type: "message", Data: nil},
	}
	seqs, errs, err := s.PublishBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 3} {
		if !errors.Is(errs[i], store.ErrInvalid) || seqs[i] != 0 {
			t.Errorf("event %d: seq %d, err %v; want ErrInvalid", i, seqs[i], errs[i])
		}
	}
	log, txs := logged(t, s)
	want := map[int]string{0: `{"i": 0}`, 2: `{"i": 2}`, 4: `null`}
	if len(log) != len(want) || txs != 1 {
		t.Fatalf("log holds %d events from %d transactions, want %d from 1: %v", len(log), txs, len(want), log)
	}
	for i, data := range want {
		if errs[i] != nil || log[seqs[i]] != data {
			t.Errorf("event %d: seq %d holds %q (err %v), want %q", i, seqs[i], log[seqs[i]], errs[i], data)
		}
	}
}

// livepg.publish_batch, called from SQL, refuses bad input with an SQL
// error and records nothing; good input gets consecutive seqs, in order,
// and a notification.
func TestPublishBatchSQLRefusesBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	cases := []struct {
		name, sql string
		code      string
	}{
		{"lengths differ", `SELECT livepg.publish_batch(ARRAY['a','b'], ARRAY['message'], ARRAY['1','2']::jsonb[])`, "22023"},
		{"NULL types", `SELECT livepg.publish_batch(ARRAY['a'], NULL, ARRAY['1']::jsonb[])`, "22023"},
		{"bad topic", `SELECT livepg.publish_batch(ARRAY['a','no spaces'], ARRAY['message','message'], ARRAY['1','2']::jsonb[])`, "23514"},
		{"bad type", `SELECT livepg.publish_batch(ARRAY['a'], ARRAY['no spaces'], ARRAY['1']::jsonb[])`, "23514"},
		{"NULL topic", `SELECT livepg.publish_batch(ARRAY['a', NULL], ARRAY['message','message'], ARRAY['1','2']::jsonb[])`, "23502"},
	}
	for _, c := range cases {
		_, err := s.Pool.Exec(ctx, c.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != c.code {
			t.Errorf("%s: err %v, want SQLSTATE %s", c.name, err, c.code)
		}
	}
	if log, _ := logged(t, s); len(log) != 0 {
		t.Fatalf("refused batches left %d events", len(log))
	}

	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN livepg`); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Pool.Query(ctx, `SELECT id FROM livepg.publish_many(ARRAY['a','b','c'], ARRAY['x','y','z'], ARRAY['1','2',NULL]::jsonb[]) ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	numberAll(t, s)
	rows, err = s.Pool.Query(ctx, `SELECT seq FROM livepg.events WHERE id = ANY($1) ORDER BY id`, ids)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 3 || seqs[1] != seqs[0]+1 || seqs[2] != seqs[1]+1 {
		t.Fatalf("seqs %v, want three consecutive", seqs)
	}
	log, _ := logged(t, s)
	for i, want := range []string{"1", "2", "null"} {
		if log[seqs[i]] != want {
			t.Errorf("seq %d holds %q, want %q", seqs[i], log[seqs[i]], want)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := conn.Conn().WaitForNotification(waitCtx); err != nil {
		t.Fatalf("no notification: %v", err)
	}
}
