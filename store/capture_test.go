package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store/storetest"
)

// oldRenderTopic is livepg.render_topic as migration 00005 wrote it: the
// general parse (placeholders are the matches of \{[^{}]+\}) that 00012's
// faster walk must agree with on every template.
const oldRenderTopic = `
CREATE FUNCTION pg_temp.old_render_topic(template text, row_data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    fixed text[] := regexp_split_to_array(template, '\{[^{}]+\}');
    names text[] := ARRAY(SELECT m.found[1]
                            FROM regexp_matches(template, '\{([^{}]+)\}', 'g') WITH ORDINALITY AS m(found, i)
                           ORDER BY m.i);
    result text := fixed[1];
BEGIN
    FOR i IN 1 .. coalesce(cardinality(names), 0) LOOP
        result := result || livepg.topic_segment(row_data ->> names[i]) || fixed[i + 1];
    END LOOP;
    RETURN result;
END
$$`

// TestRenderTopicAgreesWithTheGeneralParse: the template walk renders every
// template as the regular-expression parse it replaced, those track()
// accepts and any other (stray braces, empty or nested placeholders, a
// missing column), with values that need escaping, hashing or are NULL.
func TestRenderTopicAgreesWithTheGeneralParse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, oldRenderTopic); err != nil {
		t.Fatal(err)
	}
	rows := []map[string]any{
		{"board_id": 42, "x": "1", "y": "two words/and a slash", "b": "B", "a{b": "q", "empty": "", "dots": "..",
			"long": "a very long value that is longer than sixty-four bytes once it is escaped, surely",
			"ü":    "ünïcode", "n": nil},
		{},
	}
	templates := []string{
		"boards/{board_id}", "a/{x}/b/{y}", "{x}", "x", "", "{x}{y}", "a/{x}{b}/c",
		"{missing}", "{n}", "{empty}/{dots}", "t/{long}", "t/{ü}",
		"{}", "{{x}}", "a}{b}", "{x", "x}", "}{x}", "{a{b}c}", "{x}}", "{{x}", "a{b}", "{a{b}",
		"{x}/{", "}", "{", "{}{x}", "a/{x}/{}",
	}
	for _, row := range rows {
		data, err := json.Marshal(row)
		if err != nil {
			t.Fatal(err)
		}
		for _, tpl := range templates {
			var got, want *string
			if err := conn.QueryRow(ctx, `SELECT livepg.render_topic($1, $2::jsonb), pg_temp.old_render_topic($1, $2::jsonb)`,
				tpl, string(data)).Scan(&got, &want); err != nil {
				t.Fatalf("template %q: %v", tpl, err)
			}
			if (got == nil) != (want == nil) || (got != nil && *got != *want) {
				t.Errorf("template %q, row %s: render_topic = %v, the general parse = %v", tpl, data, deref(got), deref(want))
			}
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<NULL>"
	}
	return *s
}

// TestTrackedTableEventsCarryTheRowAndItsTopic: a tracked table's insert,
// update (also announced on the old topic when the row moved) and delete
// are recorded with the row, its old row and the rendered topics.
func TestTrackedTableEventsCarryTheRowAndItsTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	for _, sql := range []string{
		`CREATE TABLE cards (id int PRIMARY KEY, board_id int NOT NULL, title text)`,
		`SELECT livepg.track('cards', 'boards/{board_id}/cards')`,
		`INSERT INTO cards VALUES (1, 7, 'a b')`,
		`UPDATE cards SET title = 'c' WHERE id = 1`,
		`UPDATE cards SET board_id = 8 WHERE id = 1`,
		`DELETE FROM cards WHERE id = 1`,
	} {
		if _, err := s.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := s.NumberPending(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Pool.Query(ctx, `SELECT topic, type, data::text FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	type event struct{ topic, typ, data string }
	var got []event
	for rows.Next() {
		var e event
		if err := rows.Scan(&e.topic, &e.typ, &e.data); err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	card := func(board int, title string) string {
		return `{"id": 1, "title": "` + title + `", "board_id": ` + string(rune('0'+board)) + `}`
	}
	moved := `{"op": "update", "new": ` + card(8, "c") + `, "old": ` + card(7, "c") + `, "table": "cards"}`
	want := []event{
		{"boards/7/cards", "insert", `{"op": "insert", "new": ` + card(7, "a b") + `, "table": "cards"}`},
		{"boards/7/cards", "update", `{"op": "update", "new": ` + card(7, "c") + `, "old": ` + card(7, "a b") + `, "table": "cards"}`},
		{"boards/8/cards", "update", moved},
		{"boards/7/cards", "update", moved},
		{"boards/8/cards", "delete", `{"op": "delete", "old": ` + card(8, "c") + `, "table": "cards"}`},
	}
	if len(got) != len(want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestCaptureRendersEveryTemplateAsRenderTopic: livepg.capture renders the
// topic itself for the template shape livepg.track accepts (migration
// 00016); for that shape and for any other template of a trigger made by
// hand, an insert, an update that moves the row and a delete record the
// topics livepg.render_topic gives, or fail as livepg.publish fails on such
// a topic.
func TestCaptureRendersEveryTemplateAsRenderTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `CREATE TABLE r (id int PRIMARY KEY, board_id int, x text, y text, b text, "a{b" text,
		empty text, dots text, dot text, long text, "ü" text, n text, slash text)`); err != nil {
		t.Fatal(err)
	}
	rows := []string{
		`(1, 42, '1', 'two words/and a slash', 'B', 'q', '', '..', '.x', ` +
			`'a very long value that is longer than sixty-four bytes once it is escaped, surely', 'ünïcode', NULL, 'a/b')`,
		`(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
		// 64 plain characters pass as they are; 65 are shortened and hashed.
		`(1, 7, '` + strings.Repeat("a", 64) + `', '` + strings.Repeat("b", 65) + `', 'Aa0_.:@=+-', '%', ' ', '.', '-.', 'x', 'é', 'z', 'ok')`,
	}
	templates := []string{
		"boards/{board_id}", "a/{x}/b/{y}", "{x}", "x", "", "{x}{y}", "a/{x}{b}/c",
		"{missing}", "{n}", "{empty}/{dots}", "t/{long}", "t/{ü}", "{dot}/{slash}", "t/{a{b}",
		"{}", "{{x}}", "a}{b}", "{x", "x}", "}{x}", "{a{b}c}", "{x}}", "{{x}", "a{b}", "{a{b}",
		"{x}/{", "}", "{", "{}{x}", "a/{x}/{}", "a//{x}", "%/{x}", strings.Repeat("t/", 130) + "{x}",
	}
	code := func(err error) string {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return pgErr.Code
		}
		if err != nil {
			return err.Error()
		}
		return ""
	}
	for _, row := range rows {
		for _, tpl := range templates {
			err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `CREATE TRIGGER livepg_capture AFTER INSERT OR UPDATE OR DELETE ON r
					FOR EACH ROW EXECUTE FUNCTION livepg.capture(`+quoteLiteral(tpl)+`)`); err != nil {
					return err
				}
				// What render_topic gives, and how publish takes it, for the
				// row and for the row moved (x changed).
				var want []string
				var wantCodes []string
				var old, moved *string
				if err := tx.QueryRow(ctx, `SELECT livepg.render_topic($1, to_jsonb(v)), livepg.render_topic($1, to_jsonb(v) || '{"x": "moved"}')
					FROM (VALUES `+row+`) v(id, board_id, x, y, b, "a{b", empty, dots, dot, long, "ü", n, slash)`, tpl).Scan(&old, &moved); err != nil {
					return err
				}
				for _, topic := range []*string{old, moved} {
					sp, err := tx.Begin(ctx)
					if err != nil {
						return err
					}
					_, err = sp.Exec(ctx, `SELECT livepg.publish($1, '{}', 'insert')`, topic)
					wantCodes = append(wantCodes, code(err))
					if err := sp.Rollback(ctx); err != nil {
						return err
					}
				}
				// An update publishes the new topic, then the old one if it differs.
				updateCode := wantCodes[1]
				if updateCode == "" && deref(moved) != deref(old) {
					updateCode = wantCodes[0]
				}
				steps := []struct{ sql, wantCode string }{
					{`INSERT INTO r VALUES ` + row, wantCodes[0]},
					{`UPDATE r SET x = 'moved'`, updateCode},
					{`DELETE FROM r`, wantCodes[1]},
				}
				if wantCodes[0] == "" {
					want = append(want, deref(old))
				}
				if wantCodes[0] == "" && wantCodes[1] == "" {
					want = append(want, deref(moved))
					if deref(moved) != deref(old) {
						want = append(want, deref(old))
					}
					want = append(want, deref(moved))
				}
				// The events land in livepg.pending, or in livepg.events in
				// the commit_lock mode: both draw ids from one sequence.
				var before int64
				if err := tx.QueryRow(ctx, `SELECT greatest((SELECT max(id) FROM livepg.pending), (SELECT max(id) FROM livepg.events), 0)`).Scan(&before); err != nil {
					return err
				}
				var failed string
				for _, step := range steps {
					if failed != "" {
						break
					}
					sp, err := tx.Begin(ctx)
					if err != nil {
						return err
					}
					_, err = sp.Exec(ctx, step.sql)
					got := code(err)
					if got != step.wantCode {
						t.Errorf("template %q, row %s: %s: error %q, want %q", tpl, row, step.sql, got, step.wantCode)
					}
					if got != "" {
						failed = got
						if err := sp.Rollback(ctx); err != nil {
							return err
						}
						continue
					}
					if err := sp.Commit(ctx); err != nil {
						return err
					}
				}
				var got []string
				r, err := tx.Query(ctx, `SELECT topic FROM (SELECT id, topic FROM livepg.pending UNION ALL SELECT id, topic FROM livepg.events) e
					WHERE id > $1 ORDER BY id`, before)
				if err != nil {
					return err
				}
				if got, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
					return err
				}
				if failed == "" && strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("template %q, row %s: topics %q, want %q", tpl, row, got, want)
				}
				return errRollback
			})
			if err != nil && !errors.Is(err, errRollback) {
				t.Fatalf("template %q: %v", tpl, err)
			}
		}
	}
}

var errRollback = errors.New("rolled back on purpose")

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
