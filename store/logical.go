package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Bus modes (livepg.bus.mode; see migrations/00009_logical.sql).
const (
	BusDefault = "default"
	BusLogical = "logical"
)

// BusMode returns the database's bus mode.
func (s *Store) BusMode(ctx context.Context) (string, error) {
	var mode string
	if err := s.Pool.QueryRow(ctx, `SELECT mode FROM livepg.bus`).Scan(&mode); err != nil {
		return "", fmt.Errorf("read the bus mode (livepg.bus): %w", err)
	}
	return mode, nil
}

// SetBus switches the bus mode; it needs livepg's owner. It waits for the
// transactions writing events under the old mode to end, and returns the
// old mode.
func (s *Store) SetBus(ctx context.Context, mode string) (string, error) {
	var old string
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.set_bus($1)`, mode).Scan(&old); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Hint != "" {
			return "", fmt.Errorf("set the bus to %s: %w (%s)", mode, err, pgErr.Hint)
		}
		return "", fmt.Errorf("set the bus to %s: %w", mode, err)
	}
	return old, nil
}

// DropBusSlot drops the logical bus's replication slot when it exists and
// no walsender uses it (after a switch back to the default mode, so that it
// retains no WAL). It needs the REPLICATION attribute or a superuser.
func (s *Store) DropBusSlot(ctx context.Context, slot string) (bool, error) {
	var dropped bool
	err := s.Pool.QueryRow(ctx, `
		SELECT count(pg_drop_replication_slot(slot_name)) > 0
		  FROM pg_catalog.pg_replication_slots
		 WHERE slot_name = $1 AND database = current_database() AND NOT active`, slot).Scan(&dropped)
	if err != nil {
		return false, fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return dropped, nil
}

// DecodedThrough is the last commit LSN (as text) the decoding leader
// numbered.
func (s *Store) DecodedThrough(ctx context.Context) (string, error) {
	var lsn string
	if err := s.Pool.QueryRow(ctx, `SELECT decoded_through::text FROM livepg.bus`).Scan(&lsn); err != nil {
		return "", fmt.Errorf("read livepg.bus.decoded_through: %w", err)
	}
	return lsn, nil
}

// NumberDecoded numbers events in the given order (decoded commit order),
// with their commit times, and records through (a commit LSN, as text) as
// decoded, in one transaction: livepg.number_decoded. A batch at or below
// what is recorded was numbered before and is skipped (numbered reports
// false). The commit is synchronous whatever the session's setting: nothing
// is delivered before its numbering is durable.
func (s *Store) NumberDecoded(ctx context.Context, ids []int64, times []time.Time, through string) (numbered bool, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		var n *int64
		if err := tx.QueryRow(ctx, `SELECT livepg.number_decoded($1, $2, $3::pg_lsn)`, ids, times, through).Scan(&n); err != nil {
			return err
		}
		numbered = n != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("number decoded events through %s: %w", through, err)
	}
	return numbered, nil
}

// RecoverDecoded numbers the events pending in snapshot (exported by the
// creation of the bus's slot), which the slot will never decode, and records
// consistentPoint as decoded: livepg.recover_decoded. It returns how many it
// numbered.
func (s *Store) RecoverDecoded(ctx context.Context, snapshot, consistentPoint string) (int64, error) {
	var n int64
	err := pgx.BeginTxFunc(ctx, s.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET TRANSACTION SNAPSHOT `+quoteLiteral(snapshot)); err != nil {
			return fmt.Errorf("import the slot's snapshot: %w", err)
		}
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT livepg.recover_decoded($1::pg_lsn)`, consistentPoint).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("number the events committed before the slot: %w", err)
	}
	return n, nil
}

// quoteLiteral quotes s as an SQL string literal (SET TRANSACTION SNAPSHOT
// takes no parameter).
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
