package demo

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
// are tracked with livepg.track. When nothing is pending it only reads the
// version table, so a node whose role may not create anything starts on a
// database where the demo is already migrated.
//
// The connected role needs the right to create schema livepg_demo in the
// database, or the schema made beforehand and owned by it (CREATE SCHEMA
// livepg_demo AUTHORIZATION <role>).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	p, done, err := migrator(pool)
	if err != nil {
		return err
	}
	defer done()
	ready, err := versionTableExists(ctx, pool)
	if err != nil {
		return fmt.Errorf("demo migrate up: %w", err)
	}
	if ready {
		pending, err := p.HasPending(ctx)
		if err != nil {
			return fmt.Errorf("demo migrate up: %w", err)
		}
		if !pending {
			return nil
		}
	}
	if err := createSchema(ctx, pool); err != nil {
		return fmt.Errorf("demo migrate up: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("demo migrate up: %w", err)
	}
	return nil
}

// MigrateDown rolls back the demo's most recent migration: on a fresh
// database it drops the demo's tables; tables adopted from an earlier
// livepg (in public) stay.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool) error {
	p, done, err := migrator(pool)
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.Down(ctx); err != nil {
		return fmt.Errorf("demo migrate down: %w", err)
	}
	return nil
}

func migrator(pool *pgxpool.Pool) (*goose.Provider, func(), error) {
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

// versionTableExists reads the catalog's tables (not to_regclass, whose
// cache may not yet know of a table another session has just created).
func versionTableExists(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var ok bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'goose_db_version')`, Schema).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look for %s: %w", VersionTable, err)
	}
	return ok, nil
}

// createSchema creates schema livepg_demo unless it exists: goose creates
// its version table there but not the schema. Nodes starting at once would
// race on CREATE SCHEMA IF NOT EXISTS (it can fail with a unique violation),
// so they take turns.
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
			return fmt.Errorf("create schema %s: %w", Schema, err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, Schema).Scan(&exists); err != nil {
			return fmt.Errorf("create schema %s: %w", Schema, err)
		}
		if exists {
			return nil
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{Schema}.Sanitize()); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient privilege
				return fmt.Errorf("create schema %s: %w (as a superuser, run CREATE SCHEMA %s AUTHORIZATION <this role>, then start again)", Schema, err, Schema)
			}
			return fmt.Errorf("create schema %s: %w", Schema, err)
		}
		return nil
	})
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
