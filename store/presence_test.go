package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// An application role can read a topic's members but cannot forge one:
// not in the table, not through the functions nodes use, not with a
// presence event of its own. A node's role can.
func TestPresenceCannotBeForgedByAWriter(t *testing.T) {
	t.Parallel()
	r := storetest.NewRecipe(t)
	ctx := context.Background()
	node, err := store.Open(ctx, r.Node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	if _, err := node.PresenceRenew(ctx, "node-1", 15*time.Second); err != nil {
		t.Fatalf("as the node: %v", err)
	}
	if ok, err := node.PresenceFlush(ctx, "node-1", []store.Member{{Topic: "boards/1", ID: "m1", Sub: "ann"}}, nil); err != nil || !ok {
		t.Fatalf("as the node: flush: %v %v", ok, err)
	}

	app := connect(t, r.App)
	var n int
	if err := app.QueryRow(ctx, `SELECT count(*) FROM livepg.presence_members('boards/1')`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("as the app: livepg.presence_members: %d, %v; want 1", n, err)
	}
	for _, sql := range []string{
		`INSERT INTO livepg.presence (topic, id, sub, node) VALUES ('boards/1', 'fake', 'mallory', 'node-1')`,
		`DELETE FROM livepg.presence`,
		`UPDATE livepg.presence_nodes SET expires_at = now() + interval '1 year'`,
		`SELECT livepg.presence_flush('node-1', '{boards/1}', '{fake}', '{mallory}', '{null}', '{}', '{}')`,
		`SELECT livepg.presence_renew('node-1', '1 hour')`,
		`SELECT livepg.publish('boards/1', '{"op":"join","id":"fake","sub":"mallory"}', 'presence')`,
		`SELECT livepg.publish_batch('{boards/1}', '{presence}', '{"{\"op\":\"leave\",\"id\":\"m1\"}"}')`,
	} {
		_, err := app.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("as the app: %s: %v, want a permission error (42501)", sql, err)
		}
	}
	_, members, err := node.PresenceSnapshot(ctx)
	if err != nil || len(members) != 1 || members[0].ID != "m1" {
		t.Fatalf("members after the attempts: %+v, %v", members, err)
	}
}

// Joins and leaves of a batch cost one statement, and a join of a member
// another node holds (its page reconnected there) moves it without an
// event; a leave by the node that no longer holds it removes nothing.
func TestPresenceFlushMovesAMemberWithoutEvents(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t)
	ctx := context.Background()
	for _, node := range []string{"a", "b"} {
		if _, err := s.PresenceRenew(ctx, node, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	m := store.Member{Topic: "boards/2", ID: "page", Sub: "ann"}
	flush := func(node string, joins []store.Member, leaves []store.MemberKey) {
		t.Helper()
		if ok, err := s.PresenceFlush(ctx, node, joins, leaves); err != nil || !ok {
			t.Fatalf("flush as %s: %v %v", node, ok, err)
		}
	}
	events := func() []string {
		t.Helper()
		if _, err := s.NumberPending(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := s.Pool.Query(ctx, `SELECT data->>'op' FROM livepg.events WHERE type = 'presence' ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		var ops []string
		for rows.Next() {
			var op string
			_ = rows.Scan(&op)
			ops = append(ops, op)
		}
		return ops
	}
	flush("a", []store.Member{m}, nil)
	flush("b", []store.Member{m}, nil)                             // the page reconnected to b
	flush("a", nil, []store.MemberKey{{Topic: m.Topic, ID: m.ID}}) // a's grace ran out
	if got := events(); len(got) != 1 || got[0] != "join" {
		t.Fatalf("presence events %v, want one join", got)
	}
	m.Meta = []byte(`{"name":"ann"}`)
	flush("b", []store.Member{m}, nil) // new meta: a join carries it
	flush("b", nil, []store.MemberKey{{Topic: m.Topic, ID: m.ID}})
	if got := events(); len(got) != 3 || got[1] != "join" || got[2] != "leave" {
		t.Fatalf("presence events %v, want join, join, leave", got)
	}
	// A node without a lease changes nothing.
	if ok, err := s.PresenceFlush(ctx, "never-renewed", []store.Member{m}, nil); err != nil || ok {
		t.Fatalf("flush without a lease: %v %v, want false", ok, err)
	}
}
