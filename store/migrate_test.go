package store_test

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// gooseUp applies the migrations in dir with goose's default version table
// (public.goose_db_version), as livepg's main did before the version table
// moved into schema livepg, and as an application's own goose does.
func gooseUp(t *testing.T, dbURL, dir string) {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := stdlib.OpenDBFromPool(s.Pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("goose up %s: %v", dir, err)
	}
}

type versionRow struct {
	Version int64
	Applied bool
}

func versions(t *testing.T, conn *pgx.Conn, table string) []versionRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT version_id, is_applied FROM `+table+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[versionRow])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func versionIDs(rows []versionRow) []int64 {
	var ids []int64
	for _, r := range rows {
		ids = append(ids, r.Version)
	}
	return ids
}

// coreVersions are the versions of migrations/ (00002, the demo's tables, left
// the core chain).
var coreVersions = []int64{0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

type logRow struct {
	Seq   int64
	Topic string
	Type  string
	Data  string
}

func readLog(t *testing.T, conn *pgx.Conn) []logRow {
	t.Helper()
	// As a node would: number what is pending first (from migration 00008 on).
	if _, err := conn.Exec(context.Background(), `DO $$ BEGIN
		IF to_regprocedure('livepg.number_pending(integer)') IS NOT NULL THEN PERFORM livepg.number_pending(); END IF;
	END $$`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(context.Background(), `SELECT seq, topic, type, data::text FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[logRow])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A database made by the main of before this change (schema livepg, versions
// 1-3 in public.goose_db_version, the demo's public.boards and public.cards
// tracked, a writer role with the old README's grants) upgrades in place.
func TestUpgradeInPlaceFromThePublicVersionTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := storetest.NewEmptyDatabase(t)
	storetest.ApplyLegacyLayout(t, dbURL)

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// The old README's writer grants.
	writer := "old_writer_" + strings.ToLower(strings.TrimPrefix(conn.Config().Database, "livepg_test_"))
	exec(`CREATE ROLE ` + writer + ` NOLOGIN`)
	exec(`GRANT USAGE ON SCHEMA livepg TO ` + writer)
	exec(`GRANT INSERT, UPDATE, SELECT ON livepg.events TO ` + writer)
	exec(`GRANT USAGE, UPDATE ON SEQUENCE livepg.events_seq TO ` + writer)
	exec(`SELECT livepg.publish('news', '{"n": 1}')`)
	exec(`INSERT INTO boards (name) VALUES ('Roadmap')`)
	exec(`INSERT INTO cards (board_id, col, text) VALUES (1, 'todo', 'upgrade')`)
	exec(`SELECT livepg.publish_batch(ARRAY['news', 'news'], ARRAY['message', 'message'], ARRAY['{"n": 2}', '{"n": 3}']::jsonb[])`)
	exec(`UPDATE cards SET col = 'doing'`)
	before := readLog(t, conn)
	if len(before) != 6 {
		t.Fatalf("legacy log has %d events, want 6: %+v", len(before), before)
	}
	publicVersions := versions(t, conn, "public.goose_db_version")
	if !reflect.DeepEqual(versionIDs(publicVersions), []int64{0, 1, 2, 3}) {
		t.Fatalf("legacy public.goose_db_version = %v", publicVersions)
	}

	// Two nodes start together on it: the upgrade happens once.
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- storetest.Migrate(ctx, dbURL) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("upgrade: %v", err)
		}
	}

	if after := readLog(t, conn); !reflect.DeepEqual(after, before) {
		t.Fatalf("the upgrade changed the log:\nbefore %+v\nafter  %+v", before, after)
	}
	if got := versions(t, conn, "public.goose_db_version"); !reflect.DeepEqual(got, publicVersions) {
		t.Errorf("public.goose_db_version changed: %v, was %v", got, publicVersions)
	}
	if got := versionIDs(versions(t, conn, "livepg.goose_db_version")); !reflect.DeepEqual(got, coreVersions) {
		t.Errorf("livepg.goose_db_version has %v, want %v", got, coreVersions)
	}
	// The demo's tables stay, tracked, and the log continues from its head.
	var tracked []string
	rows, err := conn.Query(ctx, `SELECT tbl::text || ' ' || topic FROM livepg.tracked ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if tracked, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if want := []string{"boards boards", "cards boards/{board_id}"}; !reflect.DeepEqual(tracked, want) {
		t.Errorf("tracked after upgrade = %q, want %q", tracked, want)
	}
	exec(`UPDATE cards SET col = 'done'`)
	exec(`SELECT livepg.publish('news', '{"n": 4}')`)
	after := readLog(t, conn)
	head := before[len(before)-1].Seq
	if len(after) != len(before)+2 || after[len(before)].Seq != head+1 || after[len(before)+1].Seq != head+2 ||
		after[len(before)].Topic != "boards/1" || after[len(before)].Type != "update" {
		t.Fatalf("after the upgrade, head %d, the log goes on %+v", head, after[len(before):])
	}
	var cards, boards int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM public.cards), (SELECT count(*) FROM public.boards)`).Scan(&cards, &boards); err != nil {
		t.Fatal(err)
	}
	if cards != 1 || boards != 1 {
		t.Errorf("demo tables after upgrade: %d cards, %d boards", cards, boards)
	}
	// The old grants are gone.
	var privileges []string
	rows, err = conn.Query(ctx, `
		SELECT c.relname || ':' || a.privilege_type
		  FROM pg_class c, aclexplode(c.relacl) a
		 WHERE c.relnamespace = 'livepg'::regnamespace AND a.grantee = $1::regrole`, writer)
	if err != nil {
		t.Fatal(err)
	}
	if privileges, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(privileges) != 0 {
		t.Errorf("%s still holds %v", writer, privileges)
	}

	// Migrating again changes nothing; status reads livepg's own table.
	if err := storetest.Migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var status bytes.Buffer
	if err := s.MigrateStatus(ctx, &status); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(status.String(), "pending") || strings.Contains(status.String(), "00002") ||
		strings.Count(status.String(), "applied") != len(coreVersions)-1 {
		t.Errorf("status after upgrade:\n%s", status.String())
	}
}

// A database whose application migrates with goose (its own
// public.goose_db_version at version 3, its own boards and cards) takes
// livepg with no collision.
func TestMigrateBesideAnApplicationsOwnGoose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := storetest.NewEmptyDatabase(t)
	gooseUp(t, dbURL, "testdata/app")
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	appVersions := versions(t, conn, "public.goose_db_version")

	s, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var status bytes.Buffer
	if err := s.MigrateStatus(ctx, &status); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(status.String(), "applied") {
		t.Errorf("status before livepg's migrations ran:\n%s", status.String())
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	if got := versions(t, conn, "public.goose_db_version"); !reflect.DeepEqual(got, appVersions) {
		t.Errorf("the application's version table changed: %v, was %v", got, appVersions)
	}
	if got := versionIDs(versions(t, conn, "livepg.goose_db_version")); !reflect.DeepEqual(got, coreVersions) {
		t.Errorf("livepg.goose_db_version has %v, want %v", got, coreVersions)
	}
	var title string
	var triggers int
	if err := conn.QueryRow(ctx, `SELECT title, (SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('boards'::regclass, 'cards'::regclass) AND NOT tgisinternal) FROM boards`).Scan(&title, &triggers); err != nil {
		t.Fatal(err)
	}
	if title != "the app's own board" || triggers != 0 {
		t.Errorf("the application's tables: title %q, %d triggers", title, triggers)
	}
	if seq, err := s.Publish(ctx, "boards/1", "message", []byte(`{}`)); err != nil || seq != 1 {
		t.Fatalf("publish after migrating: seq %d, %v", seq, err)
	}
}

// Every migration rolls back, down to none, and applies again.
func TestMigrateDownToNothingAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	for _, sql := range []string{
		`CREATE TABLE notes (id int, board_id int)`,
		`SELECT livepg.track('notes', 'boards/{board_id}')`,
		`INSERT INTO notes VALUES (1, 7)`,
	} {
		if _, err := s.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for range len(coreVersions) - 1 {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var leftovers []string
	rows, err := s.Pool.Query(ctx, `
		SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'livepg'::regnamespace AND c.relkind IN ('r', 'v', 'S')
		UNION ALL
		SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'livepg'::regnamespace
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if leftovers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(leftovers, []string{"goose_db_version", "goose_db_version_id_seq"}) {
		t.Fatalf("after migrating down to nothing, schema livepg holds %v", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, "again", "message", nil); err != nil {
		t.Fatal(err)
	}
}
