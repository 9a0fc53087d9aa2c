package realtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
		if err := n.Store.Pool.QueryRow(context.Background(), `SELECT count(*), (SELECT decoded_through::text || ' slot ' || coalesce((SELECT confirmed_flush_lsn::text || ' ' || active::text FROM pg_replication_slots), 'none') FROM livepg.bus) FROM livepg.pending`).Scan(&pending, &state); err != nil {
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

// THE HEAD TRAP of the logical mode: a page's snapshot sees T2 but not T1,
// although T1 comes first in the WAL (T1's commit is flushed but waits for
// a synchronous standby, still invisible, while T2 commits with
// synchronous_commit = local). Neither is numbered when the page reads. The
// leader then numbers T1 before T2; the page's stream, resuming from its
// livepg.head(), must deliver T1's event and not T2's (the page has it),
// then go on live. A plain "after S" would send T2 again; "after S, skip
// the next one" would drop T1.
func TestLogicalBusPageHeadSkipsWhatThePageSaw(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A standby that never comes: a commit with synchronous_commit = on
	// waits for it after its flush, invisible; everything else commits
	// with local.
	settings := maps.Clone(storetest.LogicalSettings)
	settings["synchronous_standby_names"] = "nobody"
	settings["synchronous_commit"] = "local"
	c := storetest.NewClusterWith(t, settings)
	db := storetest.NewDatabaseOn(t, c.URL())
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.SetBus(ctx, store.BusLogical); err != nil {
		t.Fatal(err)
	}
	node := startNode(t, db, realtime.Config{Bus: store.BusLogical, PollInterval: 100 * time.Millisecond})
	waitFor(t, "a decoding leader", node.DecodingLeader)
	admin, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`SELECT livepg.publish('trap', '"before"')`)
	waitAllNumbered(t, node)

	t1, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var t1pid int
	if err := t1.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&t1pid); err != nil {
		t.Fatal(err)
	}
	t1done := make(chan error, 1)
	release := func() { _, _ = admin.Exec(context.Background(), `SELECT pg_cancel_backend($1)`, t1pid) }
	t.Cleanup(func() { release(); <-t1done; t1.Close(context.Background()) })
	go func() {
		_, err := t1.Exec(ctx, `BEGIN; SET LOCAL synchronous_commit = on; SELECT livepg.publish('trap', '"t1"'); COMMIT`)
		t1done <- err
	}()
	waitFor(t, "T1's commit flushed and waiting for the standby", func() bool {
		var waiting bool
		if err := admin.QueryRow(ctx, `SELECT coalesce((SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $1), false)`, t1pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	exec(`SELECT livepg.publish('trap', '"t2"')`)

	// The page: its state and its head in one snapshot.
	var state []string
	var head string
	err = pgx.BeginTxFunc(ctx, admin, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT data #>> '{}' FROM (SELECT id, topic, data FROM livepg.events UNION ALL SELECT id, topic, data FROM livepg.pending) e WHERE topic = 'trap' ORDER BY id`)
		if err != nil {
			return err
		}
		if state, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(state, []string{"before", "t2"}) {
		t.Fatalf("the page's state is %v, want [before t2]: the test did not set the trap", state)
	}
	if !strings.Contains(head, "~") {
		t.Fatalf("head %q carries no snapshot, though the page sees an event not numbered yet", head)
	}

	// T1 stops waiting (its commit is done: cancelling the wait only
	// warns); the leader numbers T1, then T2.
	release()
	if err := <-t1done; err != nil {
		t.Fatal(err)
	}
	t1done <- nil // for the cleanup
	waitAllNumbered(t, node)
	var order []string
	rows, err := admin.Query(ctx, `SELECT data #>> '{}' FROM livepg.events WHERE topic = 'trap' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	if order, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"before", "t1", "t2"}) {
		t.Fatalf("the log's order is %v, want [before t1 t2] (T1 committed first in the WAL)", order)
	}

	s := ssetest.Open(t, node.URL+"/v1/events?topic=trap&lastEventId="+url.QueryEscape(head), "")
	exec(`SELECT livepg.publish('trap', '"after"')`)
	var got []string
	for len(got) < 2 {
		ev := s.Next(t, time.Minute)
		got = append(got, string(decode(t, ev).Data))
	}
	if !slices.Equal(got, []string{`"t1"`, `"after"`}) {
		t.Fatalf("the page's stream delivered %v, want [\"t1\" \"after\"]: the page had [before t2]", got)
	}
}

// POST /v1/publish in the logical mode: the publish commits without the
// numbering lock and answers with the seq the decoding leader gives it, on
// either node (batched or not); the streams get the events.
func TestLogicalBusHTTPPublishAnswersWithTheSeq(t *testing.T) {
	t.Parallel()
	db, _ := logicalDatabase(t)
	a := startNode(t, db, realtime.Config{Bus: store.BusLogical})
	b := startNode(t, db, realtime.Config{Bus: store.BusLogical, PublishBatchWindow: -1})
	waitFor(t, "a decoding leader", func() bool { return leaderOf(a, b) != nil })
	s := ssetest.Open(t, a.URL+"/v1/events?topic=hp", "")
	var seqs []int64
	for i, n := range []*testNode{a, b, a, b} {
		resp, err := http.Post(n.URL+"/v1/publish", "application/json", strings.NewReader(fmt.Sprintf(`{"topic":"hp","data":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Seq int64 }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || body.Seq == 0 {
			t.Fatalf("publish %d: status %d, seq %d, %v", i, resp.StatusCode, body.Seq, err)
		}
		seqs = append(seqs, body.Seq)
	}
	for i, want := range seqs {
		ev := s.Next(t, time.Minute)
		if ev.Seq() != want || string(decode(t, ev).Data) != fmt.Sprint(i) {
			t.Fatalf("event %d: id %s data %s, want seq %d data %d", i, ev.ID, decode(t, ev).Data, want, i)
		}
	}
}

// The logical mode with the README's least-privilege roles: the owner
// switches the mode; the node, as livepg_node with the REPLICATION
// attribute added, decodes and numbers; the application, as livepg_writer,
// writes through a tracked table and publish, and can neither number events
// nor call the leader's functions.
func TestLogicalBusWithTheLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := storetest.NewLogicalRecipe(t)
	admin, err := pgx.Connect(ctx, r.Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	owner, err := store.Open(ctx, r.Owner)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	// The publication needs CREATE on the database: the error says so.
	if _, err := owner.SetBus(ctx, store.BusLogical); err == nil || !strings.Contains(err.Error(), "GRANT CREATE ON DATABASE") {
		t.Fatalf("as livepg's owner without CREATE on the database: %v, want the GRANT to run", err)
	}
	for _, sql := range []string{
		`ALTER ROLE ` + storetest.NodeRole + ` REPLICATION`,
		`GRANT CREATE ON DATABASE ` + pgx.Identifier{admin.Config().Database}.Sanitize() + ` TO ` + storetest.OwnerRole,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("as the superuser: %s: %v", sql, err)
		}
	}
	if _, err := owner.SetBus(ctx, store.BusLogical); err != nil {
		t.Fatalf("as livepg's owner: %v", err)
	}
	n := startNode(t, r.Node, realtime.Config{Bus: store.BusLogical})
	waitFor(t, "the node to lead the decoding", n.DecodingLeader)

	app, err := pgx.Connect(ctx, r.App)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for _, sql := range []string{
		`CREATE TABLE myapp.notes (id int PRIMARY KEY, owner text, body text)`,
		`SELECT livepg.track('myapp.notes', 'users/{owner}/notes')`,
	} {
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("as the application: %s: %v", sql, err)
		}
	}
	s := ssetest.Open(t, n.URL+"/v1/events?topic=users/*", "")
	if _, err := app.Exec(ctx, `INSERT INTO myapp.notes VALUES (1, 'bob', 'first')`); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, `SELECT livepg.publish('users/bob/notes', '{"n": 1}')`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"insert", "message"} {
		if ev := s.Next(t, time.Minute); ev.Type != want {
			t.Fatalf("got an event of type %q (%s), want %q", ev.Type, ev.ID, want)
		}
	}
	for _, sql := range []string{
		`SELECT livepg.number_decoded(ARRAY[1]::bigint[], ARRAY[now()], '0/FFFFFFFF')`,
		`SELECT livepg.recover_decoded('0/1')`,
		`SELECT livepg.set_bus('default')`,
		`UPDATE livepg.bus SET decoded_through = '0/0'`,
		`SELECT * FROM livepg.bus`,
	} {
		_, err := app.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("as the application: %s: got %v, want a permission error (42501)", sql, err)
		}
	}
}

// A page's position in the logical mode ('<seq>~<snapshot>-<epoch>') more
// than store.MaxSeenScan events behind the log's head is not resolved (it
// would make the node walk the log from an old seq for every such
// request): the stream starts at the head with a reset, and goes on live.
func TestLogicalBusPageHeadTooFarBehindResets(t *testing.T) {
	t.Parallel()
	db, _ := logicalDatabase(t)
	node := startNode(t, db, realtime.Config{Bus: store.BusLogical, PollInterval: 100 * time.Millisecond})
	waitFor(t, "a decoding leader", node.DecodingLeader)
	snap := queryString(t, db, `SELECT pg_current_snapshot()::text`)
	epoch := queryString(t, db, `SELECT epoch FROM livepg.state`)
	n := store.MaxSeenScan + 1
	if _, err := node.Store.Pool.Exec(context.Background(), `SELECT count(*) FROM livepg.publish_many(
		array_fill('far'::text, ARRAY[$1::int]), array_fill('message'::text, ARRAY[$1::int]), array_fill('1'::jsonb, ARRAY[$1::int]))`, n); err != nil {
		t.Fatal(err)
	}
	waitAllNumbered(t, node)
	s := ssetest.Open(t, node.URL+"/v1/events?topic=far", fmt.Sprintf("0~%s-%s", snap, epoch))
	if ev := s.Next(t, time.Minute); ev.Type != "reset" {
		t.Fatalf("from a page position %d events behind: first event %+v, want a reset", n, ev)
	}
	publishN(t, db, "far", "live", 1)
	if ev := s.Next(t, time.Minute); ev.Type == "reset" || !strings.Contains(ev.Data, "live-1") {
		t.Errorf("after the reset: %+v, want live-1", ev)
	}
}
