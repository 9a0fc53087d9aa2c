package store_test

import (
	"context"
	"testing"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// The first numbering after a restart, a restore or a promotion may well be
// a livepg.publish_batch's (HTTP publishes go through it), which numbers its
// rows itself in commit_lock mode, without the commit trigger, or a node's
// numbering step in commit_timestamp mode: it must begin the new server
// lifetime's epoch as the trigger does, or its seqs would be numbered in
// the old history, where a restored or promoted server reuses the numbers
// of events it lost.
func TestPublishBatchBeginsTheEpochOfANewServerLifetime(t *testing.T) {
	t.Parallel()
	for _, bus := range storetest.Buses {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			testNumberingBeginsTheEpoch(t, bus)
		})
	}
}

func testNumberingBeginsTheEpoch(t *testing.T, bus string) {
	ctx := context.Background()
	cluster := storetest.NewClusterBus(t, bus)
	db := storetest.NewDatabaseOn(t, cluster.URL())
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Publish(ctx, "a", "message", []byte("1")); err != nil {
		t.Fatal(err)
	}
	before, err := s.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	s.Pool.Reset() // the old connections died with the server

	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish_batch(ARRAY['a'], ARRAY['message'], ARRAY['2'::jsonb])`); err != nil {
		t.Fatal(err)
	}
	numberAll(t, s)
	after, err := s.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch == before.Epoch {
		t.Fatalf("after a restart, publish_batch numbered seq %d in the old epoch %s", after.Head, before.Epoch)
	}
	var parent string
	var forkedAfter int64
	if err := s.Pool.QueryRow(ctx, `SELECT parent, forked_after FROM livepg.epochs WHERE epoch = $1`, after.Epoch).Scan(&parent, &forkedAfter); err != nil {
		t.Fatal(err)
	}
	if parent != before.Epoch || forkedAfter != before.Head {
		t.Fatalf("new epoch forked from %s after %d, want from %s after %d", parent, forkedAfter, before.Epoch, before.Head)
	}
}
