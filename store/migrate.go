package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/livepg/livepg/migrations"
)

// VersionTable is goose's version table for livepg's own migrations. It lives
// in schema livepg, so that an application's own goose table
// (public.goose_db_version) is never read or written.
const VersionTable = Schema + ".goose_db_version"

// migrationLockID is the advisory lock held while migrating, so that nodes
// that start together apply each migration once. It is livepg's own, not
// goose's default, so an application migrating with goose at the same time
// does not wait for livepg or the other way round.
const migrationLockID int64 = 7236828372618428009

// ErrNotOwner is returned when migrations are pending and the connected role
// cannot apply them (a node running as livepg_node, say).
var ErrNotOwner = errors.New("livepg migrations are pending and this role cannot apply them: run `livepg migrate up` as the owner of schema livepg")

// legacyVersions are the core migrations a database made before livepg kept
// its version table in its own schema may have applied, each with the
// catalog object whose presence proves it ran.
var legacyVersions = []struct {
	version int64
	proof   string
}{
	{1, `EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'livepg' AND tablename = 'events')`},
	{3, `EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	              WHERE n.nspname = 'livepg' AND p.proname = 'publish_batch')`},
}

// migrator builds a goose provider over the pool. The session locker holds a
// Postgres advisory lock while migrating.
func (s *Store) migrator() (*goose.Provider, *sql.DB, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID))
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.Pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker), goose.WithTableName(VersionTable))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	return p, db, nil
}

// prepare makes the database ready for goose, which cannot do it itself: it
// creates schema livepg (goose's version table lives there) and adopts a
// database migrated before the version table moved into the schema. It does
// nothing, and needs no privilege, once livepg.goose_db_version exists.
func (s *Store) prepare(ctx context.Context, db *sql.DB) error {
	ready, err := versionTableExists(ctx, db)
	if err != nil || ready {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("prepare schema %s: %w", Schema, err)
	}
	defer tx.Rollback()
	// Nodes that start together adopt the database once.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockID); err != nil {
		return fmt.Errorf("prepare schema %s: %w", Schema, err)
	}
	if ready, err := versionTableExists(ctx, tx); err != nil || ready {
		return err
	}
	var schemaExists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, Schema).Scan(&schemaExists); err != nil {
		return fmt.Errorf("prepare schema %s: %w", Schema, err)
	}
	if !schemaExists {
		if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+Schema); err != nil {
			return fmt.Errorf("create schema %s: %w", Schema, needsOwner(err))
		}
	}
	// A database made before the version table moved: record the core
	// migrations its catalog shows were applied. Its public.goose_db_version
	// is left alone (it may be the application's own).
	var applied []int64
	for _, v := range legacyVersions {
		var ok bool
		if err := tx.QueryRowContext(ctx, `SELECT `+v.proof).Scan(&ok); err != nil {
			return fmt.Errorf("inspect schema %s: %w", Schema, err)
		}
		if ok {
			applied = append(applied, v.version)
		}
	}
	if len(applied) > 0 {
		versions, err := database.NewStore(database.DialectPostgres, VersionTable)
		if err != nil {
			return fmt.Errorf("adopt schema %s: %w", Schema, err)
		}
		if err := versions.CreateVersionTable(ctx, tx); err != nil {
			return fmt.Errorf("create %s: %w", VersionTable, needsOwner(err))
		}
		for _, v := range append([]int64{0}, applied...) {
			if err := versions.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
				return fmt.Errorf("record livepg migration %d in %s: %w", v, VersionTable, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("prepare schema %s: %w", Schema, err)
	}
	return nil
}

// versionTableExists reads the catalog's tables rather than calling
// to_regclass, whose cache may not yet know of a table another session has
// just created (an advisory lock, unlike a table's, does not refresh it).
func versionTableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	var ok bool
	schema, table, _ := strings.Cut(VersionTable, ".")
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`, schema, table).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for %s: %w", VersionTable, err)
	}
	return ok, nil
}

// needsOwner turns a permission error into ErrNotOwner, keeping the
// database's error (and its hint, which pgx leaves out of the message) in
// the chain. livepg's migrations raise their own permission errors, which say
// what to do: those are not ErrNotOwner.
func needsOwner(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if pgErr.Hint != "" {
		err = fmt.Errorf("%w (hint: %s)", err, pgErr.Hint)
	}
	if pgErr.Code == "42501" && !strings.HasPrefix(pgErr.Message, "livepg") {
		return fmt.Errorf("%w: %w", ErrNotOwner, err)
	}
	return err
}

// MigrateUp applies every pending migration. When none is pending it only
// reads the version table, so a node running as a role that may not migrate
// (livepg_node) starts on an up-to-date database; when some are pending and
// the role cannot apply them, the error wraps ErrNotOwner.
func (s *Store) MigrateUp(ctx context.Context) error {
	p, db, err := s.migrator()
	if err != nil {
		return err
	}
	defer db.Close()
	ready, err := versionTableExists(ctx, db)
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	if ready {
		pending, err := p.HasPending(ctx)
		if err != nil {
			return fmt.Errorf("migrate up: %w", needsOwner(err))
		}
		if !pending {
			return nil
		}
		if err := canMigrate(ctx, db); err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
	}
	if err := s.prepare(ctx, db); err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate up: %w", needsOwner(err))
	}
	return nil
}

// canMigrate reports ErrNotOwner unless the connected role owns schema
// livepg (or is a member of its owner, or a superuser).
func canMigrate(ctx context.Context, db *sql.DB) error {
	var owns bool
	var role, owner string
	err := db.QueryRowContext(ctx, `
		SELECT pg_has_role(current_user, n.nspowner, 'MEMBER'), current_user, n.nspowner::regrole::text
		  FROM pg_namespace n WHERE n.nspname = $1`, Schema).Scan(&owns, &role, &owner)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // no schema yet: creating it says whether the role may
	}
	if err != nil {
		return fmt.Errorf("read the owner of schema %s: %w", Schema, err)
	}
	if !owns {
		return fmt.Errorf("%w (connected as %s; schema %s belongs to %s)", ErrNotOwner, role, Schema, owner)
	}
	return nil
}

// MigrateDown rolls back the most recent migration.
func (s *Store) MigrateDown(ctx context.Context) error {
	p, db, err := s.migrator()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := s.prepare(ctx, db); err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	if _, err := p.Down(ctx); err != nil {
		return fmt.Errorf("migrate down: %w", needsOwner(err))
	}
	return nil
}

// MigrateStatus writes one line per migration: applied or pending, as
// recorded in livepg.goose_db_version.
func (s *Store) MigrateStatus(ctx context.Context, w io.Writer) error {
	p, db, err := s.migrator()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := s.prepare(ctx, db); err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	status, err := p.Status(ctx)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	for _, st := range status {
		applied := "pending"
		if st.State == goose.StateApplied {
			applied = "applied " + st.AppliedAt.Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(w, "%-40s %s\n", st.Source.Path, applied)
	}
	return nil
}
