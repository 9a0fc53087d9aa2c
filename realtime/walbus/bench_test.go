package walbus_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkLogicalBus is BenchmarkBus (store) for the logical mode: writes
// to a tracked table and livepg.publish, with the bus in the logical mode
// and a decoding leader numbering everything as it comes, against plain
// INSERT transactions and INSERT+NOTIFY transactions on the same server, at
// 1, 4, 16 and 64 writers, synchronous_commit on and off. A durable
// cluster of its own (fsync on), wal_level=logical. The target (issue 14):
// tracked >= 0.8x insert at 16 writers. LIVEPG_BENCH_LEADER=off runs no
// decoding leader (nothing is numbered): the writers' side alone.
//
//	go test ./realtime/walbus -run '^$' -bench BenchmarkLogicalBus -benchtime 5s
func BenchmarkLogicalBus(b *testing.B) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "livepg-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cluster, err := localpg.Start(ctx, dir, localpg.Options{Settings: map[string]string{
		"max_connections":       "200",
		"shared_buffers":        "256MB",
		"wal_level":             "logical",
		"max_replication_slots": "4",
		"max_wal_senders":       "4",
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Stop(ctx)
	url := storetest.NewDatabaseOn(b, cluster.URL())
	s, err := store.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.SetBus(ctx, store.BusLogical); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `
		CREATE TABLE plain_events (id bigserial PRIMARY KEY, topic text NOT NULL, data jsonb NOT NULL);
		CREATE TABLE cards (id bigserial PRIMARY KEY, board_id int NOT NULL, title text NOT NULL);
		SELECT livepg.track('cards', 'boards/{board_id}');`); err != nil {
		b.Fatal(err)
	}
	d, err := walbus.New(walbus.Config{URL: url, Handler: realtime.DecodeHandler(s, nil),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.Fatal(err)
	}
	leader := os.Getenv("LIVEPG_BENCH_LEADER") != "off"
	if leader {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = d.Run(runCtx) }()
		defer func() { stop(); <-done }()
		for !d.Leader() {
			time.Sleep(10 * time.Millisecond)
		}
	}

	kinds := []struct{ name, sql string }{
		{"insert", `INSERT INTO plain_events (topic, data) VALUES ('bench/1', '{"n": 1}')`},
		{"tracked", `INSERT INTO cards (board_id, title) VALUES (42, 'card')`},
		{"publish", `SELECT livepg.publish('bench/1', '{"n": 1}')`},
		{"insert+notify", `WITH e AS (INSERT INTO plain_events (topic, data) VALUES ('bench/1', '{"n": 1}')) SELECT pg_notify('bench', '')`},
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
				b.Run(fmt.Sprintf("sync=%s/writers=%d/%s", sync, writers, kind.name), func(b *testing.B) {
					_, before, _ := d.Stats()
					runWriters(b, pool, writers, kind.sql)
					b.StopTimer()
					if !leader {
						return
					}
					// The leader keeps up: what was written gets numbered
					// (not timed).
					for {
						var pending int
						if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM livepg.pending`).Scan(&pending); err != nil {
							b.Fatal(err)
						}
						if pending == 0 {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
					_, after, _ := d.Stats()
					b.ReportMetric(float64(after-before)/float64(b.N), "numbered/tx")
				})
			}
			pool.Close()
		}
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
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := pool.Exec(ctx, sql); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tx/s")
}
