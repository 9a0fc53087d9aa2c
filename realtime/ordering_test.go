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
	"github.com/livepg/livepg/store/storetest"
)

// naiveSequence replaces the commit-time sequence with the naive design, a
// seq taken when the row is inserted. Run the ordering test with
// LIVEPG_TEST_NAIVE_SEQUENCE=1 to see it catch the lost events.
const naiveSequence = `
DROP TRIGGER events_sequence ON livepg.events;
CREATE FUNCTION livepg.naive_sequence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seq := nextval('livepg.events_seq');
    NEW.committed_at := clock_timestamp();
    PERFORM pg_notify('livepg', '');
    RETURN NEW;
END $$;
CREATE TRIGGER events_naive_sequence BEFORE INSERT ON livepg.events
    FOR EACH ROW EXECUTE FUNCTION livepg.naive_sequence();`

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
func TestConcurrentWritersDeliverEveryCommittedEventInOrderOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
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
	cfg := realtime.Config{PollInterval: 200 * time.Millisecond}
	nodes := []*testNode{startNode(t, db, cfg), startNode(t, db, cfg)}

	selectorSets := [][]string{{"t/0"}, {"t/*"}, {"t/1", "t/2"}, {"t/3", "t/*"}, {"t/2/x"}}
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
					for n := range 1 + rng.IntN(5) {
						ev := writtenEvent{Writer: w, Tx: tx, N: n}
						data, _ := json.Marshal(ev)
						topic := topics[rng.IntN(len(topics))]
						if _, err := dbtx.Exec(ctx, `SELECT livepg.publish($1, $2)`, topic, data); err != nil {
							return err
						}
						mine = append(mine, ev)
						time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
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
	wg.Wait()
	if t.Failed() {
		return
	}

	// The log holds exactly the committed events.
	storetest.NumberPending(t, pool)
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
	for _, l := range log {
		var ev writtenEvent
		if err := json.Unmarshal([]byte(l.data), &ev); err != nil {
			t.Fatal(err)
		}
		inLog[ev] = true
	}
	if len(log) != len(committed) || len(inLog) != len(committed) {
		t.Fatalf("log holds %d events (%d distinct), writers committed %d", len(log), len(inLog), len(committed))
	}
	for ev := range committed {
		if !inLog[ev] {
			t.Fatalf("committed event %+v missing from the log", ev)
		}
	}
	t.Logf("%d writers committed %d events in %d transactions (some aborted)", writers, len(committed), writers*txsPerWriter)

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
