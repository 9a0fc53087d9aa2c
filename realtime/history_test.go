package realtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/localpg"
	"github.com/livepg/livepg/store/storetest"
)

// logEvent is one event of a log as its database has it.
type logEvent struct {
	Seq  int64
	Data string // compact JSON
}

// logOf reads every event on topic from db's log, in seq order.
func logOf(t *testing.T, db, topic string) []logEvent {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	storetest.NumberPending(t, conn)
	rows, err := conn.Query(ctx, `SELECT seq, data::text FROM livepg.events WHERE topic = $1 ORDER BY seq`, topic)
	if err != nil {
		t.Fatal(err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (logEvent, error) {
		var e logEvent
		err := r.Scan(&e.Seq, &e.Data)
		e.Data = compact(t, e.Data)
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %q: %v", s, err)
	}
	return b.String()
}

// publishN commits n events on topic, one transaction each, with data
// {"n": "<label>-<i>"}: every event of a test is told apart by its data,
// whatever seq two histories gave it.
func publishN(t *testing.T, db, topic, label string, n int) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := 1; i <= n; i++ {
		if _, err := conn.Exec(ctx, `SELECT livepg.publish($1, jsonb_build_object('n', $2::text))`, topic, fmt.Sprintf("%s-%d", label, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// record collects what a page's EventSource (a Follower) receives.
type record struct {
	f      *ssetest.Follower
	events []ssetest.Event
}

// until reads events until cond holds of all received so far.
func (r *record) until(t *testing.T, what string, cond func([]ssetest.Event) bool) {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for !cond(r.events) {
		select {
		case ev := <-r.f.Events():
			r.events = append(r.events, ev)
		case <-timeout:
			t.Fatalf("timed out waiting for %s; received %s", what, describe(r.events))
		}
	}
}

// reachedSeq is a condition of until: an event (or reset) with seq >= last
// arrived, after a reset if wantReset.
func reachedSeq(last int64, wantReset bool) func([]ssetest.Event) bool {
	return func(evs []ssetest.Event) bool {
		reset := !wantReset
		for _, ev := range evs {
			if ev.Type == "reset" {
				reset = true
			}
			if reset && ev.Seq() >= last {
				return true
			}
		}
		return false
	}
}

func describe(evs []ssetest.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s", ev.ID, ev.Type, ev.Data)
	}
	return b.String()
}

// checkRecord holds a page's record to the delivery invariant across a
// change of the log's history: after its last reset (or from its start,
// after seq from, when it has none) it received exactly the log's events, in
// order, each once, told apart by their data, not only their seq. A page
// that got no reset therefore skipped nothing and saw nothing of a lost
// history.
func checkRecord(t *testing.T, name string, got []ssetest.Event, log []logEvent, from int64, wantReset bool) {
	t.Helper()
	last := -1
	for i, ev := range got {
		if ev.Type == "reset" {
			last = i
		}
	}
	if wantReset != (last >= 0) {
		t.Fatalf("%s: reset received %v, want %v; record:%s", name, last >= 0, wantReset, describe(got))
	}
	start := from
	if last >= 0 {
		start = got[last].Seq()
	}
	var want []logEvent
	for _, e := range log {
		if e.Seq > start {
			want = append(want, e)
		}
	}
	after := got[last+1:]
	ok := len(after) == len(want)
	for i := 0; ok && i < len(want); i++ {
		var p payload
		if err := json.Unmarshal([]byte(after[i].Data), &p); err != nil {
			t.Fatal(err)
		}
		ok = after[i].Seq() == want[i].Seq && compact(t, string(p.Data)) == want[i].Data && after[i].Type == "message"
	}
	if !ok {
		t.Fatalf("%s: after seq %d received:%s\nwant the log's events after it: %v", name, start, describe(after), want)
	}
}

// sawLost reports whether a record holds an event the log does not have (by
// seq and data): one of a lost history.
func sawLost(t *testing.T, got []ssetest.Event, log []logEvent) bool {
	t.Helper()
	have := map[logEvent]bool{}
	for _, e := range log {
		have[e] = true
	}
	for _, ev := range got {
		if ev.Type != "message" {
			continue
		}
		var p payload
		if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
			t.Fatal(err)
		}
		if !have[logEvent{Seq: ev.Seq(), Data: compact(t, string(p.Data))}] {
			return true
		}
	}
	return false
}

// firstEvent opens a stream resuming from id and returns its first event.
func firstEvent(t *testing.T, nodeURL, path, id string) (*ssetest.Stream, ssetest.Event) {
	t.Helper()
	s := ssetest.Open(t, nodeURL+path, id)
	return s, s.Next(t, 60*time.Second)
}

// A cold backup is restored under a running node (stop, copy the data
// folder back, start) after events were committed and delivered past it:
// the case. Before ids named their history, the page that had
// received "old" 11-20 then got only "new" 21-25, and a page resuming with
// id 20 got 21-25, both with no reset.
func TestRestoredColdBackupResetsWhoSawTheLostEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := storetest.NewCluster(t)
	db := storetest.NewDatabaseOn(t, cluster.URL())
	const path = "/v1/events?topic=h"
	publishN(t, db, "h", "before", 10)
	queryOrExec(t, db, `SELECT livepg.number_pending()`) // as a node would have, before the backup

	backup := filepath.Join(t.TempDir(), "backup")
	if err := localpg.ChownToServer(filepath.Dir(backup)); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CopyTo(ctx, backup); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}

	cfg := realtime.Config{PollInterval: 200 * time.Millisecond, ListenerPingAfter: 200 * time.Millisecond}
	a := startNode(t, db, cfg)
	early := collect(t, ssetest.Open(t, a.URL+path, "0"), 10)[4].ID // event 5: before the backup
	f := &record{f: ssetest.Follow(t, []string{a.URL}, path, "")}
	waitFor(t, "stream open", f.f.Connected)
	publishN(t, db, "h", "old", 10) // 11-20, lost by the restore
	f.until(t, "old 11-20", reachedSeq(20, false))
	lostID := f.events[len(f.events)-1].ID

	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.RestoreFrom(ctx, backup); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node ready again", func() bool { return ready(t, a) })
	publishN(t, db, "h", "new", 15) // 11-25 of the restored history
	log := logOf(t, db, "h")
	if last := log[len(log)-1].Seq; last != 25 {
		t.Fatalf("restored log ends at %d, want 25", last)
	}

	// The page that received the lost events is told to reset, then gets
	// exactly the restored history's events.
	f.until(t, "a reset and event 25", reachedSeq(25, true))
	if !sawLost(t, f.events, log) {
		t.Fatal("the follower received no lost event: the test proves nothing")
	}
	checkRecord(t, "page that saw old 11-20", f.events, log, 0, true)

	// A page resuming with the id of a lost event is told to reset, on the
	// node that saw it and on a node started after the restore.
	b := startNode(t, db, cfg)
	for _, n := range []*testNode{a, b} {
		if _, ev := firstEvent(t, n.URL, path, lostID); ev.Type != "reset" || ev.Seq() != 25 {
			t.Fatalf("resume from lost id %s: first event %+v, want a reset at 25", lostID, ev)
		}
	}
	// An id from before the backup is in the restored history: it resumes
	// with no reset, through the new events.
	for _, n := range []*testNode{a, b} {
		s := ssetest.Open(t, n.URL+path, early)
		checkRecord(t, "page resuming from "+early, collect(t, s, 25), log, 5, false)
	}
}

// TRUNCATE empties the log: a page holding an id from before it resumes
// with a reset (before, pruned_through stayed put: a page holding 31 then
// resumed at 36-40 and silently missed 32-35); a page that had everything
// goes on.
func TestTruncatedLogResetsWhoMissedEvents(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	n := startNode(t, db, realtime.Config{})
	const path = "/v1/events?topic=tr"
	publishN(t, db, "tr", "a", 31)
	held := collect(t, ssetest.Open(t, n.URL+path, "0"), 31)[30].ID
	publishN(t, db, "tr", "b", 4) // 32-35, gone with the TRUNCATE
	atTruncate := collect(t, ssetest.Open(t, n.URL+path, "0"), 35)[34].ID
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `TRUNCATE livepg.events`); err != nil {
		t.Fatal(err)
	}
	publishN(t, db, "tr", "c", 5) // 36-40
	log := logOf(t, db, "tr")
	// The node has read the log since the TRUNCATE: its window of the log
	// (README, "The window of the log") knows of it from then.
	waitFor(t, "the node at 40", func() bool { return metric(t, n.Node, "livepg_log_head") == 40 })

	s, ev := firstEvent(t, n.URL, path, held)
	if ev.Type != "reset" || ev.Seq() != 40 {
		t.Fatalf("resume from %s after TRUNCATE: first event %+v, want a reset at 40", held, ev)
	}
	publishN(t, db, "tr", "d", 1)
	if ev := s.Next(t, 60*time.Second); ev.Seq() != 41 {
		t.Fatalf("after the reset: %+v, want event 41", ev)
	}
	checkRecord(t, "page that had everything before the TRUNCATE",
		collect(t, ssetest.Open(t, n.URL+path, atTruncate), 40), log, 35, false)
}

// gatedConn holds a client's reads until its gate opens: a reader slower
// than the log is pruned.
type gatedConn struct {
	net.Conn
	gate <-chan struct{}
}

func (c gatedConn) Read(p []byte) (int, error) {
	<-c.gate
	return c.Conn.Read(p)
}

// A page resuming from the start of a long log reads slowly; the log is
// pruned beside it (by a node, or by an operator's SELECT livepg.prune from
// cron). The catch-up reaches the pruned range: the page gets a reset and
// then the events after it; everything before the reset is the log's first
// events, in order, with no gap. Before, the stream went on past the pruned
// range with no reset (its log line said last_event_id 2000, events 1000).
//
// Not parallel: it waits for a goroutine of its stream, by its stack, and
// the package's parallel tests wait for it to end.
func TestPruneDuringACatchUpResetsTheSlowReader(t *testing.T) {
	for _, by := range []string{"sql", "node"} {
		t.Run(by, func(t *testing.T) {
			db := storetest.NewDatabase(t)
			// No window: the catch-up reads the log, whose pruning it
			// races (a catch-up from the window has the events in memory).
			n := startNode(t, db, realtime.Config{BatchSize: 20, Window: -1})
			const total = 400
			conn, err := pgx.Connect(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			// Events of 32 kB, so that a few batches fill the socket buffers.
			if _, err := conn.Exec(context.Background(),
				`SELECT livepg.publish_batch(array_fill('p'::text, ARRAY[$1::int]), array_fill('message'::text, ARRAY[$1::int]),
				        array(SELECT jsonb_build_object('i', g, 'pad', repeat('x', 32000)) FROM generate_series(1, $1) g))`, total); err != nil {
				t.Fatal(err)
			}
			// The node has routed them all: the page's stream reads them
			// from the log (a catch-up), not from the live flow.
			waitFor(t, "the node's head at the last event", func() bool { return metric(t, n.Node, "livepg_log_head") >= total })
			gate := make(chan struct{})
			client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				_ = c.(*net.TCPConn).SetReadBuffer(64 << 10) // fixed: no autotuning to absorb the log
				return gatedConn{Conn: c, gate: gate}, nil
			}}}
			var s *ssetest.Stream
			var dialErr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the response headers wait for the gate too
				defer wg.Done()
				s, dialErr = ssetest.DialClient(context.Background(), client, n.URL+"/v1/events?topic=p", "0")
			}()
			// The stream is in its catch-up, stuck writing to the slow reader.
			waitFor(t, "the catch-up blocked on the slow reader", func() bool {
				return goroutinesWith("(*stream).catchUp(", "(*pollDesc).waitWrite") == 1
			})
			switch by {
			case "sql":
				if _, err := conn.Exec(context.Background(), `SELECT livepg.prune('0 seconds')`); err != nil {
					t.Fatal(err)
				}
			case "node":
				pruner := startNode(t, db, realtime.Config{Retention: time.Nanosecond, PruneInterval: 10 * time.Millisecond})
				waitFor(t, "the log pruned", func() bool {
					var pruned int64
					err := conn.QueryRow(context.Background(), `SELECT pruned_through FROM livepg.state`).Scan(&pruned)
					return err == nil && pruned >= total
				})
				// With a retention of 1 ns it would prune the next event
				// too, perhaps before any node read it.
				pruner.Stop()
			}
			close(gate)
			wg.Wait()
			if dialErr != nil {
				t.Fatal(dialErr)
			}
			defer s.Close()
			var got []ssetest.Event
			for {
				ev := s.Next(t, 60*time.Second)
				got = append(got, ev)
				if ev.Type == "reset" {
					break
				}
				if ev.Seq() >= total {
					t.Fatalf("received all %d events: the prune came too late to test anything", total)
				}
			}
			if len(got) < 2 {
				t.Fatal("the reset came before any event: the prune did not race the catch-up")
			}
			for i, ev := range got[:len(got)-1] {
				if ev.Seq() != int64(i+1) {
					t.Fatalf("before the reset, event %d is %s: a gap", i, ev.ID)
				}
			}
			if reset := got[len(got)-1]; reset.Seq() < int64(len(got)-1) {
				t.Fatalf("reset at %s, behind the events received", reset.ID)
			}
			publishN(t, db, "p", "after", 1)
			if ev := s.Next(t, 60*time.Second); ev.Seq() != total+1 {
				t.Fatalf("after the reset: %+v, want event %d", ev, total+1)
			}
			t.Logf("the slow reader received %d of %d events, then a reset", len(got)-1, total)
		})
	}
}

// multiHostURL is a URL naming the database db on each cluster, in order,
// over TCP, that connects to whichever takes writes.
func multiHostURL(t *testing.T, db string, clusters ...*localpg.Cluster) string {
	t.Helper()
	name := strings.TrimPrefix(mustParse(t, db).Path, "/")
	u := mustParse(t, clusters[0].TCPURL(name))
	var hosts []string
	for _, c := range clusters {
		hosts = append(hosts, net.JoinHostPort("127.0.0.1", fmt.Sprint(c.Port)))
	}
	u.Host = strings.Join(hosts, ",")
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	q.Set("connect_timeout", "5")
	u.RawQuery = q.Encode()
	return u.String()
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func queryInt(t *testing.T, db, sql string) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A real failover: an asynchronous streaming replica (pg_basebackup -R) is
// cut off from the primary, so that it lacks the last committed events;
// the primary stops; the replica is promoted; writes resume on it. Two
// nodes with a multi-host DATABASE_URL (target_session_attrs=read-write)
// follow by themselves. Pages that had received lost events get a reset;
// pages that had not get exactly the new events; each page's record is
// checked against the new primary's log.
func TestFailoverToAReplicaThatLostTheTail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := storetest.NewCluster(t)
	db := storetest.NewDatabaseOn(t, primary.URL())
	publishN(t, db, "lost", "kept", 5)
	publishN(t, db, "steady", "kept", 5)

	dir, err := os.MkdirTemp("", "livepg-test-replica-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := localpg.ChownToServer(dir); err != nil {
		t.Fatal(err)
	}
	replica, err := primary.NewReplica(ctx, filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = replica.Stop(ctx)
	})
	name := strings.TrimPrefix(mustParse(t, db).Path, "/")
	replicaDB := replica.DatabaseURL(name)

	both := multiHostURL(t, db, primary, replica)
	cfg := realtime.Config{PollInterval: 200 * time.Millisecond, ListenerPingAfter: 200 * time.Millisecond}
	a, b := startNode(t, both, cfg), startNode(t, both, cfg)
	nodes := [][]string{{a.URL, b.URL}, {b.URL, a.URL}}
	type page struct {
		name  string
		topic string
		rec   *record
	}
	var pages []*page
	for _, topic := range []string{"lost", "steady"} {
		for i, ns := range nodes {
			pages = append(pages, &page{name: fmt.Sprintf("%s page on node %c", topic, 'A'+i), topic: topic,
				rec: &record{f: ssetest.Follow(t, ns, "/v1/events?topic="+topic, "0")}})
		}
	}
	for _, p := range pages {
		p.rec.until(t, "the first events", reachedSeq(map[string]int64{"lost": 5, "steady": 10}[p.topic], false))
	}

	// The replica has everything so far; then its walreceiver stops, and
	// the primary commits events the replica will never have.
	head := queryInt(t, db, `SELECT max(seq) FROM livepg.events`)
	waitFor(t, "the replica caught up", func() bool {
		return queryInt(t, replicaDB, `SELECT coalesce(max(seq), 0) FROM livepg.events`) == head
	})
	for _, sql := range []string{`ALTER SYSTEM SET primary_conninfo = ''`, `SELECT pg_reload_conf()`} {
		queryOrExec(t, replicaDB, sql)
	}
	waitFor(t, "the replica's walreceiver stopped", func() bool {
		return queryInt(t, replicaDB, `SELECT count(*) FROM pg_stat_wal_receiver`) == 0
	})
	publishN(t, db, "lost", "lost", 5) // 11-15 on the primary only
	for _, p := range pages {
		if p.topic == "lost" {
			p.rec.until(t, "the lost events", reachedSeq(15, false))
		}
	}
	if n := queryInt(t, replicaDB, `SELECT coalesce(max(seq), 0) FROM livepg.events`); n != head {
		t.Fatalf("the replica has the log through %d, want %d: it must lack the last events", n, head)
	}

	if err := primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz reports the outage", func() bool { return !ready(t, a) && !ready(t, b) })
	promoted := time.Now()
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both nodes ready on the promoted replica", func() bool { return ready(t, a) && ready(t, b) })
	readyAfter := time.Since(promoted)
	publishN(t, replicaDB, "lost", "new", 5)
	publishN(t, replicaDB, "steady", "new", 5)
	log := map[string][]logEvent{"lost": logOf(t, replicaDB, "lost"), "steady": logOf(t, replicaDB, "steady")}
	last := queryInt(t, replicaDB, `SELECT max(seq) FROM livepg.events`)
	for _, p := range pages {
		lost := p.topic == "lost"
		p.rec.until(t, "the new events", reachedSeq(log[p.topic][len(log[p.topic])-1].Seq, lost))
		if lost != sawLost(t, p.rec.events, log[p.topic]) {
			t.Fatalf("%s: saw lost events %v, want %v: the test proves nothing", p.name, !lost, lost)
		}
		checkRecord(t, p.name, p.rec.events, log[p.topic], 0, lost)
	}
	deliveredAfter := time.Since(promoted)
	t.Logf("nodes ready %v after pg_ctl promote returned; every page had the new events (log head %d) %v after it",
		readyAfter.Round(time.Millisecond), last, deliveredAfter.Round(time.Millisecond))
}

func queryOrExec(t *testing.T, db, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// goroutinesWith counts the goroutines with every one of fns on their stack.
func goroutinesWith(fns ...string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		all := true
		for _, fn := range fns {
			all = all && strings.Contains(g, fn)
		}
		if all {
			n++
		}
	}
	return n
}

// Events pruned before the node's reader got to them (a retention shorter
// than the node's lag) never reached its live streams: they are told to
// reset, not left to skip them. The node's pool is held so that its reader
// cannot read while five events are committed and pruned.
func TestEventsPrunedBeforeTheNodeReadThemResetItsStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	poolURL := mustParse(t, db)
	q := poolURL.Query()
	q.Set("pool_max_conns", "1")
	poolURL.RawQuery = q.Encode()
	n := startNode(t, poolURL.String(), realtime.Config{ListenURL: db, PollInterval: time.Hour})
	publishN(t, db, "pr", "seen", 2)
	f := &record{f: ssetest.Follow(t, []string{n.URL}, "/v1/events?topic=pr", "0")}
	f.until(t, "the first events", reachedSeq(2, false))

	// Stall the reader: hold its connection.
	held, err := n.ReaderPool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, db, "pr", "pruned", 5) // 3-7, gone before the node reads them
	// Numbered elsewhere (another node, in commit_timestamp mode), then pruned.
	queryOrExec(t, db, `SELECT livepg.number_pending()`)
	queryOrExec(t, db, `SELECT livepg.prune('0 seconds')`)
	publishN(t, db, "pr", "after", 1) // 8
	held.Release()

	f.until(t, "a reset and event 8", reachedSeq(8, true))
	log := logOf(t, db, "pr")
	checkRecord(t, "live page", f.events, log, 0, true)
	if metric(t, n.Node, "livepg_history_resets_total") < 1 {
		t.Fatal("livepg_history_resets_total did not count the reset")
	}
	// The window held events 1 and 2 before the reset: a page resuming
	// from 2 now is told to reset, not served from it.
	s := ssetest.Open(t, n.URL+"/v1/events?topic=pr", "2")
	if ev := s.Next(t, 30*time.Second); ev.Type != "reset" {
		t.Fatalf("resume from 2 after the reset: got %+v, want event: reset", ev)
	}
}
