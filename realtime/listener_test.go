package realtime_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// The listener's connection is killed again and again while writes go on,
// then kept out for a while: /readyz reports the outage while it lasts, and
// the stream ends with every event, in order, once.
//
// In the logical bus mode the node's replication connection (the decoding
// leader's) logs in as that role too, so each kill also cuts the decoder.
func TestListenerLossLosesNothing(t *testing.T) {
	t.Parallel()
	for _, bus := range storetest.Buses {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			testListenerLossLosesNothing(t, storetest.NewDatabaseBus(t, bus), false)
		})
	}
	t.Run(store.BusLogical, func(t *testing.T) {
		t.Parallel()
		db, _ := logicalDatabase(t)
		testListenerLossLosesNothing(t, db, true)
	})
}

func testListenerLossLosesNothing(t *testing.T, db string, logical bool) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	// The listener logs in as a role of its own, so the test can find its
	// backend and lock it out without touching the pool.
	var b [4]byte
	_, _ = rand.Read(b[:])
	role := "livepg_listener_" + hex.EncodeToString(b[:])
	quoted := pgx.Identifier{role}.Sanitize()
	attrs := "LOGIN"
	if logical {
		attrs += " REPLICATION"
	}
	if _, err := admin.Exec(ctx, `CREATE ROLE `+quoted+` `+attrs+` PASSWORD 'listener'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
		_, _ = conn.Exec(ctx, `DROP ROLE IF EXISTS `+quoted)
	})
	listenURL, _ := url.Parse(db)
	listenURL.User = url.UserPassword(role, "listener")

	// No slow timer: after a reconnect, only the listener's wake-up brings
	// the missed events.
	n := startNode(t, db, realtime.Config{
		ListenURL:         listenURL.String(),
		PollInterval:      time.Hour,
		ListenerPingAfter: 200 * time.Millisecond,
	})
	s := ssetest.Open(t, n.URL+"/v1/events?topic=l", "")

	writeCtx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for writeCtx.Err() == nil {
			var err error
			if logical {
				// Through SQL, which does not wait for the decoding leader
				// to number the event, as a store publish does.
				_, err = n.Store.Pool.Exec(ctx, `SELECT livepg.publish('l', 'null'::jsonb)`)
			} else {
				_, err = n.Store.Publish(ctx, "l", "message", nil)
			}
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	kill := func() {
		t.Helper()
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role); err != nil {
			t.Fatal(err)
		}
	}
	ready := func() bool {
		resp, err := http.Get(n.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	const kills = 5
	for range kills {
		before := metric(t, n.Node, "livepg_listener_reconnects_total")
		kill()
		waitFor(t, "listener reconnected", func() bool {
			return metric(t, n.Node, "livepg_listener_reconnects_total") > before && metric(t, n.Node, "livepg_listener_connected") == 1
		})
		time.Sleep(50 * time.Millisecond) // let some writes land on the new connection
	}

	// A longer outage: the role may not log in, so reconnects fail.
	if _, err := admin.Exec(ctx, `ALTER ROLE `+quoted+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	kill()
	waitFor(t, "/readyz reports the outage", func() bool { return !ready() })
	time.Sleep(200 * time.Millisecond) // writes go on during the outage
	if _, err := admin.Exec(ctx, `ALTER ROLE `+quoted+` LOGIN`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz recovers", ready)

	stopWriting()
	wg.Wait()
	var seqs []int64
	if logical {
		waitAllNumbered(t, n)
	} else {
		storetest.NumberPending(t, admin)
	}
	rows, err := admin.Query(ctx, `SELECT seq FROM livepg.events WHERE topic = 'l' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, s, seqs[len(seqs)-1])
	if len(got) != len(seqs) {
		t.Fatalf("received %d events, %d were committed", len(got), len(seqs))
	}
	for i, ev := range got {
		if ev.Seq() != seqs[i] {
			t.Fatalf("event %d: id %d, want %d", i, ev.Seq(), seqs[i])
		}
	}
	t.Logf("%d listener connections killed, one outage; %d events received in order, once", kills+1, len(got))
}
