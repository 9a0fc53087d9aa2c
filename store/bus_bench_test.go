package store_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkBus measures committed event transactions per second through
// livepg.publish and through a write to a tracked table, back to back with
// plain transactions that insert a row and NOTIFY (before and after them,
// so that a drift of the machine shows) and, for reference, plain inserts
// without NOTIFY, at 1, 4, 16 and 64 concurrent writers, with
// synchronous_commit on and off. It runs on a durable cluster of its own
// (fsync on), since a commit's flush is what NOTIFY's commit lock
// serialises, in the bus mode LIVEPG_BENCH_BUS names (commit_timestamp, the
// default, or commit_lock: migrations/00008_bus.sql). One numberer runs
// throughout, as a node would: on each notification it numbers the pending
// events and reads them in one round trip (store.ReadNext), so that the cost the
// commit_timestamp mode moves off the writers' commits is in the figures.
//
//	go test ./store -run '^$' -bench BenchmarkBus -benchtime 5s
//	LIVEPG_BENCH_BUS=commit_lock go test ./store -run '^$' -bench BenchmarkBus -benchtime 5s
func BenchmarkBus(b *testing.B) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "livepg-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bus := os.Getenv("LIVEPG_BENCH_BUS")
	if bus == "" {
		bus = store.BusCommitTimestamp
	}
	commitTimestamps := "on"
	if bus == store.BusCommitLock {
		commitTimestamps = "off"
	}
	settings := map[string]string{
		"max_connections":        "200",
		"shared_buffers":         "256MB",
		"track_commit_timestamp": commitTimestamps,
	}
	statements := os.Getenv("LIVEPG_BENCH_STATEMENTS") != ""
	if statements {
		settings["shared_preload_libraries"] = "pg_stat_statements"
		settings["pg_stat_statements.track"] = "all"
	}
	cluster, err := localpg.Start(ctx, dir, localpg.Options{Settings: settings})
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Stop(ctx)
	url := storetest.NewDatabaseOn(b, cluster.URL())

	setup, err := store.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer setup.Close()
	for _, sql := range append([]string{
		`CREATE TABLE plain_events (id bigserial PRIMARY KEY, topic text NOT NULL, data jsonb NOT NULL)`,
		`CREATE TABLE cards (id bigserial PRIMARY KEY, board_id int NOT NULL, title text NOT NULL)`,
		`SELECT livepg.track('cards', 'boards/{board_id}')`,
	}, benchSetupSQL()...) {
		if _, err := setup.Pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	if got, err := setup.BusMode(ctx); err != nil || got != bus {
		b.Fatalf("bus mode %q, %v; want %s", got, err, bus)
	}
	// LIVEPG_BENCH_NUMBERER: off (no numberer: the writers' upper bound),
	// async (numbering commits without waiting for its flush), or the
	// nodes' numbering step (the default).
	if os.Getenv("LIVEPG_BENCH_NUMBERER") != "off" {
		stopNumberer := startNumberer(b, url)
		defer stopNumberer()
	}

	kinds := []struct{ name, sql string }{
		{"insert+notify", `WITH e AS (INSERT INTO plain_events (topic, data) VALUES ('bench/1', '{"n": 1}')) SELECT pg_notify('bench', '')`},
		{"publish", `SELECT livepg.publish('bench/1', '{"n": 1}')`},
		{"tracked", `INSERT INTO cards (board_id, title) VALUES (42, 'card')`},
		{"insert+notify_after", `WITH e AS (INSERT INTO plain_events (topic, data) VALUES ('bench/1', '{"n": 1}')) SELECT pg_notify('bench', '')`},
		{"insert", `INSERT INTO plain_events (topic, data) VALUES ('bench/1', '{"n": 1}')`},
	}
	// LIVEPG_BENCH_KINDS adds kinds of transaction, name=sql separated by
	// "|": a way to time a variant of the write path beside the others.
	for _, kind := range strings.Split(os.Getenv("LIVEPG_BENCH_KINDS"), "|") {
		if name, sql, ok := strings.Cut(kind, "="); ok {
			kinds = append(kinds, struct{ name, sql string }{strings.TrimSpace(name), sql})
		}
	}
	for _, sync := range []string{"on", "off"} {
		for _, writers := range []int{1, 4, 16, 64} {
			cfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				b.Fatal(err)
			}
			cfg.MaxConns = int32(writers)
			cfg.MinConns = int32(writers)
			cfg.ConnConfig.RuntimeParams["synchronous_commit"] = sync
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			for _, kind := range kinds {
				b.Run(fmt.Sprintf("bus=%s/sync=%s/writers=%d/%s", bus, sync, writers, kind.name), func(b *testing.B) {
					if os.Getenv("LIVEPG_BENCH_WAITS") != "" {
						defer sampleWaits(b, setup, kind.sql)()
						// The numberer's step, when it runs alone.
						defer sampleWaits(b, setup, `SELECT numbered FROM livepg.number_pending(10000)`)()
					}
					if statements {
						defer logStatements(b, url)()
					}
					runWriters(b, pool, writers, kind.sql)
				})
			}
			pool.Close()
		}
	}
}

// startNumberer runs what a node does on the database's side while the
// benchmark writes: on each notification on livepg's channel, number the
// pending events and read them after its head (store.ReadNext).
// benchSetupSQL is more setup, from LIVEPG_BENCH_SETUP_SQL (statements
// separated by semicolons): a way to try a change to the schema.
func benchSetupSQL() []string {
	var out []string
	if f := os.Getenv("LIVEPG_BENCH_SETUP_FILE"); f != "" {
		sql, err := os.ReadFile(f)
		if err != nil {
			panic(err)
		}
		out = append(out, string(sql))
	}
	for _, s := range strings.Split(os.Getenv("LIVEPG_BENCH_SETUP_SQL"), ";") {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// benchPause, from LIVEPG_BENCH_PAUSE, replaces store.NumberingPause with
// a fixed pause after each step that numbered events.
var benchPause = func() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("LIVEPG_BENCH_PAUSE"))
	return d
}()

func startNumberer(b *testing.B, url string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	listen, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := listen.Exec(ctx, `LISTEN `+store.NotifyChannel); err != nil {
		b.Fatal(err)
	}
	// What a node's reader does on each wake-up: number and read in one
	// round trip (store.ReadNext).
	var head int64
	var epoch string
	number := func(ctx context.Context) (int, error) {
		numbered := 0
		for {
			next, err := st.ReadNext(ctx, true, epoch, head, 1000, 4<<20)
			if err != nil {
				return numbered, err
			}
			numbered += next.Numbered
			epoch = next.Epoch
			if n := len(next.Events); n > 0 {
				head = next.Events[n-1].Seq
			}
			if !next.More {
				return numbered, nil
			}
		}
	}
	if os.Getenv("LIVEPG_BENCH_NUMBERER") == "read" {
		// Reads only (nothing numbered, nothing to read): the read's cost.
		number = func(ctx context.Context) (int, error) {
			_, err := st.ReadNext(ctx, false, epoch, head, 1000, 4<<20)
			return 0, err
		}
	}
	if os.Getenv("LIVEPG_BENCH_NUMBERER") == "number" {
		// Numbering only, no read.
		number = func(ctx context.Context) (int, error) {
			var n int
			err := st.Pool.QueryRow(ctx, `SELECT numbered FROM livepg.number_pending(10000)`).Scan(&n)
			return n, err
		}
	}
	if os.Getenv("LIVEPG_BENCH_NUMBERER") == "listen" {
		// Only the LISTEN connection: what hearing the notifications costs.
		number = func(ctx context.Context) (int, error) { return 0, nil }
	}
	if os.Getenv("LIVEPG_BENCH_NUMBERER") == "async" {
		// What durability costs: the same numbering, committed without
		// waiting for its flush (not what nodes do: see number_pending).
		number = func(ctx context.Context) (int, error) {
			var numbered int
			err := pgx.BeginFunc(ctx, st.Pool, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT set_config('synchronous_commit', 'off', true),
					pg_advisory_xact_lock(7236828372618428007), livepg.check_epoch(),
					livepg.number_visible(10000)`).Scan(nil, nil, nil, &numbered)
			})
			if err != nil {
				return 0, err
			}
			for {
				events, err := st.ReadAfter(ctx, head, 1000, 4<<20)
				if err != nil || len(events) == 0 {
					return numbered, err
				}
				head = events[len(events)-1].Seq
			}
		}
	}
	// Notifications are wake-ups, coalesced as a node's are: one numbering
	// and read per wake-up however many arrived meanwhile.
	wake := make(chan struct{}, 1)
	heard := make(chan struct{})
	go func() {
		defer close(heard)
		for {
			if _, err := listen.WaitForNotification(ctx); err != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
			if busy := os.Getenv("LIVEPG_BENCH_LISTEN_BUSY"); busy != "" {
				// Keep the listening backend busy for a while after each
				// notification: it reads the queue and sends what came
				// meanwhile once, after the query, instead of once per
				// commit.
				if _, err := listen.Exec(ctx, `SELECT pg_sleep(`+busy+`)`); err != nil {
					return
				}
				for {
					wctx, cancel := context.WithTimeout(ctx, 0)
					_, err := listen.WaitForNotification(wctx)
					cancel()
					if err != nil {
						break
					}
				}
			}
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			numbered, err := number(ctx)
			if err != nil {
				if ctx.Err() == nil {
					b.Error(err)
				}
				return
			}
			// As the node's reader: a pause while writers commit.
			if benchPause > 0 && numbered > 0 {
				time.Sleep(benchPause)
			} else {
				time.Sleep(store.NumberingPause(numbered))
			}
		}
	}()
	return func() {
		cancel()
		<-done
		<-heard
		listen.Close(context.Background())
		st.Close()
	}
}

// logStatements resets pg_stat_statements and, when the returned function
// is called, logs the statements that took the most time since:
// LIVEPG_BENCH_STATEMENTS=1.
func logStatements(b *testing.B, url string) (stop func()) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()`); err != nil {
		b.Fatal(err)
	}
	return func() {
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `SELECT total_exec_time, calls, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
			FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var ms float64
			var calls int64
			var q string
			if err := rows.Scan(&ms, &calls, &q); err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(os.Stderr, "%s N=%d: %9.1f ms %8d calls %7.1f µs/call  %s\n", b.Name(), b.N, ms, calls, 1000*ms/float64(max(calls, 1)), q)
		}
	}
}

// sampleWaits samples, every millisecond until the returned function is
// called, what the backends running sql are waiting on (pg_stat_activity's
// wait_event_type:wait_event; "running" when none: on a CPU or waiting for
// one), and then logs each state's share of the samples: where the writers'
// time goes, Postgres' side of a profile. LIVEPG_BENCH_WAITS=1 turns it on.
func sampleWaits(b *testing.B, s *store.Store, sql string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	counts := map[string]int{}
	total := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, err := s.Pool.Query(ctx, `
				SELECT coalesce(wait_event_type || ':' || wait_event, 'running')
				  FROM pg_stat_activity WHERE query = $1 AND state = 'active'`, sql)
			if err != nil {
				return
			}
			for rows.Next() {
				var w string
				if rows.Scan(&w) == nil {
					counts[w]++
					total++
				}
			}
			rows.Close()
		}
	}()
	return func() {
		cancel()
		<-done
		type share struct {
			wait string
			n    int
		}
		var shares []share
		for w, n := range counts {
			shares = append(shares, share{w, n})
		}
		slices.SortFunc(shares, func(a, b share) int { return b.n - a.n })
		var out []string
		for _, sh := range shares[:min(6, len(shares))] {
			out = append(out, fmt.Sprintf("%s %.0f%%", sh.wait, 100*float64(sh.n)/float64(max(total, 1))))
		}
		b.Logf("waits (%d samples): %s", total, strings.Join(out, ", "))
	}
}

// runWriters commits b.N single-statement transactions from writers
// goroutines and reports transactions per second.
func runWriters(b *testing.B, pool *pgxpool.Pool, writers int, sql string) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := pool.Exec(ctx, sql); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tx/s")
}
