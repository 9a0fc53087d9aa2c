package realtime_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store/storetest"
)

// queueUsage is pg_notification_queue_usage(): the fraction of the
// cluster's notification queue that the slowest listener has not read.
func queueUsage(t *testing.T, conn *pgx.Conn) float64 {
	t.Helper()
	var u float64
	if err := conn.QueryRow(context.Background(), `SELECT pg_notification_queue_usage()`).Scan(&u); err != nil {
		t.Fatal(err)
	}
	return u
}

// notifyMany commits batches transactions of n notifications each on the
// events' channel, pausing between them as a steady stream of writers would.
func notifyMany(t *testing.T, conn *pgx.Conn, batches, n int) {
	t.Helper()
	for i := range batches {
		if _, err := conn.Exec(context.Background(),
			`SELECT pg_notify('livepg', $1::int || ':' || g) FROM generate_series(1, $2) g`, i, n); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// notificationsHeard is the number of notifications n's listener has
// received.
func notificationsHeard(t *testing.T, n *testNode) int64 {
	t.Helper()
	return int64(metric(t, n.Node, "livepg_listener_notifications_total"))
}

// waitForListener waits until n's listener has received want notifications
// in all. It waits as long as the listener makes progress, however slowly (a
// loaded machine, the race detector), and fails once its count has not moved
// for a minute (a listener that stopped reading) or after ten minutes.
func waitForListener(t *testing.T, n *testNode, want int64) {
	t.Helper()
	const stall = time.Minute
	deadline := time.Now().Add(10 * time.Minute)
	last, lastMoved := notificationsHeard(t, n), time.Now()
	for last < want {
		time.Sleep(50 * time.Millisecond)
		got := notificationsHeard(t, n)
		switch {
		case got != last:
			last, lastMoved = got, time.Now()
		case time.Since(lastMoved) > stall:
			t.Fatalf("the listener has received %d of %d notifications and none for %v: it stopped reading", got, want, stall)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener has received only %d of %d notifications in ten minutes", got, want)
		}
	}
}

// The notification queue is shared by the cluster and cleaned only as far
// as its slowest listener has read; when it fills, every notifying commit
// fails. So the node's listener must keep reading while everything behind it
// is stalled: here the node's pool (its log reads and catch-up) is held
// hostage and its streams' clients read nothing. A listener that does not
// read — the control — leaves the queue growing; the node's drains it.
//
// No speed is assumed: the test waits for the listener to have received
// every notification for as long as it keeps receiving them (under -race on
// a loaded machine that takes a while), and fails if it stops.
func TestListenerDrainsTheNotificationQueueWhileEverythingElseStalls(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	poolURL, _ := url.Parse(db)
	q := poolURL.Query()
	q.Set("pool_max_conns", "1")
	poolURL.RawQuery = q.Encode()
	n := startNode(t, poolURL.String(), realtime.Config{ListenURL: db, PollInterval: time.Hour})

	// Streams whose clients never read.
	u, _ := url.Parse(n.URL)
	for range 3 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /v1/events?topic=q HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "streams open", func() bool { return n.Streams() == 3 })
	// Hold the node's only pool connection and its reader's: its log
	// reads, every catch-up and its wiring probes wait behind them.
	held, err := n.Store.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	heldReader, err := n.ReaderPool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer heldReader.Release()
	// The probe sent after LISTEN may still be on its way: wait for it, so
	// that from here on the listener hears only the test's notifications.
	waitFor(t, "the wiring probe", func() bool { return metric(t, n.Node, "livepg_listener_wiring_ok") == 1 })
	heard := notificationsHeard(t, n)

	writer, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)

	// Control: a listener that reads nothing holds the queue back. A session
	// idle in a transaction reads no notifications until it ends.
	control, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.Exec(ctx, `LISTEN livepg`); err != nil {
		t.Fatal(err)
	}
	if _, err := control.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	notifyMany(t, writer, 20, 2500)
	withControl := queueUsage(t, writer)
	control.Close(ctx)
	if withControl == 0 {
		t.Fatal("the control did not fill the queue: the test measures nothing")
	}

	// The node alone, its reads still stalled, under far more load than
	// socket buffers could hide if its listener stopped reading.
	notifyMany(t, writer, 40, 10000)
	waitForListener(t, n, heard+20*2500+40*10000)

	// The queue is cleaned (its tail moved up to the slowest listener) only
	// by a notifying commit that fills a page whose number is a multiple of
	// four (PostgreSQL's QUEUE_CLEANUP_DELAY), and at that moment its
	// listeners have not read that commit yet. One commit of 2,000
	// notifications (about 8 pages) fills such a page: after it, the queue
	// holds about that commit and nothing of the 450,000 before it, where the
	// control's 50,000 filled it 25 times as much; a listener that had
	// stopped reading would leave about 200 times as much. (The listener's
	// backend records how far it has read just after sending its last
	// notification, so its count may reach ours a moment before: try again.)
	var after float64
	for try := 0; ; try++ {
		notifyMany(t, writer, 1, 2000)
		if after = queueUsage(t, writer); after <= withControl/4 || try == 60 {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("queue usage %.2e after 50,000 notifications with a listener that did not read; %.2e after 400,000 more and one commit of 2,000 with only the node's, its log reads and streams stalled", withControl, after)
	if after > withControl/4 {
		t.Fatalf("queue usage %.2e once the node's listener had read everything and commits of 2,000 cleaned the queue for a minute, want at most a quarter of the control's %.2e: the queue was not drained", after, withControl)
	}
}
