package pglisten_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/pglisten"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkListenerDrain: how fast a listener drains the cluster's
// notification queue, in ns per notification received and handed to its
// handler (sent in commits of 10,000).
//
//	go test -run '^$' -bench ListenerDrain ./realtime/pglisten
func BenchmarkListenerDrain(b *testing.B) {
	ctx := context.Background()
	db := storetest.NewDatabase(b)
	var handled atomic.Int64
	l := pglisten.New(pglisten.Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, db) },
		Channel: "chan",
		Handle: func(p string) {
			if p != "" {
				handled.Add(1)
			}
		},
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(rctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	for !l.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	sender, err := pgx.Connect(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	defer sender.Close(ctx)
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(10_000, b.N-sent)
		if _, err := sender.Exec(ctx, `SELECT pg_notify('chan', g::text) FROM generate_series(1, $1) g`, n); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	for handled.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
}
