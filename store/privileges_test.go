package store_test

import (
	"bytes"
	"context"
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

// tampering is every way the issue found for an application role to break
// the log for everyone, each of which PostgreSQL must refuse with a
// permission error.
var tampering = []string{
	`INSERT INTO livepg.events (seq, topic, type, data, committed_at) VALUES (9000000000000000000, 'notes/1', 'insert', '{}', now())`,
	`INSERT INTO livepg.events (topic, type, data) VALUES ('notes/1', 'insert', '{}')`,
	`SELECT setval('livepg.events_seq', 1)`,
	`SELECT nextval('livepg.events_seq')`,
	`UPDATE livepg.events SET data = '{"rewritten": true}'`,
	`UPDATE livepg.events SET committed_at = '2000-01-01'`,
	`DELETE FROM livepg.events`,
	`TRUNCATE livepg.events`,
	`TRUNCATE livepg.state`,
	`UPDATE livepg.state SET pruned_through = 1000000`,
	`SELECT * FROM livepg.events`,
	`SELECT * FROM livepg.state`,
	// The events not numbered yet (migration 00013): only through publish.
	`INSERT INTO livepg.pending (topic, type, data) VALUES ('notes/1', 'insert', '{}')`,
	`DELETE FROM livepg.pending`,
	`UPDATE livepg.pending SET data = '{"rewritten": true}'`,
	`SELECT livepg.move_pending(ARRAY[1::bigint], NULL)`,
	`ALTER TABLE livepg.pending DISABLE TRIGGER pending_notify`,
	`SELECT livepg.prune('0')`,
	`ALTER TABLE livepg.events DISABLE TRIGGER events_sequence`,
	`SELECT livepg.track('livepg.events', 'x')`,
	`DROP TRIGGER events_sequence ON livepg.events`,
	`CREATE FUNCTION livepg.head() RETURNS bigint LANGUAGE sql AS 'SELECT 1'`,
	`CREATE TABLE livepg.shadow (id int)`,
	`SELECT livepg.sequence()`,
	// The numbering step is the nodes' (livepg_node), never a writer's.
	`SELECT livepg.number_pending()`,
	`SELECT livepg.number_visible(NULL)`,
	`ALTER TABLE livepg.events DISABLE TRIGGER events_notify`,
	`ALTER TABLE livepg.events DROP CONSTRAINT events_seq_key`,
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("as %s: %s: %v", conn.Config().User, sql, err)
	}
}

// refused checks that sql fails with a permission error (42501).
func refused(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	_, err := conn.Exec(context.Background(), sql)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("as %s: %s: got %v, want a permission error (42501)", conn.Config().User, sql, err)
	}
}

// The README's roles, real non-superuser login roles: the application
// (livepg_writer) cannot touch the log but through livepg's functions, and
// what it writes reaches a node running as livepg_node, which needs no more.
func TestLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := storetest.NewRecipe(t)
	app := connect(t, r.App)

	mustExec(t, app, `CREATE TABLE myapp.notes (id int PRIMARY KEY, body text)`)
	mustExec(t, app, `SELECT livepg.track('myapp.notes', 'notes/{id}')`)
	mustExec(t, app, `INSERT INTO myapp.notes VALUES (1, 'first')`)
	mustExec(t, app, `SELECT livepg.publish('notes/1', '{"n": 1}', 'message')`)
	var head string
	// Two events committed: numbered at commit (commit_lock), or not yet,
	// no node having run (commit_timestamp: after seq 0, two more).
	if err := app.QueryRow(ctx, `SELECT livepg.head()`).Scan(&head); err != nil || !strings.HasPrefix(head, "2-") && !strings.HasPrefix(head, "0.2-") {
		t.Fatalf("livepg.head() as the application: %q, %v", head, err)
	}

	for _, sql := range tampering {
		refused(t, app, sql)
	}
	// Code of the application's own that the capture trigger might run (a
	// cast to json of its own type, used by to_jsonb) runs as the
	// application, not as livepg's owner.
	mustExec(t, app, `CREATE TYPE myapp.sneaky AS ENUM ('harmless')`)
	mustExec(t, app, `CREATE FUNCTION myapp.sneaky_json(myapp.sneaky) RETURNS json LANGUAGE plpgsql AS $$
		BEGIN
			UPDATE livepg.events SET data = '{"rewritten": true}';
			RETURN '{}'::json;
		END $$`)
	mustExec(t, app, `CREATE CAST (myapp.sneaky AS json) WITH FUNCTION myapp.sneaky_json(myapp.sneaky)`)
	mustExec(t, app, `CREATE TABLE myapp.traps (id int, s myapp.sneaky)`)
	mustExec(t, app, `SELECT livepg.track('myapp.traps', 'traps/{id}')`)
	refused(t, app, `INSERT INTO myapp.traps VALUES (1, 'harmless')`)
	mustExec(t, app, `SELECT livepg.untrack('myapp.traps')`)

	// Afterwards every way of writing still produces consecutive events.
	mustExec(t, app, `UPDATE myapp.notes SET body = 'second' WHERE id = 1`)
	mustExec(t, app, `SELECT livepg.publish_batch(ARRAY['notes/1', 'notes/2'], ARRAY['message', 'message'], ARRAY['{"n": 2}', '{"n": 3}']::jsonb[])`)
	mustExec(t, app, `DELETE FROM myapp.notes`)

	node, err := store.Open(ctx, r.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	// Every query a node runs works as livepg_node.
	if err := node.MigrateUp(ctx); err != nil {
		t.Fatalf("a node's start (migrate up, nothing pending) as livepg_node: %v", err)
	}
	var status bytes.Buffer
	if err := node.MigrateStatus(ctx, &status); err != nil || strings.Contains(status.String(), "pending") {
		t.Fatalf("migrate status as livepg_node: %v\n%s", err, status.String())
	}
	seq, err := node.Publish(ctx, "notes/9", "message", []byte(`{"n": 4}`))
	if err != nil || seq != 7 {
		t.Fatalf("publish as livepg_node: seq %d, %v", seq, err)
	}
	seqs, errs, err := node.PublishBatch(ctx, []store.NewEvent{{Topic: "notes/9", Type: "message", Data: []byte(`{"n": 5}`)}})
	if err != nil || errs[0] != nil || seqs[0] != 8 {
		t.Fatalf("publish batch as livepg_node: %v %v %v", seqs, errs, err)
	}
	events, err := node.ReadAfter(ctx, 0, 100, 1<<30)
	if err != nil {
		t.Fatalf("read the log as livepg_node: %v", err)
	}
	var got []string
	for i, e := range events {
		if e.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, e.Seq)
		}
		got = append(got, fmt.Sprintf("%s %s", e.Topic, e.Type))
		if strings.Contains(string(e.Data), "rewritten") {
			t.Errorf("event %d was rewritten: %s", e.Seq, e.Data)
		}
	}
	want := []string{"notes/1 insert", "notes/1 message", "notes/1 update", "notes/1 message", "notes/2 message",
		"notes/1 delete", "notes/9 message", "notes/9 message"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("log as the node reads it:\n%s\nwant:\n%s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
	if _, err := node.ReadMatching(ctx, 0, 8, []string{"notes/1"}, []string{"notes/"}, 10, 1<<30); err != nil {
		t.Errorf("catch-up read as livepg_node: %v", err)
	}
	if b, err := node.Bounds(ctx); err != nil || b.Head != 8 {
		t.Errorf("bounds as livepg_node: %+v, %v", b, err)
	}
	if through, err := node.Prune(ctx, time.Hour); err != nil || through != 0 {
		t.Errorf("prune as livepg_node: %d, %v", through, err)
	}
	if err := node.Notify(ctx, "probe"); err != nil {
		t.Errorf("notify as livepg_node: %v", err)
	}
	if _, err := node.NotificationQueueUsage(ctx); err != nil {
		t.Errorf("notification queue usage as livepg_node: %v", err)
	}
	nodeConn := connect(t, r.Node)
	for _, sql := range []string{
		`INSERT INTO livepg.events (seq, topic, type, data) VALUES (9000000000000000000, 'x', 'message', '{}')`,
		`UPDATE livepg.events SET data = '{}'`,
		`DELETE FROM livepg.events`,
		`SELECT setval('livepg.events_seq', 1)`,
		`DELETE FROM livepg.goose_db_version`,
		`SELECT livepg.number_visible(NULL)`,
	} {
		refused(t, nodeConn, sql)
	}

	// No function of livepg's is left executable by PUBLIC (a later
	// migration that forgets to revoke one fails here).
	admin := connect(t, r.Admin)
	var public []string
	rows, err := admin.Query(ctx, `
		SELECT p.oid::regprocedure::text FROM pg_proc p
		 WHERE p.pronamespace = 'livepg'::regnamespace
		   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))`)
	if err != nil {
		t.Fatal(err)
	}
	if public, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(public) != 0 {
		t.Errorf("executable by PUBLIC: %v", public)
	}

	// A node does not migrate: when a migration is pending it says who must.
	var latest int64
	if err := admin.QueryRow(ctx, `SELECT max(version_id) FROM livepg.goose_db_version`).Scan(&latest); err != nil {
		t.Fatal(err)
	}
	mustExec(t, admin, fmt.Sprintf(`DELETE FROM livepg.goose_db_version WHERE version_id = %d`, latest))
	err = node.MigrateUp(ctx)
	if !errors.Is(err, store.ErrNotOwner) || !strings.Contains(err.Error(), "livepg migrate up") {
		t.Errorf("migrate up as livepg_node with a migration pending: %v", err)
	}
	mustExec(t, admin, fmt.Sprintf(`INSERT INTO livepg.goose_db_version (version_id, is_applied) VALUES (%d, true)`, latest))

	// A second database of the same cluster: the roles are there already.
	second := storetest.NewEmptyDatabaseOn(t, r.Cluster.URL())
	secondAdmin := connect(t, second)
	mustExec(t, secondAdmin, `CREATE SCHEMA livepg AUTHORIZATION `+storetest.OwnerRole)
	if err := storetest.Migrate(ctx, storetest.As(t, second, storetest.OwnerRole)); err != nil {
		t.Fatalf("migrating a second database as the owner: %v", err)
	}
	secondApp := connect(t, storetest.As(t, second, storetest.AppRole))
	mustExec(t, secondApp, `SELECT livepg.publish('elsewhere', '{}')`)
	refused(t, secondApp, `SELECT * FROM livepg.events`)
}

// A migrating role that may not create roles says which role is missing.
func TestMigratingWithoutCreateroleNamesTheMissingRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := storetest.NewCluster(t)
	db := storetest.NewEmptyDatabaseOn(t, c.URL())
	admin := connect(t, db)
	mustExec(t, admin, `CREATE ROLE `+storetest.OwnerRole+` LOGIN PASSWORD 'owner-secret'`)
	mustExec(t, admin, `CREATE SCHEMA livepg AUTHORIZATION `+storetest.OwnerRole)
	err := storetest.Migrate(ctx, storetest.As(t, db, storetest.OwnerRole))
	if err == nil || !strings.Contains(err.Error(), "livepg_writer") || !strings.Contains(err.Error(), "may not create it") {
		t.Fatalf("migrate up without CREATEROLE: %v", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Hint, "CREATEROLE") {
		t.Errorf("error %v has no hint about CREATEROLE", err)
	}
	mustExec(t, admin, `ALTER ROLE `+storetest.OwnerRole+` CREATEROLE`)
	if err := storetest.Migrate(ctx, storetest.As(t, db, storetest.OwnerRole)); err != nil {
		t.Fatalf("migrate up with CREATEROLE: %v", err)
	}
	var writer, node bool
	if err := admin.QueryRow(ctx, `SELECT to_regrole('livepg_writer') IS NOT NULL, pg_has_role('livepg_node', 'livepg_writer', 'MEMBER')`).Scan(&writer, &node); err != nil || !writer || !node {
		t.Fatalf("roles after migrating with CREATEROLE: writer %v, node in writer %v, %v", writer, node, err)
	}
}
