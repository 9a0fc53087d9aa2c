package store

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/livepg/livepg/migrations"
)

// migrator builds a goose provider over the pool. The session locker holds a
// Postgres advisory lock while migrating, so nodes that start together apply
// each migration once.
func (s *Store) migrator() (*goose.Provider, func(), error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.Pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	return p, func() { db.Close() }, nil
}

// MigrateUp applies every pending migration.
func (s *Store) MigrateUp(ctx context.Context) error {
	p, done, err := s.migrator()
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// MigrateDown rolls back the most recent migration.
func (s *Store) MigrateDown(ctx context.Context) error {
	p, done, err := s.migrator()
	if err != nil {
		return err
	}
	defer done()
	if _, err := p.Down(ctx); err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// MigrateStatus writes one line per migration: applied or pending.
func (s *Store) MigrateStatus(ctx context.Context, w io.Writer) error {
	p, done, err := s.migrator()
	if err != nil {
		return err
	}
	defer done()
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
