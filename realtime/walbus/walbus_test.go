package walbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// logicalDB returns a migrated database in the logical bus mode, on a
// cluster of the test's own with wal_level=logical, and that cluster.
func logicalDB(t *testing.T, settings map[string]string) (string, *store.Store, func() *walbus.Decoder) {
	t.Helper()
	ctx := context.Background()
	all := maps.Clone(storetest.LogicalSettings)
	maps.Copy(all, settings)
	c := storetest.NewClusterWith(t, all)
	db := storetest.NewDatabaseOn(t, c.URL())
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.SetBus(ctx, store.BusLogical); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `CREATE TABLE counters (k int PRIMARY KEY, n int NOT NULL);
		INSERT INTO counters SELECT g, 0 FROM generate_series(0, 3) g`); err != nil {
		t.Fatal(err)
	}
	newDecoder := func() *walbus.Decoder {
		d, err := walbus.New(walbus.Config{URL: db, Handler: &tracingHandler{Handler: realtime.DecodeHandler(s, nil), t: t, s: s},
			RetryInterval: 100 * time.Millisecond,
			Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return db, s, newDecoder
}

// run starts d until the test ends or stop is called.
func run(t *testing.T, d *walbus.Decoder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

type written struct {
	W  int `json:"w"`
	Tx int `json:"tx"`
	I  int `json:"i"`
	K  int `json:"k"`
	N  int `json:"n"` // the counter's value this transaction set: its place in k's lock order
}

// writeLoad runs writers transactions: each publishes an event, then takes
// the row lock of a random counter (waiting for whoever holds it: commit
// order then differs from id and xid order), bumps it, publishes more
// events with the counter's new value, sleeps a random while and commits,
// or aborts one time in five. It returns the committed events.
func writeLoad(t *testing.T, pool *pgxpool.Pool, writers, txs int, stop <-chan struct{}) map[written]bool {
	t.Helper()
	return writeLoadFrom(t, pool, 0, writers, txs, stop)
}

// writeLoadFrom is writeLoad with writers numbered from first, so that two
// loads write different events.
func writeLoadFrom(t *testing.T, pool *pgxpool.Pool, first, writers, txs int, stop <-chan struct{}) map[written]bool {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	committed := map[written]bool{}
	var wg sync.WaitGroup
	errAbort := errors.New("abort on purpose")
	for w := first; w < first+writers; w++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for tx := 0; tx < txs; tx++ {
				select {
				case <-stop:
					return
				default:
				}
				abort := rng.IntN(5) == 0
				var mine []written
				err := pgx.BeginFunc(ctx, pool, func(dbtx pgx.Tx) error {
					k := rng.IntN(4)
					first := written{W: w, Tx: tx, I: 0, K: k, N: -1}
					data, _ := json.Marshal(first)
					if _, err := dbtx.Exec(ctx, `SELECT livepg.publish('t/1', $1)`, data); err != nil {
						return err
					}
					mine = append(mine, first)
					var n int
					if err := dbtx.QueryRow(ctx, `UPDATE counters SET n = n + 1 WHERE k = $1 RETURNING n`, k).Scan(&n); err != nil {
						return err
					}
					var batch [][]byte
					for i := 1; i <= 1+rng.IntN(3); i++ {
						ev := written{W: w, Tx: tx, I: i, K: k, N: n}
						data, _ := json.Marshal(ev)
						mine = append(mine, ev)
						if w%4 == 3 { // a quarter of the writers publish in batches
							batch = append(batch, data)
							continue
						}
						if _, err := dbtx.Exec(ctx, `SELECT livepg.publish('t/2', $1)`, data); err != nil {
							return err
						}
					}
					if batch != nil {
						topics, types := make([]string, len(batch)), make([]string, len(batch))
						for i := range batch {
							topics[i], types[i] = "t/2", "message"
						}
						var numbered int
						if err := dbtx.QueryRow(ctx, `SELECT count(s) FROM livepg.publish_batch($1, $2, $3::jsonb[]) s`, topics, types, batch).Scan(&numbered); err != nil {
							return err
						}
						if numbered != 0 {
							return fmt.Errorf("publish_batch numbered %d events on the way in, in the logical mode", numbered)
						}
					}
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
					if abort {
						return errAbort
					}
					return nil
				})
				if err != nil && !errors.Is(err, errAbort) {
					t.Error(err)
					return
				}
				if err == nil {
					mu.Lock()
					for _, ev := range mine {
						committed[ev] = true
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return committed
}

// waitNumbered waits until no event is pending.
func waitNumbered(t *testing.T, s *store.Store) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var pending int
		if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM livepg.pending`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			var info string
			_ = s.Pool.QueryRow(context.Background(), `SELECT string_agg(format('id=%s writer=%s xmin=%s status=%s', e.id, e.writer_xid, e.xmin, pg_xact_status(e.writer_xid)), '; ')
				|| ' / bus: ' || (SELECT format('%s %s', b.decoded_through, b.mode) FROM livepg.bus b)
				|| ' / slot: ' || coalesce((SELECT format('%s %s %s', s.confirmed_flush_lsn, s.restart_lsn, s.active) FROM pg_replication_slots s), 'none')
				FROM livepg.pending e`).Scan(&info)
			var wal string
			_, _ = s.Pool.Exec(context.Background(), `CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
			err := s.Pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(format('%s %s %s', r.start_lsn, r.record_type, r.xid), '; '), 'none')
				FROM pg_get_wal_records_info('0/1000000', pg_current_wal_lsn()) r
				WHERE r.resource_manager = 'Transaction' AND r.xid::text IN (SELECT e.xmin::text FROM livepg.pending e)`).Scan(&wal)
			t.Fatalf("%d events still unnumbered after 2 minutes: %s; their commit records: %s %v", pending, info, wal, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLog checks that the log holds exactly the committed events, each
// once, with each transaction's events together and in order, and every
// counter's transactions in lock order (the order they committed in).
// orderBy is the column the check orders the log by; it reports the first
// inversion of a counter's order instead of failing, so that a test can
// also show the workload makes another order wrong.
func checkLog(t *testing.T, s *store.Store, committed map[written]bool, orderBy string) (inversion string) {
	t.Helper()
	rows, err := s.Pool.Query(context.Background(), `SELECT data FROM livepg.events ORDER BY `+orderBy)
	if err != nil {
		t.Fatal(err)
	}
	log, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (written, error) {
		var ev written
		err := r.Scan(&ev)
		return ev, err
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[written]bool{}
	for _, ev := range log {
		if seen[ev] {
			t.Fatalf("event %+v is in the log twice", ev)
		}
		seen[ev] = true
		if !committed[ev] {
			t.Fatalf("event %+v is in the log, but its transaction did not commit", ev)
		}
	}
	if len(seen) != len(committed) {
		t.Fatalf("the log holds %d events, writers committed %d", len(seen), len(committed))
	}
	// A transaction's first event, published before it waits for the
	// lock, carries no n: it takes its transaction's.
	txN := map[[2]int]int{}
	for ev := range committed {
		if ev.N >= 0 {
			txN[[2]int{ev.W, ev.Tx}] = ev.N
		}
	}
	lastN := map[int]int{}
	for i, ev := range log {
		ev.N = txN[[2]int{ev.W, ev.Tx}]
		if ev.I > 0 && (i == 0 || log[i-1].W != ev.W || log[i-1].Tx != ev.Tx || log[i-1].I != ev.I-1) && orderBy == "seq" {
			t.Fatalf("event %+v does not follow its transaction's previous event (got %+v before it)", ev, log[max(i-1, 0)])
		}
		if ev.N < lastN[ev.K] && inversion == "" {
			inversion = fmt.Sprintf("counter %d: transaction with n=%d after n=%d", ev.K, ev.N, lastN[ev.K])
		}
		lastN[ev.K] = max(lastN[ev.K], ev.N)
	}
	return inversion
}

// TestDecoderNumbersInCommitOrder is the ordering test of the logical bus:
// 16 writers whose transactions take random time, wait on each other's row
// locks and sometimes abort, with the decoding leader numbering as they go.
// The log must hold every committed event once, each transaction's events
// together, and the transactions of each lock in the order they took it
// (their commit order). The same workload ordered by id (the naive log's
// order) must show an inversion, or the test proves nothing.
func TestDecoderNumbersInCommitOrder(t *testing.T) {
	t.Parallel()
	db, s, newDecoder := logicalDB(t, nil)
	d := newDecoder()
	run(t, d)
	// Events committed before the slot exists are ordered by xid (no
	// track_commit_timestamp here): start writing once it does.
	waitFor(t, "the slot", func() bool { _, _, r := d.Stats(); return r == 1 })
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	committed := writeLoad(t, pool, 16, 40, nil)
	if t.Failed() {
		return
	}
	waitNumbered(t, s)
	if inv := checkLog(t, s, committed, "seq"); inv != "" {
		t.Fatalf("numbered out of commit order: %s", inv)
	}
	if inv := checkLog(t, s, committed, "id"); inv == "" {
		t.Fatal("the workload did not commit out of id order: it cannot tell commit order from insert order")
	}
	t.Logf("%d committed events numbered in commit order", len(committed))
}

// TestDecoderLeaderKill: two decoders campaign; the leader's connection is
// killed under load; the other takes over from the slot, and the log holds
// every committed event once, in commit order.
func TestDecoderLeaderKill(t *testing.T) {
	t.Parallel()
	db, s, newDecoder := logicalDB(t, nil)
	a, b := newDecoder(), newDecoder()
	stopA := run(t, a)
	waitFor(t, "the slot", func() bool { _, _, r := a.Stats(); return r == 1 })
	run(t, b)
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stopWrites := make(chan struct{})
	var committed map[written]bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		committed = writeLoad(t, pool, 8, 1<<30, stopWrites)
	}()
	waitFor(t, "some events numbered by the first leader", func() bool { _, n, _ := a.Stats(); return n > 50 })
	// Kill the leader: its process is gone as far as the server can tell.
	if _, err := s.Pool.Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'livepg walbus' AND backend_type = 'walsender'`); err != nil {
		t.Fatal(err)
	}
	stopA()
	waitFor(t, "the other node to take over", func() bool { return b.Leader() })
	waitFor(t, "events numbered by the new leader", func() bool { _, n, _ := b.Stats(); return n > 50 })
	close(stopWrites)
	<-done
	if t.Failed() {
		return
	}
	waitNumbered(t, s)
	if inv := checkLog(t, s, committed, "seq"); inv != "" {
		t.Fatalf("numbered out of commit order: %s", inv)
	}
}

// TestSlotDroppedUnderLoad: the slot is dropped (its walsender terminated
// first) while writers commit; the events committed while no slot existed
// are found in the table and numbered, and nothing is lost or numbered
// twice.
func TestSlotDroppedUnderLoad(t *testing.T) {
	t.Parallel()
	// Events stranded by the lost slot are ordered by commit timestamp.
	db, s, newDecoder := logicalDB(t, map[string]string{"track_commit_timestamp": "on"})
	d := newDecoder()
	run(t, d)
	waitFor(t, "the slot", func() bool { _, _, r := d.Stats(); return r == 1 })
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stopWrites := make(chan struct{})
	var committed map[written]bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		committed = writeLoad(t, pool, 8, 1<<30, stopWrites)
	}()
	waitFor(t, "some events numbered", func() bool { _, n, _ := d.Stats(); return n > 50 })
	// Terminate the walsender and drop the slot before the decoder's retry
	// (100ms) comes back: retried until the drop wins the race.
	ctx := context.Background()
	waitFor(t, "the slot dropped", func() bool {
		_, err := s.Pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'livepg_bus' AND active_pid IS NOT NULL`)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Pool.Exec(ctx, `SELECT pg_drop_replication_slot('livepg_bus')`)
		return err == nil
	})
	// Writes go on with no slot for a while.
	time.Sleep(300 * time.Millisecond)
	waitFor(t, "the slot recreated and the stranded events numbered", func() bool { _, _, r := d.Stats(); return r >= 2 })
	waitFor(t, "more events decoded", func() bool { _, n, _ := d.Stats(); return n > 200 })
	if d.Recovered() == 0 {
		t.Error("no event was committed while the slot was gone: the test did not test recovery")
	}
	close(stopWrites)
	<-done
	if t.Failed() {
		return
	}
	waitNumbered(t, s)
	if inv := checkLog(t, s, committed, "seq"); inv != "" {
		t.Fatalf("numbered out of commit order: %s", inv)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tracingHandler logs what the decoder hands over, for a failing test.
type tracingHandler struct {
	walbus.Handler
	t  *testing.T
	s  *store.Store
	mu sync.Mutex
}

func (h *tracingHandler) Recover(ctx context.Context, snapshot string, point walbus.LSN) (int64, error) {
	var snap string
	_ = pgx.BeginTxFunc(ctx, h.s.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
	})
	n, err := h.Handler.Recover(ctx, snapshot, point)
	h.t.Logf("recover at %s, snapshot %s: %d events, %v", point, snap, n, err)
	return n, err
}

func (h *tracingHandler) Apply(ctx context.Context, b walbus.Batch) error {
	var xids []string
	for _, t := range b.Txns {
		xids = append(xids, fmt.Sprintf("%d@%s", t.Xid, t.CommitLSN))
	}
	err := h.Handler.Apply(ctx, b)
	h.t.Logf("apply %v: %v", xids, err)
	return err
}

// TestSlotInvalidatedPastItsBound: with max_slot_wal_keep_size set, a slot
// whose leader is away while WAL grows past the bound is invalidated by
// PostgreSQL (wal_status "lost"). The next leader drops and recreates it and
// numbers, from the table, the events the lost slot held: none is lost.
func TestSlotInvalidatedPastItsBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, s, newDecoder := logicalDB(t, map[string]string{"track_commit_timestamp": "on", "max_slot_wal_keep_size": "1MB"})
	first := newDecoder()
	stop := run(t, first)
	waitFor(t, "the slot", func() bool { _, _, r := first.Stats(); return r == 1 })
	stop() // no leader from now on
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	committed := writeLoad(t, pool, 4, 10, nil)
	// WAL past the bound: a few segment switches, then a checkpoint
	// invalidates the slot.
	waitFor(t, "the slot invalidated", func() bool {
		for range 3 {
			if _, err := pool.Exec(ctx, `SELECT livepg.publish('filler', '"x"')`); err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
			t.Fatal(err)
		}
		var status string
		if err := pool.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'livepg_bus'`).Scan(&status); err != nil {
			t.Fatal(err)
		}
		return status == "lost"
	})
	if _, err := pool.Exec(ctx, `DELETE FROM livepg.pending WHERE topic = 'filler'; DELETE FROM livepg.events WHERE topic = 'filler'`); err != nil {
		t.Fatal(err)
	}
	next := newDecoder()
	run(t, next)
	waitFor(t, "a new slot", func() bool { _, _, r := next.Stats(); return r == 1 })
	if next.Recovered() == 0 {
		t.Fatal("the new leader numbered nothing from the table: the events the lost slot held are lost")
	}
	more := writeLoadFrom(t, pool, 4, 4, 10, nil)
	maps.Copy(committed, more)
	waitNumbered(t, s)
	if inv := checkLog(t, s, committed, "seq"); inv != "" {
		t.Fatalf("numbered out of commit order: %s", inv)
	}
}
