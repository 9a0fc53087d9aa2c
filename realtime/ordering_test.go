package realtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
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

// naiveSequence replaces the numbering with the naive design, a seq taken
// when the row is written: each pending row moves into the log as soon as
// it is inserted. Run the ordering test with LIVEPG_TEST_NAIVE_SEQUENCE=1
// to see it catch the lost events.
const naiveSequence = `
CREATE FUNCTION livepg.naive_sequence() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM livepg.move_pending(ARRAY[NEW.id], ARRAY[clock_timestamp()]);
    PERFORM pg_notify('livepg', '');
    RETURN NULL;
END $$;
CREATE TRIGGER pending_naive_sequence AFTER INSERT ON livepg.pending
    FOR EACH ROW EXECUTE FUNCTION livepg.naive_sequence();`

// xidOrder replaces the nodes' numbering order, commit timestamps, with xid
// order (commit_timestamp mode only). Run the ordering test with
// LIVEPG_TEST_XID_ORDER=1 to see the hot rows' counters catch it: a
// transaction that waited on another's row lock commits after it, though
// its xid is often the smaller.
const xidOrder = `
CREATE OR REPLACE FUNCTION livepg.number_visible(max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(p.id ORDER BY p.age DESC, p.id) INTO ids
      FROM (SELECT e.id, age(e.xmin) AS age FROM livepg.pending e
             WHERE pg_xact_commit_timestamp(e.xmin) IS NOT NULL
             ORDER BY age(e.xmin) DESC, e.id LIMIT max_rows) p;
    RETURN livepg.move_pending(ids, NULL);
END $$;`

// writtenEvent is the data of an event the ordering test writes.
type writtenEvent struct {
	Writer int `json:"w"`
	Tx     int `json:"tx"`
	N      int `json:"n"`
}

// TestConcurrentWritersDeliverEveryCommittedEventInOrderOnce is the delivery
// invariant under the race that breaks a naive log: many writers whose
// transactions take random time and sometimes abort, so that ids are taken
// in one order and committed in another; a quarter of them publish in
// batches (livepg.publish_batch, as the HTTP publish batcher does). Every subscriber on both nodes
// must receive exactly the committed events matching its selectors, in seq
// order, once.
//
// Some transactions also update one of two rows of a tracked table, "hot",
// holding the row lock for a while: writers queue behind one another's
// locks, so that commit order differs from the order of their xids (the
// waiting transaction often began, and took its xid, first). The log must
// follow commit order: each hot row's events carry the row's counter, which
// must read 1, 2, 3, ... in seq order.
//
// It runs in both bus modes (migrations/00008_bus.sql): commit_timestamp,
// where nodes number events after the commit, and commit_lock, each with
// the default window of the log and with a tiny one, with small subscriber
// buffers so that streams fall behind and catch up, and with streams
// resuming while the writers write (catch-ups served from the window and
// from the log); and in the logical mode (00009), where one node decodes
// the WAL and numbers.
func TestConcurrentWritersDeliverEveryCommittedEventInOrderOnce(t *testing.T) {
	t.Parallel()
	forEachBusAndWindow(t, func(t *testing.T, bus string, window int64) {
		testConcurrentWriters(t, storetest.NewDatabaseBus(t, bus), window)
	})
	// The logical mode (migrations/00009_logical.sql): the nodes' decoding
	// leader numbers in WAL order.
	t.Run(store.BusLogical, func(t *testing.T) {
		t.Parallel()
		db, _ := logicalDatabase(t)
		testConcurrentWriters(t, db, 0)
	})
}

func testConcurrentWriters(t *testing.T, db string, window int64) {
	ctx := context.Background()
	start := logHead(t, db)
	if os.Getenv("LIVEPG_TEST_NAIVE_SEQUENCE") != "" {
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, naiveSequence); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	if os.Getenv("LIVEPG_TEST_XID_ORDER") != "" {
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, xidOrder); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	setup, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL)`,
		`INSERT INTO hot VALUES (0, 0), (1, 0)`,
		`SELECT livepg.track('hot', 'hot/{id}')`,
	} {
		if _, err := setup.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	setup.Close(ctx)
	cfg := realtime.Config{PollInterval: 200 * time.Millisecond, Window: window, Buffer: 16}
	nodes := []*testNode{startNode(t, db, cfg), startNode(t, db, cfg)}

	selectorSets := [][]string{{"t/0"}, {"t/*"}, {"t/1", "t/2"}, {"t/3", "t/*"}, {"t/2/x"}, {"hot/*"}}
	type subscription struct {
		selectors []realtime.Selector
		stream    *ssetest.Stream
		name      string
	}
	var subs []subscription
	for i, n := range nodes {
		for _, set := range selectorSets {
			q := url.Values{"topic": set}
			var sels []realtime.Selector
			for _, s := range set {
				sel, err := realtime.ParseSelector(s)
				if err != nil {
					t.Fatal(err)
				}
				sels = append(sels, sel)
			}
			subs = append(subs, subscription{
				selectors: sels,
				stream:    ssetest.Open(t, n.URL+"/v1/events?"+q.Encode(), ""),
				name:      fmt.Sprintf("node %d %v", i, set),
			})
		}
	}

	// Writers go through their own pool, as any SQL client would.
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const writers, txsPerWriter = 16, 60
	topics := []string{"t/0", "t/1", "t/2", "t/3", "t/2/x", "other"}
	var mu sync.Mutex
	committed := map[writtenEvent]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for tx := range txsPerWriter {
				abort := rng.IntN(5) == 0
				var mine []writtenEvent
				err := pgx.BeginFunc(ctx, pool, func(dbtx pgx.Tx) error {
					if w%4 == 3 {
						// A batch writer: livepg.publish_batch numbers its
						// events on the way in, under the commit-order lock.
						var evTopics, types []string
						var datas [][]byte
						for n := range 1 + rng.IntN(5) {
							ev := writtenEvent{Writer: w, Tx: tx, N: n}
							data, _ := json.Marshal(ev)
							evTopics = append(evTopics, topics[rng.IntN(len(topics))])
							types = append(types, "message")
							datas = append(datas, data)
							mine = append(mine, ev)
						}
						if _, err := dbtx.Exec(ctx, `SELECT livepg.publish_batch($1, $2, $3::jsonb[])`, evTopics, types, datas); err != nil {
							return err
						}
						if abort {
							return errAbort
						}
						return nil
					}
					hot := rng.IntN(3) == 0
					// Half the hot transactions take the row just before
					// they commit instead: those queued behind a holder
					// commit one right after the other when it lets go,
					// in the order they reached the row, not the order of
					// their xids, and often before the next numbering.
					hotLast := hot && rng.IntN(2) == 0
					for n := range 1 + rng.IntN(5) {
						ev := writtenEvent{Writer: w, Tx: tx, N: n}
						data, _ := json.Marshal(ev)
						topic := topics[rng.IntN(len(topics))]
						if _, err := dbtx.Exec(ctx, `SELECT livepg.publish($1, $2)`, topic, data); err != nil {
							return err
						}
						mine = append(mine, ev)
						if hot && !hotLast && n == 0 {
							// After the xid is taken: wait for the row, then
							// hold it while the transaction goes on.
							if _, err := dbtx.Exec(ctx, `UPDATE hot SET n = n + 1 WHERE id = $1`, rng.IntN(2)); err != nil {
								return err
							}
						}
						time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					}
					if hotLast {
						if _, err := dbtx.Exec(ctx, `UPDATE hot SET n = n + 1 WHERE id = $1`, rng.IntN(2)); err != nil {
							return err
						}
					}
					if abort {
						return errAbort
					}
					return nil
				})
				if err != nil && err != errAbort {
					t.Error(err)
					return
				}
				if !abort {
					mu.Lock()
					for _, ev := range mine {
						committed[ev] = true
					}
					mu.Unlock()
				}
			}
		}()
	}
	// While they write, streams resume from where the log began on each
	// node, as pages would after a deploy: from the window or the log.
	waitFor(t, "a good part of the writes", func() bool { return metric(t, nodes[1].Node, "livepg_log_head") >= 300 })
	for i, n := range nodes {
		for _, set := range selectorSets[:3] {
			q := url.Values{"topic": set}
			var sels []realtime.Selector
			for _, s := range set {
				sel, _ := realtime.ParseSelector(s)
				sels = append(sels, sel)
			}
			subs = append(subs, subscription{
				selectors: sels,
				stream:    ssetest.Open(t, n.URL+"/v1/events?"+q.Encode(), start),
				name:      fmt.Sprintf("node %d %v resumed from %s", i, set, start),
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// The log holds exactly the committed events.
	storetest.NumberPending(t, pool)
	waitFor(t, "every event numbered (the logical mode's leader)", func() bool {
		var pending bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM livepg.pending)`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		return !pending
	})
	rows, err := pool.Query(ctx, `SELECT seq, topic, data FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	type logged struct {
		seq   int64
		topic string
		data  string
	}
	log, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (logged, error) {
		var l logged
		err := r.Scan(&l.seq, &l.topic, &l.data)
		return l, err
	})
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[writtenEvent]bool{}
	hotCounts := map[string]int64{}
	var hotEvents int
	for _, l := range log {
		if l.topic == "hot/0" || l.topic == "hot/1" {
			// Commit order: the row's counter goes up by one at each event.
			var change struct {
				New struct{ N int64 } `json:"new"`
			}
			if err := json.Unmarshal([]byte(l.data), &change); err != nil {
				t.Fatal(err)
			}
			if change.New.N != hotCounts[l.topic]+1 {
				t.Fatalf("seq %d: %s holds n = %d after n = %d: the log is not in commit order", l.seq, l.topic, change.New.N, hotCounts[l.topic])
			}
			hotCounts[l.topic] = change.New.N
			hotEvents++
			continue
		}
		var ev writtenEvent
		if err := json.Unmarshal([]byte(l.data), &ev); err != nil {
			t.Fatal(err)
		}
		inLog[ev] = true
	}
	if len(log)-hotEvents != len(committed) || len(inLog) != len(committed) {
		t.Fatalf("log holds %d events (%d distinct), writers committed %d", len(log)-hotEvents, len(inLog), len(committed))
	}
	if hotEvents < 20 {
		t.Fatalf("only %d updates of the hot rows committed: the test did not make writers wait on one another", hotEvents)
	}
	for ev := range committed {
		if !inLog[ev] {
			t.Fatalf("committed event %+v missing from the log", ev)
		}
	}
	t.Logf("%d writers committed %d events in %d transactions (some aborted), %d updates of hot rows", writers, len(committed), writers*txsPerWriter, hotEvents)

	// Every subscriber receives exactly its share of the log, in order.
	for _, sub := range subs {
		var want []string
		var last int64
		for _, l := range log {
			for _, sel := range sub.selectors {
				if sel.Match(l.topic) {
					want = append(want, fmt.Sprintf("%d %s", l.seq, l.topic))
					last = l.seq
					break
				}
			}
		}
		var got []string
		for _, ev := range collect(t, sub.stream, last) {
			got = append(got, fmt.Sprintf("%d %s", ev.Seq(), decode(t, ev).Topic))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: received %d events, want %d\nfirst difference: %s", sub.name, len(got), len(want), firstDiff(got, want))
		}
	}

	// Both ways of catching up were taken where the window says.
	var fromWindow, fromLog, lagged float64
	for _, n := range nodes {
		fromWindow += metric(t, n.Node, "livepg_catchup_window_reads_total")
		fromLog += metric(t, n.Node, "livepg_catchup_batch_events_count")
		lagged += metric(t, n.Node, "livepg_subscribers_lagged_total")
	}
	t.Logf("catch-up batches: %v from the window, %v from the log; %v times a stream fell behind", fromWindow, fromLog, lagged)
	if window == tinyWindow && fromLog == 0 {
		t.Error("no catch-up read the log: the tiny window did not exercise the log path")
	}
	if window != tinyWindow && fromWindow == 0 {
		t.Error("no catch-up was served from the window")
	}
}

var errAbort = fmt.Errorf("abort on purpose")

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d: got %q, want %q", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(got), len(want))
}
