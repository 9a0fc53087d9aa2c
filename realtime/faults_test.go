package realtime_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// writeUntil publishes on topic from writers goroutines, retrying failed
// writes as an application would, until stop is called. Which events really
// committed is read from the log afterwards: a write that failed at commit
// may or may not have.
func writeUntil(t *testing.T, db, topic string, writers int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				_, err := pool.Exec(ctx, `SELECT livepg.publish($1, $2)`, topic, fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			pool.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// committed reads the seqs of every committed event on topic.
func committed(t *testing.T, db, topic string) []int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	storetest.NumberPending(t, conn)
	rows, err := conn.Query(ctx, `SELECT seq FROM livepg.events WHERE topic = $1 ORDER BY seq`, topic)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) == 0 {
		t.Fatal("nothing was committed")
	}
	return seqs
}

func ready(t *testing.T, n *testNode) bool {
	t.Helper()
	resp, err := http.Get(n.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// PostgreSQL stops in the middle of the stream and comes back (in both bus
// modes, migrations/00008_bus.sql, with the default window of the log and a
// tiny one): both nodes' pools and listeners recover by themselves, /readyz
// shows the outage, and every subscriber ends with exactly the committed
// events, in order, once; followers resume from the window or from the log.
func TestPostgresRestartLosesNothing(t *testing.T) {
	t.Parallel()
	forEachBusAndWindow(t, testPostgresRestartLosesNothing)
}

func testPostgresRestartLosesNothing(t *testing.T, bus string, window int64) {
	ctx := context.Background()
	cluster := storetest.NewClusterBus(t, bus)
	db := storetest.NewDatabaseOn(t, cluster.URL())
	cfg := realtime.Config{PollInterval: 500 * time.Millisecond, ListenerPingAfter: 200 * time.Millisecond, Window: window}
	a, b := startNode(t, db, cfg), startNode(t, db, cfg)
	nodes := []string{a.URL, b.URL}
	followers := []*ssetest.Follower{
		ssetest.Follow(t, nodes, "/v1/events?topic=pg", logHead(t, db)),
		ssetest.Follow(t, []string{b.URL, a.URL}, "/v1/events?topic=pg", logHead(t, db)),
	}
	waitFor(t, "streams open", func() bool { return followers[0].Connected() && followers[1].Connected() })

	stop := writeUntil(t, db, "pg", 4)
	time.Sleep(300 * time.Millisecond)
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz reports the outage", func() bool { return !ready(t, a) && !ready(t, b) })
	time.Sleep(time.Second) // writers keep failing and retrying
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz recovers", func() bool { return ready(t, a) && ready(t, b) })
	time.Sleep(300 * time.Millisecond)
	stop()

	want := committed(t, db, "pg")
	for i, f := range followers {
		f.Expect(t, fmt.Sprint("follower ", i), want)
	}
	t.Logf("one restart; %d events committed, received by each of %d followers (%d and %d reconnects)",
		len(want), len(followers), followers[0].Reconnects(), followers[1].Reconnects())
}

// The listener reconnects on a maximum lifetime of its own, as it must under
// proxies that cut long-lived connections, and nothing is lost across.
// With the default window of the log and a tiny one.
//
// In each bus mode and window, and in the logical mode (where the listener
// hears the decoding leader's NOTIFY per batch).
func TestListenerLifetimeReconnectsLoseNothing(t *testing.T) {
	t.Parallel()
	forEachBusAndWindow(t, func(t *testing.T, bus string, window int64) {
		testListenerLifetimeReconnectsLoseNothing(t, storetest.NewDatabaseBus(t, bus), window, false)
	})
	t.Run(store.BusLogical, func(t *testing.T) {
		t.Parallel()
		db, _ := logicalDatabase(t)
		testListenerLifetimeReconnectsLoseNothing(t, db, 0, true)
	})
}

func testListenerLifetimeReconnectsLoseNothing(t *testing.T, db string, window int64, logical bool) {
	n := startNode(t, db, realtime.Config{ListenerMaxLifetime: 100 * time.Millisecond, PollInterval: time.Hour, Window: window})
	f := ssetest.Follow(t, []string{n.URL}, "/v1/events?topic=life", logHead(t, db))
	waitFor(t, "stream open", f.Connected)
	stop := writeUntil(t, db, "life", 2)
	waitFor(t, "several lifetimes", func() bool { return metric(t, n.Node, "livepg_listener_reconnects_total") >= 5 })
	stop()
	if logical {
		waitAllNumbered(t, n)
	}
	f.Expect(t, "follower", committed(t, db, "life"))
}

// logHead is the log's head as an event id: followers start from it, as a
// page starts from its snapshot's head, so that a first stream cut before
// its first event still leaves them a resume point.
func logHead(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var head string
	if err := conn.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}
