// Package store is livepg's Postgres side: the connection pool, migrations
// and the event log's queries. It knows nothing of HTTP or of subscribers;
// realtime reads the log through it. (The demo app's data is the demo's:
// cmd/livepg/demo.)
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Names shared by the SQL in migrations/ and the Go code; a test checks that
// the migrations use the same strings.
const (
	Schema        = "livepg"
	NotifyChannel = "livepg"
)

// Errors for callers to map to responses.
var (
	// ErrInvalid is bad input the database refused (an invalid topic, a
	// missing column); the wrapped error says what.
	ErrInvalid  = errors.New("invalid input")
	ErrNotFound = errors.New("not found")
	// ErrTooLarge is an event larger than livepg.limits.max_event_size as
	// JSON text (SQLSTATE 54000, raised by livepg.measure: see
	// migrations/00007_bounds.sql). It comes wrapped with ErrInvalid too.
	ErrTooLarge = errors.New("event too large")
)

// Store is the pool and everything livepg does through it.
type Store struct {
	Pool *pgxpool.Pool
	// logical: the bus is in the logical mode (UseLogicalBus), where
	// events are numbered after their commit by the decoding leader.
	logical atomic.Bool
}

// Open connects a pool to url and checks once that the database answers, so
// a wrong URL fails at start rather than at the first request.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database ping: %w", explainConnectError(err, cfg.ConnConfig))
	}
	var replica bool
	if err := pool.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&replica); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: is it a replica: %w", err)
	}
	if replica {
		pool.Close()
		return nil, fmt.Errorf("%w (at %s)", ErrReplica, describeServer(cfg.ConnConfig))
	}
	return &Store{Pool: pool}, nil
}

// ErrReplica means the database is a read replica (pg_is_in_recovery() is
// true): livepg writes its event log there and LISTENs, so the pool must
// reach the primary.
var ErrReplica = errors.New("the database is a read replica (pg_is_in_recovery() is true); livepg writes its event log and needs the primary")

// explainConnectError adds what to do to the driver's words, where they
// mislead or leave a newcomer guessing.
func explainConnectError(err error, cfg *pgx.ConnConfig) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "3D000": // invalid_catalog_name
		return fmt.Errorf("%w\nthe database %q does not exist on %s: create it with `createdb --host=%s --port=%d --username=%s %s` (or CREATE DATABASE), or fix the name in the URL",
			err, cfg.Database, describeServer(cfg), cfg.Host, cfg.Port, cfg.User, cfg.Database)
	case strings.Contains(err.Error(), "server refused TLS connection"):
		return fmt.Errorf("%w\nthe server at %s does not offer TLS, and the URL's sslmode requires it: use a TLS-enabled server, or add sslmode=disable to the URL where the connection need not be encrypted (a local or private network)",
			err, describeServer(cfg))
	case errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w\nnothing accepts connections at %s: is PostgreSQL running there, and are the host and port in the URL right?", err, describeServer(cfg))
	}
	return err
}

func describeServer(cfg *pgx.ConnConfig) string {
	if strings.HasPrefix(cfg.Host, "/") {
		return fmt.Sprintf("the socket in %s (port %d)", cfg.Host, cfg.Port)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// Close closes the pool.
func (s *Store) Close() { s.Pool.Close() }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.Pool.Ping(ctx) }

// CheckWritable reports whether the database answers and takes writes: not
// a standby (pg_is_in_recovery()), such as a replica being promoted.
func (s *Store) CheckWritable(ctx context.Context) error {
	var standby bool
	if err := s.Pool.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
		return err
	}
	if standby {
		return ErrReplica
	}
	return nil
}

// InTx runs fn in a transaction, committing if it returns nil.
func (s *Store) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.Pool, fn)
}

// asInvalid wraps errors the database raised about its input (data
// exceptions, undefined columns or tables, check violations, an event over
// the size limit) in ErrInvalid
// so that the HTTP layer answers 4xx, not 500.
func asInvalid(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "54000" && strings.HasPrefix(pgErr.Message, "livepg: event data") {
			return fmt.Errorf("%w: %w: %s", ErrInvalid, ErrTooLarge, pgErr.Message)
		}
		switch pgErr.Code[:2] {
		case "22", "23", "42":
			return fmt.Errorf("%w: %s", ErrInvalid, pgErr.Message)
		}
	}
	return err
}
