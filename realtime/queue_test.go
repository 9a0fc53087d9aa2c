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

// The notification queue is shared by the cluster and cleaned only as far
// as its slowest listener has read; when it fills, every notifying commit
// fails. So the node's listener must keep reading while everything behind it
// is stalled: here the node's pool (its log reads and catch-up) is held
// hostage and its streams' clients read nothing. A listener that does not
// read — the control — leaves the queue growing; the node's leaves it empty.
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
	// Hold the node's only pool connection: its log reads and every catch-up
	// wait behind it.
	held, err := n.Store.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()

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

	// The node alone, its reads still stalled, under far more load than
	// socket buffers could hide if its listener stopped reading. The queue
	// is cleaned only as notifying commits cross its pages, so trickle a few
	// more notifications until it has been: with a listener that reads, the
	// queue ends empty.
	notifyMany(t, writer, 40, 10000)
	waitFor(t, "the queue to drain", func() bool {
		notifyMany(t, writer, 1, 200)
		return queueUsage(t, writer) == 0
	})
	t.Logf("queue usage %.2e after 50,000 notifications with a listener that did not read; 0 after 400,000 more with only the node's, its log reads and streams stalled", withControl)
	if withControl == 0 {
		t.Fatal("the control did not fill the queue: the test measures nothing")
	}
}
