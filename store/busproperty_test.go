package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// TestCommitTimestampsFollowNotifyOrder holds the PostgreSQL property that
// the commit_timestamp bus (migrations/00008_bus.sql) relies on: among
// transactions that NOTIFY, commit-timestamp order is visibility order,
// because PostgreSQL stamps the commit timestamp inside the cluster-wide
// lock NOTIFY holds from its queue append until the commit is visible
// (PreCommit_Notify .. ResourceOwnerRelease in xact.c). PostgreSQL does not
// document it: if a version changes it, this test fails.
//
// Sixteen writers commit rows, each transaction with a NOTIFY; a reader
// reads, over and over, the rows that became visible since its previous
// snapshot (a visibility window: rows whose xid was in progress at, or
// started after, the previous snapshot). Every window's smallest commit
// timestamp must be above the largest of all earlier windows, and every
// row must be read exactly once.
//
// The negative control runs the same writers without the NOTIFY: the check
// must then find windows out of commit-timestamp order (within a generous
// time limit), which proves that the check can fail and that the order
// comes from NOTIFY's lock.
func TestCommitTimestampsFollowNotifyOrder(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabaseBus(t, store.BusCommitTimestamp)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(db)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `
		CREATE TABLE q (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		                xid xid8 NOT NULL DEFAULT pg_current_xact_id(), notified boolean NOT NULL);
		CREATE INDEX ON q (xid)`); err != nil {
		t.Fatal(err)
	}

	with := windowCheck(t, pool, true, func(r windowResult) bool { return r.events >= 3000 }, 2*time.Minute)
	t.Logf("with NOTIFY: %d events in %d windows, %d out of order", with.events, with.windows, with.outOfOrder)
	if with.outOfOrder != 0 {
		t.Errorf("with NOTIFY, %d of %d windows were out of commit-timestamp order: PostgreSQL no longer stamps commit timestamps inside NOTIFY's lock, and the commit_timestamp bus is wrong on this version", with.outOfOrder, with.windows)
	}
	if with.windows < 50 {
		t.Errorf("with NOTIFY: only %d non-empty windows: the check saw too little concurrency to mean anything", with.windows)
	}

	without := windowCheck(t, pool, false, func(r windowResult) bool { return r.outOfOrder > 0 }, 3*time.Minute)
	t.Logf("without NOTIFY: %d events in %d windows, %d out of order", without.events, without.windows, without.outOfOrder)
	if without.outOfOrder == 0 {
		t.Errorf("without NOTIFY, %d events in %d windows and none out of commit-timestamp order: the check cannot tell", without.events, without.windows)
	}
}

type windowResult struct {
	events, windows, outOfOrder int
}

// windowCheck runs 16 writers (each transaction NOTIFYing or not) and one
// window reader until done says so or limit passes, then checks that every
// committed row was read exactly once.
func windowCheck(t *testing.T, pool *pgxpool.Pool, notify bool, done func(windowResult) bool, limit time.Duration) windowResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	insert := `INSERT INTO q (notified) VALUES (false)`
	if notify {
		insert = `WITH r AS (INSERT INTO q (notified) VALUES (true)) SELECT pg_notify('ctsprop', '')`
	}
	var writersErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := pool.Exec(ctx, insert); err != nil {
					if ctx.Err() == nil {
						writersErr.Store(&err)
					}
					return
				}
			}
		}()
	}

	var res windowResult
	seen := map[int64]bool{}
	var prevXip []string
	var prevXmax string
	if err := pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(s), ARRAY(SELECT pg_snapshot_xip(s))::text[]
	                                FROM pg_current_snapshot() s`).Scan(&prevXmax, &prevXip); err != nil {
		t.Fatal(err)
	}
	// Rows committed before the first snapshot are not read: count what the
	// windows must add up to from there.
	var before int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM q WHERE NOT (xid = ANY($1::xid8[]) OR xid >= $2::xid8)`,
		prevXip, prevXmax).Scan(&before); err != nil {
		t.Fatal(err)
	}
	var highest time.Time
	for !done(res) && ctx.Err() == nil {
		rows, err := pool.Query(ctx, `
			WITH s AS (SELECT pg_current_snapshot() AS snap)
			SELECT e.id, pg_xact_commit_timestamp(e.xmin), pg_snapshot_xmax(s.snap)::text,
			       ARRAY(SELECT pg_snapshot_xip(s.snap))::text[]
			  FROM s LEFT JOIN q e ON e.xid = ANY($1::xid8[]) OR e.xid >= $2::xid8`, prevXip, prevXmax)
		if err != nil {
			break
		}
		var lo, hi time.Time
		n := 0
		for rows.Next() {
			var id *int64
			var cts *time.Time
			if err := rows.Scan(&id, &cts, &prevXmax, &prevXip); err != nil {
				t.Fatal(err)
			}
			if id == nil {
				continue // an empty window
			}
			if seen[*id] {
				t.Fatalf("row %d read in two windows", *id)
			}
			seen[*id] = true
			n++
			if cts == nil {
				t.Fatalf("row %d has no commit timestamp (track_commit_timestamp off?)", *id)
			}
			if lo.IsZero() || cts.Before(lo) {
				lo = *cts
			}
			if cts.After(hi) {
				hi = *cts
			}
		}
		if err := rows.Err(); err != nil {
			if ctx.Err() != nil {
				break
			}
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		res.windows++
		res.events += n
		if !highest.IsZero() && !lo.After(highest) {
			res.outOfOrder++
		}
		if hi.After(highest) {
			highest = hi
		}
	}
	close(stop)
	wg.Wait()
	if errp := writersErr.Load(); errp != nil && !errors.Is(*errp, context.DeadlineExceeded) {
		t.Fatalf("writer: %v", *errp)
	}
	// Every row committed after the first snapshot was read once: read the
	// last window, with the writers stopped.
	rest, err := pool.Query(context.Background(), `SELECT id FROM q WHERE xid = ANY($1::xid8[]) OR xid >= $2::xid8`, prevXip, prevXmax)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rest, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("row %d read twice", id)
		}
		seen[id] = true
	}
	var total int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM q`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total-before != len(seen) {
		t.Fatalf("%d rows committed after the first snapshot, %d read: the windows missed rows", total-before, len(seen))
	}
	if _, err := pool.Exec(context.Background(), `TRUNCATE q`); err != nil {
		t.Fatal(err)
	}
	return res
}
