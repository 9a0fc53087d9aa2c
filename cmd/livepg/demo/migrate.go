package demo

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Schema is the demo's own schema: its tables and its migrations' version
// table live there, apart from the engine's (livepg) and the application's.
const Schema = "livepg_demo"

// VersionTable is goose's version table for the demo's migrations.
const VersionTable = Schema + ".goose_db_version"

// migrationLockID is the advisory lock nodes take while migrating the demo,
// apart from the engine's, so that nodes starting together apply each
// migration once.
const migrationLockID = 0x6c6976657067_64 // "livepg" + 'd'

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate creates the demo's schema and applies its pending migrations. The
// engine's migrations (schema livepg) must have run first: the demo's tables
// are tracked with livepg.track.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	p, done, err := migrator(ctx, pool)
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("demo migrate up: %w", err)
	}
	return nil
}

// MigrateDown rolls back the demo's most recent migration: on a fresh
// database it drops the demo's tables; tables adopted from an earlier
// livepg (in public) stay.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool) error {
	p, done, err := migrator(ctx, pool)
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.Down(ctx); err != nil {
		return fmt.Errorf("demo migrate down: %w", err)
	}
	return nil
}

func migrator(ctx context.Context, pool *pgxpool.Pool) (*goose.Provider, func(), error) {
	// goose creates its version table but not the schema it is in. Two nodes
	// starting at once would race on CREATE SCHEMA IF NOT EXISTS (it can fail
	// with a unique violation), so they take turns.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{Schema}.Sanitize())
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("demo migrate: create schema %s: %w", Schema, err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID))
	if err != nil {
		return nil, nil, fmt.Errorf("demo migrate: %w", err)
	}
	files, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, nil, fmt.Errorf("demo migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithTableName(VersionTable), goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("demo migrate: %w", err)
	}
	return p, func() { db.Close() }, nil
}

// errNoTables says the demo's migrations have not run.
var errNoTables = errors.New("the demo's tables are missing: run its migrations (demo.Migrate) first")

// resolveSchema finds the schema holding the demo's tables: livepg_demo on a
// database the demo created, public on one made by an earlier livepg, whose
// tracked public.boards and public.cards the migration adopted.
func resolveSchema(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var schema *string
	err := pool.QueryRow(ctx, `
		SELECT CASE
		  WHEN to_regclass('livepg_demo.cards') IS NOT NULL THEN 'livepg_demo'
		  WHEN EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'livepg_capture' AND tgrelid = to_regclass('public.cards'))
		   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'livepg_capture' AND tgrelid = to_regclass('public.boards'))
		  THEN 'public'
		END`).Scan(&schema)
	if err != nil {
		return "", fmt.Errorf("demo: find its tables: %w", err)
	}
	if schema == nil {
		return "", errNoTables
	}
	return *schema, nil
}
