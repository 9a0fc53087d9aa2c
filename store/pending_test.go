package store_test

import (
	"context"
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
