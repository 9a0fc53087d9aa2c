package realtime_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
	"github.com/livepg/livepg/store/storetest"
)

// logicalDatabase is a migrated database in the logical bus mode, on a
// cluster of the test's own started with wal_level=logical.
func logicalDatabase(t *testing.T) (string, *localpg.Cluster) {
	t.Helper()
	c := storetest.NewLogicalCluster(t)
	db := storetest.NewDatabaseOn(t, c.URL())
	s, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.SetBus(context.Background(), store.BusLogical); err != nil {
		t.Fatal(err)
	}
	return db, c
}

// waitAllNumbered waits until the decoding leader has numbered every
// committed event.
func waitAllNumbered(t *testing.T, n *testNode) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var pending int
		var state string
		if err := n.Store.Pool.QueryRow(context.Background(), `SELECT count(*), (SELECT decoded_through::text || ' slot ' || coalesce((SELECT confirmed_flush_lsn::text || ' ' || active::text FROM pg_replication_slots), 'none') FROM livepg.bus) FROM livepg.events WHERE seq IS NULL`).Scan(&pending, &state); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still unnumbered after a minute (decoded through %s)", pending, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaderOf(nodes ...*testNode) *testNode {
	for _, n := range nodes {
		if n.DecodingLeader() {
			return n
		}
	}
	return nil
}

// In the logical mode writers do not NOTIFY; one of the two nodes decodes
// the WAL and wakes the other: every follower, on either node, receives
// every committed event in the log's order, once.
func TestLogicalBusDeliversEveryEventOnEveryNode(t *testing.T) {
	t.Parallel()
	db, _ := logicalDatabase(t)
	cfg := realtime.Config{Bus: store.BusLogical, PollInterval: time.Hour}
	a, b := startNode(t, db, cfg), startNode(t, db, cfg)
	waitFor(t, "a decoding leader", func() bool { return leaderOf(a, b) != nil })
	followers := []*ssetest.Follower{
		ssetest.Follow(t, []string{a.URL}, "/v1/events?topic=lg", logHead(t, db)),
		ssetest.Follow(t, []string{b.URL}, "/v1/events?topic=lg", logHead(t, db)),
	}
	waitFor(t, "streams open", func() bool { return followers[0].Connected() && followers[1].Connected() })
	stop := writeUntil(t, db, "lg", 8)
	time.Sleep(time.Second)
	stop()
	waitAllNumbered(t, a)
	want := committed(t, db, "lg")
	for i, f := range followers {
		f.Expect(t, fmt.Sprint("follower ", i), want)
	}
	t.Logf("%d events, decoded by one node, delivered by both", len(want))
}

// The decoding leader stops (its node shuts down) under load: the other
// node takes the leadership over, resumes the slot where it was
// acknowledged, and its followers receive every committed event once.
func TestLogicalBusLeaderStopsAnotherTakesOver(t *testing.T) {
	t.Parallel()
	db, _ := logicalDatabase(t)
	cfg := realtime.Config{Bus: store.BusLogical, PollInterval: time.Hour}
	a, b := startNode(t, db, cfg), startNode(t, db, cfg)
	waitFor(t, "a decoding leader", func() bool { return leaderOf(a, b) != nil })
	leader, other := a, b
	if b.DecodingLeader() {
		leader, other = b, a
	}
	f := ssetest.Follow(t, []string{other.URL}, "/v1/events?topic=lk", logHead(t, db))
	waitFor(t, "stream open", f.Connected)
	stop := writeUntil(t, db, "lk", 8)
	time.Sleep(500 * time.Millisecond)
	leader.CloseStreams()
	leader.Stop()
	waitFor(t, "the other node to take over", other.DecodingLeader)
	time.Sleep(500 * time.Millisecond)
	stop()
	waitAllNumbered(t, other)
	f.Expect(t, "follower on the surviving node", committed(t, db, "lk"))
}

// PostgreSQL stops under load and comes back: the leader's replication
// connection dies with it, the slot survives the restart, a leader is
// elected again and resumes it; followers on both nodes end with every
// committed event once.
func TestLogicalBusPostgresRestartLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, cluster := logicalDatabase(t)
	cfg := realtime.Config{Bus: store.BusLogical, PollInterval: 500 * time.Millisecond, ListenerPingAfter: 200 * time.Millisecond}
	a, b := startNode(t, db, cfg), startNode(t, db, cfg)
	waitFor(t, "a decoding leader", func() bool { return leaderOf(a, b) != nil })
	followers := []*ssetest.Follower{
		ssetest.Follow(t, []string{a.URL, b.URL}, "/v1/events?topic=pgl", logHead(t, db)),
		ssetest.Follow(t, []string{b.URL, a.URL}, "/v1/events?topic=pgl", logHead(t, db)),
	}
	waitFor(t, "streams open", func() bool { return followers[0].Connected() && followers[1].Connected() })
	stop := writeUntil(t, db, "pgl", 4)
	time.Sleep(300 * time.Millisecond)
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz reports the outage", func() bool { return !ready(t, a) && !ready(t, b) })
	time.Sleep(time.Second)
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz recovers", func() bool { return ready(t, a) && ready(t, b) })
	waitFor(t, "a decoding leader again", func() bool { return leaderOf(a, b) != nil })
	time.Sleep(300 * time.Millisecond)
	stop()
	waitAllNumbered(t, a)
	want := committed(t, db, "pgl")
	for i, f := range followers {
		f.Expect(t, fmt.Sprint("follower ", i), want)
	}
}

// A node whose LIVEPG_BUS differs from the database's mode refuses to
// start and says how to fix it.
func TestNodeRefusesAnotherBusMode(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Bus: store.BusLogical})
	if err != nil {
		t.Fatal(err)
	}
	err = node.Start(context.Background())
	if err == nil {
		node.Stop()
		t.Fatal("a node with Bus logical started on a database in the default mode")
	}
	if !strings.Contains(err.Error(), "livepg bus logical") {
		t.Errorf("the error does not say how to switch: %v", err)
	}
}
