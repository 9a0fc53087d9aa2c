package demo_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/cmd/livepg/demo"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// emptyDatabase creates a database with nothing in it on the test server
// and returns its URL; it is dropped when the test ends.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	admin := storetest.NewDatabase(t) // any database on the server will do to create another
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "livepg_demo_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
			conn.Close(ctx)
		}
	})
	if u, err := url.Parse(admin); err == nil && u.Scheme != "" {
		u.Path = "/" + name
		return u.String()
	}
	return admin + " dbname=" + name // a keyword/value connection string
}

// A fresh database gets the demo's tables in schema livepg_demo, tracked,
// with the demo's own version table there too: nothing of the demo's lands
// in public. Migrating again changes nothing; rolling back drops them.
func TestFreshDatabaseGetsTheDemoInItsOwnSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := startApp(t, demo.Options{})
	if n := app.count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('boards', 'cards')`); n != 0 {
		t.Fatalf("%d demo tables in public", n)
	}
	if n := app.count(t, `SELECT count(*) FROM pg_trigger WHERE tgname = 'livepg_capture'
		AND tgrelid IN ('livepg_demo.boards'::regclass, 'livepg_demo.cards'::regclass)`); n != 2 {
		t.Fatalf("%d of the demo's 2 tables tracked", n)
	}
	if n := app.count(t, `SELECT count(*) FROM livepg_demo.goose_db_version WHERE version_id = 1 AND is_applied`); n != 1 {
		t.Fatalf("the demo's version table records version 1 %d times", n)
	}
	if err := demo.Migrate(ctx, app.Pool); err != nil {
		t.Fatalf("migrate again: %v", err)
	}

	// Its writes are events on the boards' topics.
	_, board := do(t, "POST", app.URL+"/api/boards", `{"name":"B"}`)
	code, card := do(t, "POST", fmt.Sprintf("%s/api/boards/%v/cards", app.URL, board["id"]), `{"text":"x","col":"todo"}`)
	if code != http.StatusCreated {
		t.Fatalf("add card: %d %v", code, card)
	}
	if n := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e WHERE topic = 'boards'`); n != 1 {
		t.Fatalf("%d events on boards, want 1 (the new board)", n)
	}
	if n := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e WHERE topic = $1`, fmt.Sprintf("boards/%v", board["id"])); n != 1 {
		t.Fatalf("%d events on the board's topic, want 1 (the new card)", n)
	}

	if err := demo.MigrateDown(ctx, app.Pool); err != nil {
		t.Fatal(err)
	}
	if n := app.count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'livepg_demo' AND tablename IN ('boards', 'cards')`); n != 0 {
		t.Fatalf("%d demo tables left after migrate down", n)
	}
	if n := app.count(t, `SELECT count(*) FROM livepg.tracked`); n != 0 {
		t.Fatalf("%d tables still tracked after migrate down", n)
	}
}

// An application's own boards and cards tables in public do not collide
// with the demo's, and the demo leaves them alone.
func TestDatabaseWithItsOwnBoardsTakesTheDemo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	pool := openPool(t, db)
	if _, err := pool.Exec(ctx, `
		CREATE TABLE public.boards (slug text PRIMARY KEY);
		CREATE TABLE public.cards (slug text PRIMARY KEY, board text REFERENCES public.boards);
		INSERT INTO public.boards VALUES ('ours');
		INSERT INTO public.cards VALUES ('c1', 'ours');`); err != nil {
		t.Fatal(err)
	}
	if err := demo.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate the demo beside the app's own boards: %v", err)
	}
	app := serveApp(t, db, pool, demo.Options{})
	if code, b := do(t, "POST", app.URL+"/api/boards", `{"name":"Demo"}`); code != http.StatusCreated {
		t.Fatalf("create board: %d %v", code, b)
	}
	if n := app.count(t, `SELECT count(*) FROM livepg_demo.boards`); n != 1 {
		t.Fatalf("%d boards in livepg_demo, want 1", n)
	}
	if n := app.count(t, `SELECT count(*) FROM public.boards WHERE slug = 'ours'`) + app.count(t, `SELECT count(*) FROM public.cards`); n != 2 {
		t.Fatalf("the app's own rows changed: %d left of 2", n)
	}
	if n := app.count(t, `SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('public.boards'::regclass, 'public.cards'::regclass) AND NOT tgisinternal`); n != 0 {
		t.Fatalf("%d triggers on the app's own tables", n)
	}
}

// A database made by livepg before the demo had a schema of its own keeps
// its board where it is (public.boards, public.cards): enabling the demo
// records its migration as applied in its own version table, creates no
// second set of tables, shows the board, and edits, the app's and psql's,
// still produce events on the board's topic.
func TestUpgradeKeepsTheBoardsOfAnEarlierLivepg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := emptyDatabase(t)
	storetest.ApplyLegacyLayout(t, db)
	pool := openPool(t, db)
	var boardID, cardID int64
	if err := pool.QueryRow(ctx, `INSERT INTO boards (name) VALUES ('Made before') RETURNING id`).Scan(&boardID); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO cards (board_id, col, text) VALUES ($1, 'todo', 'first'), ($1, 'doing', 'second') RETURNING id`, boardID).Scan(&cardID); err != nil {
		t.Fatal(err)
	}

	// Enable the demo as serve does: the engine's migrations, then the demo's.
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.MigrateUp(ctx); err != nil {
		t.Fatalf("engine migrations on the earlier layout: %v", err)
	}
	if err := demo.Migrate(ctx, pool); err != nil {
		t.Fatalf("demo migrations on the earlier layout: %v", err)
	}
	app := serveApp(t, db, pool, demo.Options{})
	if n := app.count(t, `SELECT count(*) FROM livepg_demo.goose_db_version WHERE version_id = 1 AND is_applied`); n != 1 {
		t.Fatalf("the demo's version table records version 1 %d times", n)
	}
	if n := app.count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'livepg_demo' AND tablename IN ('boards', 'cards')`); n != 0 {
		t.Fatalf("%d new demo tables beside the earlier ones", n)
	}

	b := fmt.Sprintf("%s/api/boards/%d", app.URL, boardID)
	code, snap := do(t, "GET", b, "")
	if code != http.StatusOK {
		t.Fatalf("read the earlier board: %d %v", code, snap)
	}
	state := snap["state"].(map[string]any)
	if name := state["board"].(map[string]any)["name"]; name != "Made before" || len(state["cards"].([]any)) != 2 {
		t.Fatalf("the earlier board reads %v", state)
	}
	if code, list := do(t, "GET", app.URL+"/api/boards", ""); code != 200 || len(list["state"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, list)
	}

	topic := fmt.Sprintf("boards/%d", boardID)
	before := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e WHERE topic = $1`, topic)
	if code, got := do(t, "PATCH", fmt.Sprintf("%s/cards/%d", b, cardID), `{"col":"done"}`); code != 200 || got["col"] != "done" {
		t.Fatalf("move a card: %d %v", code, got)
	}
	if code, got := do(t, "POST", b+"/cards", `{"text":"third","col":"todo"}`); code != http.StatusCreated {
		t.Fatalf("add a card: %d %v", code, got)
	}
	if _, err := pool.Exec(ctx, `UPDATE cards SET text = 'from psql' WHERE id = $1`, cardID); err != nil {
		t.Fatal(err)
	}
	var ops []string
	storetest.NumberPending(t, pool)
	rows, err := pool.Query(ctx, `SELECT type FROM livepg.events WHERE topic = $1 ORDER BY seq OFFSET $2`, topic, before)
	if err != nil {
		t.Fatal(err)
	}
	if ops, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ops, " ") != "update insert update" {
		t.Fatalf("events after the upgrade: %q, want update insert update", ops)
	}
	if n := app.count(t, `SELECT count(*) FROM public.cards WHERE board_id = $1`, boardID); n != 3 {
		t.Fatalf("%d cards in public.cards, want 3", n)
	}
}

// Nodes that start together on a fresh database migrate the demo once
// between them, and every one of them succeeds.
func TestConcurrentMigrationsAllSucceed(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	pool := openPool(t, db)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() { errs <- demo.Migrate(context.Background(), pool) }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent migration: %v", err)
		}
	}
	var applied int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM livepg_demo.goose_db_version WHERE version_id = 1`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 1 {
		t.Fatalf("version 1 recorded %d times", applied)
	}
}

// loginRole creates a login role for this test (roles belong to the whole
// cluster), runs setup as the superuser with %[1]s standing for the role's
// quoted name, and returns db's URL as that role. The role is dropped when
// the test ends.
func loginRole(t *testing.T, db, setup string) string {
	t.Helper()
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "livepg_demo_test_" + hex.EncodeToString(b[:])
	quoted := pgx.Identifier{name}.Sanitize()
	admin := openPool(t, db)
	if _, err := admin.Exec(ctx, `CREATE ROLE `+quoted+` LOGIN PASSWORD 'test-secret'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, db); err == nil {
			_, _ = conn.Exec(ctx, `DROP OWNED BY `+quoted)
			_, _ = conn.Exec(ctx, `DROP ROLE `+quoted)
			conn.Close(ctx)
		}
	})
	if setup != "" {
		if _, err := admin.Exec(ctx, fmt.Sprintf(setup, quoted)); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := pgx.ParseConfig(db)
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "postgres", User: url.UserPassword(name, "test-secret"), Host: fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), Path: "/" + cfg.Database}
	q := url.Values{"sslmode": {"disable"}}
	if strings.HasPrefix(cfg.Host, "/") { // a Unix socket
		u.Host = ""
		q.Set("host", cfg.Host)
		q.Set("port", fmt.Sprint(cfg.Port))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// A node whose role may create nothing starts the demo on a database where
// it is already migrated: migrating again only reads the version table.
func TestMigratedDemoStartsAsARoleThatCannotCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := startApp(t, demo.Options{}) // migrated by the superuser
	asReader := loginRole(t, app.DB, `GRANT USAGE ON SCHEMA livepg_demo TO %[1]s; GRANT SELECT ON ALL TABLES IN SCHEMA livepg_demo TO %[1]s`)
	pool := openPool(t, asReader)
	if err := demo.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate an up-to-date demo as a role that cannot create: %v", err)
	}
	if _, err := demo.New(ctx, pool, demo.Options{}); err != nil {
		t.Fatal(err)
	}
}

// A role that may not create schemas says what to do.
func TestMigrateWithoutTheRightToCreateSaysWhatToDo(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	pool := openPool(t, loginRole(t, db, ""))
	err := demo.Migrate(context.Background(), pool)
	if err == nil || !strings.Contains(err.Error(), "CREATE SCHEMA livepg_demo AUTHORIZATION") {
		t.Fatalf("migrate as a role that cannot create schema livepg_demo: %v", err)
	}
}

// Where livepg has its node role, the role may use the demo's tables.
func TestNodeRoleMayUseTheDemosTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	pool := openPool(t, db)
	// The engine's migrations make livepg_node; create it here if this
	// engine does not (roles are the cluster's: another test may too).
	if _, err := pool.Exec(ctx, `DO $$ BEGIN CREATE ROLE livepg_node NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`); err != nil {
		t.Fatal(err)
	}
	if err := demo.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var may bool
	if err := pool.QueryRow(ctx, `SELECT has_schema_privilege('livepg_node', 'livepg_demo', 'USAGE')
		AND has_table_privilege('livepg_node', 'livepg_demo.goose_db_version', 'SELECT')
		AND has_table_privilege('livepg_node', 'livepg_demo.cards', 'SELECT, INSERT, UPDATE, DELETE')
		AND has_table_privilege('livepg_node', 'livepg_demo.boards', 'SELECT, INSERT, UPDATE, DELETE')`).Scan(&may); err != nil {
		t.Fatal(err)
	}
	if !may {
		t.Fatal("livepg_node may not use the demo's tables")
	}
}
