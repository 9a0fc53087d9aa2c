package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The logical bus mode (migrations/00009_logical.sql): writers only insert;
// one node decodes the WAL and numbers events in commit-LSN order.
// livepg.bus.mode is BusLogical or BusDefault (then the mode is one of
// 00008's, BusCommitTimestamp or BusCommitLock); BusMode says BusLogical.
const (
	BusDefault = "default"
	BusLogical = "logical"
)

// UseLogicalBus tells the store that the bus is in the logical mode: HTTP
// publishes then write without the commit-order lock and wait for the
// decoding leader to number their events (PublishBatch, Publish).
func (s *Store) UseLogicalBus(on bool) { s.logical.Store(on) }

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

// ErrNotVisibleYet means decoded events are not visible yet (their writers'
// commits are flushed but not finished: a synchronous standby is slow):
// call NumberDecoded again.
var ErrNotVisibleYet = errors.New("decoded events are not visible yet")

// NumberDecoded numbers events in the given order (decoded commit order),
// with their commit times, and records through (a commit LSN, as text) as
// decoded, in one transaction: livepg.number_decoded. A batch at or below
// what is recorded was numbered before and is skipped (numbered reports
// false). The commit waits for its flush even when the session's
// synchronous_commit is off: nothing is delivered before its numbering is
// durable.
func (s *Store) NumberDecoded(ctx context.Context, ids []int64, times []time.Time, through string) (numbered bool, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		if err := durableCommit(ctx, tx); err != nil {
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
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "LP001" {
			return false, fmt.Errorf("%w: %s", ErrNotVisibleYet, pgErr.Message)
		}
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
		if err := durableCommit(ctx, tx); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT livepg.recover_decoded($1::pg_lsn)`, consistentPoint).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("number the events committed before the slot: %w", err)
	}
	return n, nil
}

// durableCommit makes tx's commit wait for its WAL flush when the session
// would not (synchronous_commit = off): nothing is delivered before its
// numbering is durable. Stronger settings (remote_apply...) stay.
func durableCommit(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT set_config('synchronous_commit', 'on', true) WHERE current_setting('synchronous_commit') = 'off'`)
	return err
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

// ErrLeaderBehind means events a page saw are still unnumbered after
// SeenInSnapshot's wait: the decoding leader is down or far behind.
var ErrLeaderBehind = errors.New("events a page has seen are not numbered yet (is a node decoding? LIVEPG_BUS=logical)")

// MaxSeenScan bounds how far SeenInSnapshot looks: the events after a
// page's position it reads. A page's position names the events numbered
// after its snapshot was taken that it saw nonetheless: a handful while the
// decoding leader keeps up. One further behind than this is not resolved
// (ErrTooFarBehind): its stream resets, which is always safe, instead of a
// client making the node walk the log from an old seq.
const MaxSeenScan = 100_000

// ErrTooFarBehind: a page's position (logical bus mode) is more than
// MaxSeenScan events behind the log's head.
var ErrTooFarBehind = errors.New("the page's position is too far behind the log's head to resolve")

// SeenWait is how long SeenInSnapshot waits for the decoding leader.
const SeenWait = 10 * time.Second

// waitForLeader calls done until it reports true, for up to SeenWait, then
// gives up with ErrLeaderBehind. The checks back off (2 ms doubling to
// 200 ms): a wait for a leader that is down costs tens of queries, not
// thousands.
func waitForLeader(ctx context.Context, done func() (bool, error)) error {
	deadline := time.Now().Add(SeenWait)
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return ErrLeaderBehind
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// SeenInSnapshot resolves a page's position in the logical bus mode: the
// page read its state in snap (a pg_snapshot, as text) and has every event
// through seq after, plus those its snapshot saw committed but not yet
// numbered. It waits (up to SeenWait) until those are numbered, then
// returns their seqs after after, in order: the events the page's stream
// must skip.
func (s *Store) SeenInSnapshot(ctx context.Context, after int64, snap string) ([]int64, error) {
	err := waitForLeader(ctx, func() (bool, error) {
		var pending bool
		err := s.Pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM livepg.pending e
			                WHERE e.writer_xid IS NOT NULL
			                  AND pg_visible_in_snapshot(e.writer_xid, $1::pg_snapshot))`, snap).Scan(&pending)
		if err != nil {
			return false, fmt.Errorf("events seen in snapshot %s: %w", snap, asInvalid(err))
		}
		return !pending, nil
	})
	if err != nil {
		return nil, err
	}
	// At most MaxSeenScan+1 rows: one more than that says the position is
	// too far behind.
	rows, err := s.Pool.Query(ctx, `
		SELECT e.seq, coalesce(pg_visible_in_snapshot(e.writer_xid, $2::pg_snapshot), false)
		  FROM livepg.events e
		 WHERE e.seq > $1
		 ORDER BY e.seq LIMIT $3`, after, snap, MaxSeenScan+1)
	if err != nil {
		return nil, fmt.Errorf("events seen in snapshot %s: %w", snap, asInvalid(err))
	}
	var seqs []int64
	scanned := 0
	var seq int64
	var seen bool
	_, err = pgx.ForEachRow(rows, []any{&seq, &seen}, func() error {
		scanned++
		if seen {
			seqs = append(seqs, seq)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events seen in snapshot %s: %w", snap, asInvalid(err))
	}
	if scanned > MaxSeenScan {
		return nil, fmt.Errorf("%w: more than %d events after seq %d", ErrTooFarBehind, MaxSeenScan, after)
	}
	return seqs, nil
}
