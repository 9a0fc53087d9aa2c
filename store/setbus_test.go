package store_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// TestSwitchingTheBusWaitsForANumberingStep: a switch of the bus mode
// (livepg.set_bus) that begins while a node's numbering step holds the
// numbering lock waits for the step, and both succeed. (With the tables
// locked first, as before migration 00014, the step then waited for the
// tables while the switch waited for the step: PostgreSQL broke the
// deadlock after a second by failing one of them.)
func TestSwitchingTheBusWaitsForANumberingStep(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The default mode whatever LIVEPG_TEST_BUS says: its numbering steps
	// run on the nodes.
	settings := maps.Clone(storetest.LogicalSettings)
	settings["track_commit_timestamp"] = "on"
	db := storetest.NewDatabaseOn(t, storetest.NewClusterWith(t, settings).URL())
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if mode, err := s.BusMode(ctx); err != nil || mode != store.BusCommitTimestamp {
		t.Fatalf("bus mode %q, %v; want %s", mode, err, store.BusCommitTimestamp)
	}
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish('t/1', '1')`); err != nil {
		t.Fatal(err)
	}

	// A numbering step, held open after it took the numbering lock, as
	// each step does first.
	step, err := s.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer step.Rollback(context.Background())
	if _, err := step.Exec(ctx, `SELECT pg_advisory_xact_lock(7236828372618428007)`); err != nil {
		t.Fatal(err)
	}
	switched := make(chan error, 1)
	go func() {
		_, err := s.SetBus(ctx, store.BusLogical)
		switched <- err
	}()
	// The switch is waiting for a lock.
	for {
		var waiting bool
		if err := s.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE query LIKE '%livepg.set_bus%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid())`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-switched:
			t.Fatalf("the switch finished while a numbering step held the numbering lock: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The step goes on to the tables: it numbers the pending event.
	var numbered int
	if err := step.QueryRow(ctx, `SELECT livepg.number_visible(NULL)`).Scan(&numbered); err != nil {
		t.Fatalf("the numbering step, with a switch waiting: %v", err)
	}
	if err := step.Commit(ctx); err != nil {
		t.Fatalf("the numbering step's commit: %v", err)
	}
	if numbered != 1 {
		t.Errorf("the step numbered %d events, want 1", numbered)
	}
	if err := <-switched; err != nil {
		t.Fatalf("the switch, after the step: %v", err)
	}
	if mode, err := s.BusMode(ctx); err != nil || mode != store.BusLogical {
		t.Fatalf("bus mode %q, %v after the switch; want %s", mode, err, store.BusLogical)
	}
	var logged, pending int
	if err := s.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM livepg.events), (SELECT count(*) FROM livepg.pending)`).Scan(&logged, &pending); err != nil {
		t.Fatal(err)
	}
	if logged != 1 || pending != 0 {
		t.Errorf("after the switch: %d events in the log, %d pending; want 1 and 0", logged, pending)
	}
}
