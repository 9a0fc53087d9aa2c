package realtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// numberingLock is the advisory lock under which events are numbered
// (migrations/00008_bus.sql): holding it stops every node's numbering.
const numberingLock = 7236828372618428007

// The page handoff in commit_timestamp mode, where events are numbered
// after their commit: a page reads its state and livepg.head() in one
// snapshot that sees events committed but not yet numbered; then more are
// committed; then its stream opens from that head — all while no node can
// number (the test holds the numbering lock). The stream must deliver
// exactly the events the page's state lacks: nothing it has already, nothing
// missed, on either node.
func TestPageHeadWithUnnumberedEventsHandsOffExactly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabaseBus(t, store.BusCommitTimestamp)
	cfg := realtime.Config{PollInterval: 200 * time.Millisecond}
	nodes := []*testNode{startNode(t, db, cfg), startNode(t, db, cfg)}
	publishN(t, db, "p", "numbered", 3)
	waitFor(t, "the first events numbered", func() bool {
		return queryInt(t, db, `SELECT count(*) FROM livepg.events WHERE seq IS NOT NULL`) == 3
	})

	hold, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close(ctx)
	lock, err := hold.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(numberingLock)); err != nil {
		t.Fatal(err)
	}
	publishN(t, db, "p", "in-page", 4) // committed, not numbered: in the page's state

	// The page: its state (the events it shows) and its head, one snapshot.
	page, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close(ctx)
	var head string
	var state []string
	err = pgx.BeginTxFunc(ctx, page, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT data->>'n' FROM livepg.events WHERE topic = 'p' ORDER BY id`)
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
	if !strings.HasPrefix(head, "3.4-") {
		t.Fatalf("head %q with 3 events numbered and 4 committed after them, want 3.4-<epoch>", head)
	}
	publishN(t, db, "p", "after-page", 3) // committed after the page's snapshot

	// The streams open (each waits for the numbering the test holds), then
	// the numbering goes on.
	type opened struct {
		s   *ssetest.Stream
		err error
	}
	streams := make([]chan opened, len(nodes))
	for i, n := range nodes {
		streams[i] = make(chan opened, 1)
		go func() {
			s, err := ssetest.Dial(ctx, n.URL+"/v1/events?topic=p", head)
			streams[i] <- opened{s, err}
		}()
	}
	// Both nodes' readers and both streams' resolutions wait for the lock.
	waitFor(t, "the numbering waiting on the lock", func() bool {
		return queryInt(t, db, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`) >= 4
	})
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(append([]string{}, state...), "after-page-1", "after-page-2", "after-page-3")
	for i := range nodes {
		o := <-streams[i]
		if o.err != nil {
			t.Fatal(o.err)
		}
		defer o.s.Close()
		got := append([]string{}, state...)
		for _, ev := range collect(t, o.s, 10) {
			if ev.Type == "reset" {
				t.Fatalf("node %d: reset on a head position", i)
			}
			var data struct{ N string }
			if err := json.Unmarshal(decode(t, ev).Data, &data); err != nil {
				t.Fatal(err)
			}
			got = append(got, data.N)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("node %d: page state then stream:\n%v\nwant\n%v", i, got, want)
		}
	}

	// The head's skip matters: resuming from its seq alone would deliver
	// the page's own events again.
	plain := ssetest.Open(t, nodes[1].URL+"/v1/events?topic=p", strings.Replace(head, ".4-", "-", 1))
	if first := collect(t, plain, 4); len(first) != 1 || !strings.Contains(first[0].Data, "in-page-1") {
		t.Fatalf("from %s without its skip: first event %+v, want in-page-1 (the test would prove nothing)", head, first)
	}
}

// Head positions are refused or reset when they cannot be honoured: a skip
// larger than the bound is answered with a reset, and a head position whose
// events were pruned resets too.
func TestHeadPositionBeyondTheLogResets(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabaseBus(t, store.BusCommitTimestamp)
	n := startNode(t, db, realtime.Config{PollInterval: 200 * time.Millisecond})
	publishN(t, db, "r", "x", 2)
	storetest.NumberPending(t, mustConnect(t, db))
	epoch := queryString(t, db, `SELECT epoch FROM livepg.state`)
	for _, id := range []string{
		fmt.Sprintf("0.%d-%s", 100001, epoch), // over the bound
		fmt.Sprintf("1.5-%s", epoch),          // the log has one event after 1
		fmt.Sprintf("0.1-%s", "0123456789ab"), // another history
	} {
		s := ssetest.Open(t, n.URL+"/v1/events?topic=r", id)
		if ev := s.Next(t, 30*time.Second); ev.Type != "reset" {
			t.Errorf("resume from %s: first event %+v, want a reset", id, ev)
		}
	}
	// A head position that can be resolved resumes with no reset.
	s := ssetest.Open(t, n.URL+"/v1/events?topic=r", fmt.Sprintf("0.1-%s", epoch))
	if ev := s.Next(t, 30*time.Second); ev.Type == "reset" || !strings.Contains(ev.Data, "x-2") {
		t.Errorf("resume from 0.1: first event %+v, want x-2", ev)
	}
}

func mustConnect(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, db, sql string) string {
	t.Helper()
	var s string
	if err := mustConnect(t, db).QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// The node says which bus mode it found: its metric, Bus(), and in
// commit_lock mode a warning that names the setting to change. In both
// modes it delivers what writers commit, and numbers events itself only in
// commit_timestamp mode.
func TestNodeReportsTheBusMode(t *testing.T) {
	t.Parallel()
	for _, bus := range storetest.Buses {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			db := storetest.NewDatabaseBus(t, bus)
			var logs syncBuffer
			n := startNode(t, db, realtime.Config{PollInterval: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if n.Bus() != bus || metric(t, n.Node, "livepg_bus_mode", "mode="+bus) != 1 {
				t.Fatalf("node reports bus %q, metric %v; want %s", n.Bus(), metric(t, n.Node, "livepg_bus_mode", "mode="+bus), bus)
			}
			if warned := strings.Contains(logs.String(), "ALTER SYSTEM SET track_commit_timestamp = on"); warned != (bus == store.BusCommitLock) {
				t.Errorf("warned about track_commit_timestamp: %v, in mode %s\n%s", warned, bus, logs.String())
			}
			s := ssetest.Open(t, n.URL+"/v1/events?topic=m", "")
			publishN(t, db, "m", "x", 3)
			if got := collect(t, s, 3); len(got) != 3 {
				t.Fatalf("received %d events, want 3", len(got))
			}
			if numbered := metric(t, n.Node, "livepg_events_numbered_total"); (numbered == 3) != (bus == store.BusCommitTimestamp) {
				t.Errorf("the node numbered %v events in mode %s", numbered, bus)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
