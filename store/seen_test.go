package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// TestSeenInSnapshotLooksNoFurtherThanItsBound: resolving a page's
// position (the logical bus mode's '<seq>~<snapshot>') returns the events
// after seq that the page's snapshot saw, and reads at most
// store.MaxSeenScan events to find them: a position further behind is
// refused with ErrTooFarBehind (its stream resets) instead of making the
// node walk the log from an old seq.
func TestSeenInSnapshotLooksNoFurtherThanItsBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	var snap string
	if err := s.Pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		t.Fatal(err)
	}
	// Rows as the decoding leader leaves them, numbered: seqs 1-3 written
	// by a transaction the page's snapshot saw (an old xid), then
	// MaxSeenScan rows by this one, which it did not.
	if _, err := s.Pool.Exec(ctx, `
		INSERT INTO livepg.events (seq, topic, type, data, committed_at, writer_xid)
		SELECT g, 't', 'message', '1', now(), CASE WHEN g <= 3 THEN '3'::xid8 ELSE pg_current_xact_id() END
		  FROM generate_series(1, $1::bigint + 3) AS g`, store.MaxSeenScan); err != nil {
		t.Fatal(err)
	}
	seen, err := s.SeenInSnapshot(ctx, 1, snap)
	if err == nil || !errors.Is(err, store.ErrTooFarBehind) {
		t.Errorf("after seq 1 (MaxSeenScan+2 events behind): %d seqs, %v; want ErrTooFarBehind", len(seen), err)
	}
	seen, err = s.SeenInSnapshot(ctx, 0, snap)
	if !errors.Is(err, store.ErrTooFarBehind) {
		t.Errorf("after seq 0: %d seqs, %v; want ErrTooFarBehind", len(seen), err)
	}
	// Exactly MaxSeenScan events after seq 3: resolved (none seen).
	seen, err = s.SeenInSnapshot(ctx, 3, snap)
	if err != nil || len(seen) != 0 {
		t.Errorf("after seq 3: %v, %v; want no seqs, no error", seen, err)
	}
	// Move the bulk past the scan: seqs 1-3 are seen, 2 and 3 after seq 1.
	if _, err := s.Pool.Exec(ctx, `DELETE FROM livepg.events WHERE seq > 103`); err != nil {
		t.Fatal(err)
	}
	seen, err = s.SeenInSnapshot(ctx, 1, snap)
	if err != nil || !slices.Equal(seen, []int64{2, 3}) {
		t.Errorf("after seq 1 with 102 events after it: %v, %v; want [2 3]", seen, err)
	}
}
