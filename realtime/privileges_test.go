package realtime_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// A node running as the README's node role (livepg_node) delivers what an
// application role (livepg_writer) writes, in order and each once, and the
// application's attempts to break the log are refused and break nothing.
func TestNodeAsLivepgNodeDeliversThroughTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := storetest.NewRecipe(t)
	n := startNode(t, r.Node, notifyOnly)

	app, err := pgx.Connect(ctx, r.App)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	exec := func(sql string) {
		t.Helper()
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("as the application: %s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE myapp.notes (id int PRIMARY KEY, owner text, body text)`)
	exec(`SELECT livepg.track('myapp.notes', 'users/{owner}/notes')`)

	s := ssetest.Open(t, n.URL+"/v1/events?topic=users/*", "")
	exec(`INSERT INTO myapp.notes VALUES (1, 'bob', 'first')`)
	exec(`SELECT livepg.publish('users/bob/notes', '{"n": 1}')`)
	first := s.Next(t, 30*time.Second)

	for _, sql := range []string{
		`INSERT INTO livepg.events (seq, topic, type, data, committed_at) VALUES (9000000000000000000, 'users/bob/notes', 'message', '{}', now())`,
		`SELECT setval('livepg.events_seq', 1)`,
		`SELECT nextval('livepg.events_seq')`,
		`UPDATE livepg.events SET data = '{"rewritten": true}'`,
		`UPDATE livepg.events SET committed_at = '2000-01-01'`,
		`DELETE FROM livepg.events`,
		`TRUNCATE livepg.events`,
		`TRUNCATE livepg.state`,
		`SELECT * FROM livepg.events`,
	} {
		_, err := app.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("as the application: %s: got %v, want a permission error (42501)", sql, err)
		}
	}

	// A value cannot move a row to another user's topic.
	exec(`INSERT INTO myapp.notes VALUES (2, 'bob/../alice', 'sneaky')`)
	exec(`UPDATE myapp.notes SET body = 'second' WHERE id = 1`)
	exec(`SELECT livepg.publish_batch(ARRAY['users/bob/notes', 'users/carol/notes'], ARRAY['message', 'message'], ARRAY['{"n": 2}', '{"n": 3}']::jsonb[])`)
	exec(`DELETE FROM myapp.notes WHERE id = 1`)

	got := []string{fmt.Sprintf("%d %s %s", first.Seq(), decode(t, first).Topic, first.Type)}
	for range 6 {
		ev := s.Next(t, 30*time.Second)
		got = append(got, fmt.Sprintf("%d %s %s", ev.Seq(), decode(t, ev).Topic, ev.Type))
	}
	want := []string{
		"1 users/bob/notes insert",
		"2 users/bob/notes message",
		"3 users/bob%2F..%2Falice/notes insert",
		"4 users/bob/notes update",
		"5 users/bob/notes message",
		"6 users/carol/notes message",
		"7 users/bob/notes delete",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	expectNothingMore(t, s)
}
