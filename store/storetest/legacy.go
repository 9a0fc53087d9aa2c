package storetest

import (
	"context"
	"embed"
	"io/fs"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// legacyFS holds livepg's migrations as they were before the engine kept to
// schema livepg (copied verbatim from that version): the engine's and the
// demo's in one chain, versions 1-3, in goose's default version table.
//
//go:embed legacy/*.sql
var legacyFS embed.FS

// ApplyLegacyLayout migrates the database at url as livepg did before its
// own version table and the demo's own schema: versions 1-3 in
// public.goose_db_version, the demo's public.boards and public.cards
// tracked. Upgrade tests start from it.
func ApplyLegacyLayout(t testing.TB, url string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	dir, err := fs.Sub(legacyFS, "legacy")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(context.Background()); err != nil {
		t.Fatalf("the legacy layout: %v", err)
	}
}
