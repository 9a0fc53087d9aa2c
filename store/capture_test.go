package store_test

import (
	"context"
	"encoding/json"
	"testing"

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
