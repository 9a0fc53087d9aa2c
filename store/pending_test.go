package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// TestNumberingMovesPendingEventsIntoTheLogOnce: in the commit_timestamp
// mode an event waits in livepg.pending, not in the log, until a node
// numbers it; the numbering moves it into the log with its id, its size
// and its commit time, in commit order (here the reverse of the order the
// transactions began and wrote in), once: numbering again moves nothing.
// In the commit_lock mode (LIVEPG_TEST_BUS=commit_lock) events are
// numbered in the log at commit and nothing waits.
func TestNumberingMovesPendingEventsIntoTheLogOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	mode, err := s.BusMode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := func(table string) int {
		t.Helper()
		var n int
		if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.`+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Two transactions write in one order and commit in the other.
	var ids []int64
	txs := make([]pgx.Tx, 2)
	for i, topic := range []string{"t/first-written", "t/second-written"} {
		tx, err := s.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		var id int64
		if err := tx.QueryRow(ctx, `SELECT livepg.publish($1, '{"n": 1}')`, topic).Scan(&id); err != nil {
			t.Fatal(err)
		}
		txs[i], ids = tx, append(ids, id)
	}
	for _, i := range []int{1, 0} {
		if err := txs[i].Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var third int64
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.publish('t/third', '{"n": 3}')`).Scan(&third); err != nil {
		t.Fatal(err)
	}
	wantIDs := []int64{ids[1], ids[0], third}

	if mode == store.BusCommitTimestamp {
		if inLog, pending := count("events"), count("pending"); inLog != 0 || pending != 3 {
			t.Fatalf("before numbering: %d events in the log, %d pending; want 0 and 3", inLog, pending)
		}
		var head string
		if err := s.Pool.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head); err != nil {
			t.Fatal(err)
		}
		if want := "0.3-"; len(head) < len(want) || head[:len(want)] != want {
			t.Errorf("head() = %q, want it to skip the 3 pending events (%s...)", head, want)
		}
	}
	if _, err := s.NumberPending(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.NumberPending(ctx); err != nil || n != 0 {
		t.Errorf("numbering again numbered %d, %v; want 0", n, err)
	}
	if pending := count("pending"); pending != 0 {
		t.Errorf("after numbering %d events still pending", pending)
	}
	rows, err := s.Pool.Query(ctx, `SELECT id, seq, size, committed_at IS NOT NULL FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []int64
	var prev int64
	for rows.Next() {
		var id, seq int64
		var size *int
		var stamped bool
		if err := rows.Scan(&id, &seq, &size, &stamped); err != nil {
			t.Fatal(err)
		}
		if seq <= prev || size == nil || *size != 8 || !stamped {
			t.Errorf("event %d: seq %d after %d, size %v, committed_at set %v", id, seq, prev, size, stamped)
		}
		prev = seq
		gotIDs = append(gotIDs, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("the log holds ids %v in seq order, want %v (commit order, each once)", gotIDs, wantIDs)
	}
}

// TestNumberingFloorRisesButNeverPassesAWaitingEvent: the numbering reads
// livepg.pending from a floor up (migration 00015). Steps that move every
// committed event they see raise the floor past the transactions that
// have finished, so that the rows they left behind are not read again;
// a transaction still open holds the floor at or below its own xid
// however many steps pass, so its event, committed last, is numbered.
func TestNumberingFloorRisesButNeverPassesAWaitingEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The floor is the commit_timestamp mode's, whatever LIVEPG_TEST_BUS
	// says; and a cluster of its own: xids are the cluster's, and another
	// test's transaction open meanwhile would hold the floor down too.
	s, err := store.Open(ctx, storetest.NewDatabaseOn(t, storetest.NewClusterWith(t, map[string]string{"track_commit_timestamp": "on"}).URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	floor := func() uint64 {
		t.Helper()
		var f uint64
		if err := s.Pool.QueryRow(ctx, `SELECT pending_floor::text::bigint FROM livepg.bus`).Scan(&f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	publish := func(topic string) {
		t.Helper()
		if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish($1, '{}')`, topic); err != nil {
			t.Fatal(err)
		}
	}

	publish("t/before")
	numberAll(t, s)
	start := floor()

	long, err := s.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback(ctx)
	var longXid uint64
	if err := long.QueryRow(ctx, `SELECT livepg.publish('t/long', '{}'), pg_current_xact_id()::text::bigint`).Scan(nil, &longXid); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publish(fmt.Sprintf("t/%d", i))
		numberAll(t, s)
	}
	if f := floor(); f <= start || f > longXid {
		t.Fatalf("floor %d after five steps with a transaction open at xid %d (it was %d): want above %d, at most %d", f, longXid, start, start, longXid)
	}
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	publish("t/after")
	numberAll(t, s)
	if f := floor(); f <= longXid {
		t.Errorf("floor %d after the open transaction (xid %d) committed and was numbered: want above it", f, longXid)
	}
	events, err := s.ReadAfter(ctx, 0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, e := range events {
		topics = append(topics, e.Topic)
	}
	want := []string{"t/before", "t/0", "t/1", "t/2", "t/3", "t/4", "t/long", "t/after"}
	if !slices.Equal(topics, want) {
		t.Fatalf("the log holds %v, want %v", topics, want)
	}
	var pending int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.pending`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("%d events still pending (%v)", pending, err)
	}
}
