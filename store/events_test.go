package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// numberAll does what a node does before it reads the log: number the
// committed events that have no seq yet (commit_timestamp mode; nothing in
// commit_lock mode).
func numberAll(t testing.TB, s *store.Store) {
	t.Helper()
	if _, err := s.NumberPending(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPublishAssignsSeqAtCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)

	seq1, err := s.Publish(ctx, "boards/1", "message", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := s.Publish(ctx, "boards/2", "note", []byte(`"x\ny"`))
	if err != nil {
		t.Fatal(err)
	}
	if seq2 <= seq1 {
		t.Fatalf("second seq %d not after first %d", seq2, seq1)
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].Seq != seq1 || events[1].Topic != "boards/2" || events[1].Type != "note" {
		t.Fatalf("events = %+v", events)
	}
	if string(events[1].Data) != `"x\ny"` {
		t.Fatalf("data = %s", events[1].Data)
	}
	b, err := s.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Head != seq2 || b.PrunedThrough != 0 {
		t.Fatalf("bounds = %+v", b)
	}
}

func TestRolledBackPublishLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	errRollback := errors.New("roll back")
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := store.PublishTx(ctx, tx, "a", "message", nil); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Fatalf("rolled back event visible: %+v", events)
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	for _, tc := range []struct{ name, sql string }{
		{"null topic", `SELECT livepg.publish(NULL, '{}')`},
		{"empty topic", `SELECT livepg.publish('', '{}')`},
		{"trailing slash", `SELECT livepg.publish('boards/', '{}')`},
		{"double slash", `SELECT livepg.publish('boards//1', '{}')`},
		{"wildcard", `SELECT livepg.publish('boards/*', '{}')`},
		{"newline in topic", `SELECT livepg.publish(E'a\nb', '{}')`},
		{"too long", `SELECT livepg.publish(repeat('a', 257), '{}')`},
		{"newline in type", `SELECT livepg.publish('a', '{}', E'x\ny')`},
		{"null type", `SELECT livepg.publish('a', '{}', NULL)`},
		{"bad json", `SELECT livepg.publish('a', '{')`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Pool.Exec(ctx, tc.sql); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Fatalf("refused input left events: %+v", events)
	}
}

type rowEvent struct {
	Op    string          `json:"op"`
	Table string          `json:"table"`
	New   json.RawMessage `json:"new"`
	Old   json.RawMessage `json:"old"`
}

func TestTrackCapturesRowChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := s.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE "Card Table" (id int PRIMARY KEY, board_id int NOT NULL, text text)`)
	exec(`SELECT livepg.track('"Card Table"', 'boards/{board_id}')`)
	exec(`INSERT INTO "Card Table" VALUES (1, 7, 'hello')`)
	exec(`UPDATE "Card Table" SET text = 'bye' WHERE id = 1`)
	exec(`UPDATE "Card Table" SET text = 'none' WHERE id = 99`) // no row, no event
	exec(`UPDATE "Card Table" SET board_id = 8 WHERE id = 1`)   // moves: both boards hear
	exec(`DELETE FROM "Card Table" WHERE id = 1`)
	exec(`SELECT livepg.untrack('"Card Table"')`)
	exec(`INSERT INTO "Card Table" VALUES (2, 7, 'untracked')`)

	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 100, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ topic, typ string }{
		{"boards/7", "insert"}, {"boards/7", "update"}, {"boards/8", "update"}, {"boards/7", "update"}, {"boards/8", "delete"},
	}
	if len(events) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(events), len(want), events)
	}
	for i, w := range want {
		if events[i].Topic != w.topic || events[i].Type != w.typ {
			t.Errorf("event %d = %s %s, want %s %s", i, events[i].Topic, events[i].Type, w.topic, w.typ)
		}
	}
	var ins, upd, del rowEvent
	mustJSON(t, events[0].Data, &ins)
	mustJSON(t, events[1].Data, &upd)
	mustJSON(t, events[4].Data, &del)
	if ins.Op != "insert" || ins.Table != "Card Table" || string(ins.New) != `{"id": 1, "text": "hello", "board_id": 7}` || ins.Old != nil {
		t.Errorf("insert event = %+v", ins)
	}
	if upd.Op != "update" || string(upd.Old) != `{"id": 1, "text": "hello", "board_id": 7}` || string(upd.New) != `{"id": 1, "text": "bye", "board_id": 7}` {
		t.Errorf("update event = %+v", upd)
	}
	if del.Op != "delete" || del.New != nil || string(del.Old) != `{"id": 1, "text": "bye", "board_id": 8}` {
		t.Errorf("delete event = %+v", del)
	}
}

func TestTrackRefusesBadTemplates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `CREATE TABLE notes (id int, board_id int)`); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`SELECT livepg.track('missing_table', 'boards/{board_id}')`,
		`SELECT livepg.track('notes', 'boards/{nope}')`,
		`SELECT livepg.track('notes', 'boards/*')`,
		`SELECT livepg.track('notes', NULL)`,
		`SELECT livepg.track('notes; DROP TABLE notes', 'x')`,
	} {
		if _, err := s.Pool.Exec(ctx, sql); err == nil {
			t.Errorf("%s: accepted", sql)
		}
	}
	var triggers int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 {
		t.Fatalf("refused track left %d triggers", triggers)
	}
}

func TestPruneDropsOldEventsAndMovesHorizon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	var seqs []int64
	for range 3 {
		seq, err := s.Publish(ctx, "a", "message", nil)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	// Age the first two events past retention.
	if _, err := s.Pool.Exec(ctx, `UPDATE livepg.events SET committed_at = now() - interval '2 hours' WHERE seq <= $1`, seqs[1]); err != nil {
		t.Fatal(err)
	}
	through, err := s.Prune(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if through != seqs[1] {
		t.Fatalf("pruned through %d, want %d", through, seqs[1])
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Seq != seqs[2] {
		t.Fatalf("after prune: %+v", events)
	}
	// Pruning everything keeps the head where it was.
	through, err = s.Prune(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if through != seqs[2] || b.Head != seqs[2] || b.PrunedThrough != seqs[2] {
		t.Fatalf("after full prune: through %d, bounds %+v, want %d", through, b, seqs[2])
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

// A template is refused when its longest rendering (fixed text plus 66 bytes
// per placeholder) could exceed a topic's 256 bytes; an accepted one never
// fails a write, whatever the values.
func TestTrackBoundsTheRenderedTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `CREATE TABLE notes (id int, a text, b text, c text, d text)`); err != nil {
		t.Fatal(err)
	}
	_, err := s.Pool.Exec(ctx, `SELECT livepg.track('notes', 'x/{a}/{b}/{c}/{d}')`) // 6 + 4*66 = 270
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, "256") {
		t.Fatalf("track with a template that may render 270 bytes: %v", err)
	}
	for _, sql := range []string{
		`SELECT livepg.track('notes', 'x%41/{a}/{b}/{c}')`, // 8 + 3*66 = 206
		`INSERT INTO notes VALUES (1, repeat('/', 1000), repeat('é', 500), NULL, 'd')`,
		`INSERT INTO notes VALUES (2, '', '..', '{d}', 'd')`,
	} {
		if _, err := s.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	numberAll(t, s)
	events, err := s.ReadAfter(ctx, 0, 10, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || strings.Count(events[0].Topic, "/") != 3 || len(events[0].Topic) > 256 ||
		events[1].Topic != "x%41/%%/%2E%2E/%7Bd%7D" {
		t.Fatalf("topics: %+v", events)
	}
}

// TestReadNextNumbersAndReadsInOneStep: a node's read step numbers what
// writers committed (in commit_timestamp mode) and reads it in the same
// round trip, bounded by its limit, saying when more is left; a place
// outside the log's history reads nothing.
func TestReadNextNumbersAndReadsInOneStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	mode, err := s.BusMode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish($1, $2::jsonb)`, "t/1", fmt.Sprintf(`{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if mode == store.BusCommitTimestamp {
		// Not numbered yet: a step that does not number reads nothing.
		next, err := s.ReadNext(ctx, false, "", 0, 100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(next.Events) != 0 || next.Numbered != 0 || next.More {
			t.Fatalf("before numbering: %d events, %d numbered, more %v; want none", len(next.Events), next.Numbered, next.More)
		}
	}
	first, err := s.ReadNext(ctx, true, "", 0, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantNumbered := 5
	if mode != store.BusCommitTimestamp {
		wantNumbered = 0 // numbered at commit
	}
	if first.Numbered != wantNumbered || !first.InHistory || !first.More || first.Head != 5 {
		t.Fatalf("first step: numbered %d (want %d), in history %v, more %v, head %d (want 5)",
			first.Numbered, wantNumbered, first.InHistory, first.More, first.Head)
	}
	rest, err := s.ReadNext(ctx, true, first.Epoch, first.Events[len(first.Events)-1].Seq, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if rest.More || rest.Numbered != 0 {
		t.Errorf("second step: more %v, numbered %d; want neither", rest.More, rest.Numbered)
	}
	var got []string
	for _, e := range append(first.Events, rest.Events...) {
		got = append(got, fmt.Sprintf("%d %s %s", e.Seq, e.Topic, e.Data))
	}
	want := []string{`1 t/1 {"n": 0}`, `2 t/1 {"n": 1}`, `3 t/1 {"n": 2}`, `4 t/1 {"n": 3}`, `5 t/1 {"n": 4}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events read:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	elsewhere, err := s.ReadNext(ctx, true, "another-history", 2, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if elsewhere.InHistory || len(elsewhere.Events) != 0 || elsewhere.Epoch != first.Epoch {
		t.Errorf("a place in another history: in history %v, %d events, epoch %q; want false, 0, %q",
			elsewhere.InHistory, len(elsewhere.Events), elsewhere.Epoch, first.Epoch)
	}
}
