package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// NewEvent is an event to record: its topic, type and JSON data.
type NewEvent struct {
	Topic, Type string
	Data        []byte
}

// PublishBatch records events in one transaction — one commit, one flush,
// one NOTIFY — and returns each one's seq in seqs, or in errs the reason the
// database refused it (wrapping ErrInvalid). A refused event is left out and
// the others are committed without it. err is a failure of the whole batch
// (the database unreachable, the commit failed): then nothing was recorded.
func (s *Store) PublishBatch(ctx context.Context, events []NewEvent) (seqs []int64, errs []error, err error) {
	seqs = make([]int64, len(events))
	errs = make([]error, len(events))
	topics := make([]string, len(events))
	types := make([]string, len(events))
	data := make([]string, len(events))
	for i, e := range events {
		topics[i], types[i], data[i] = e.Topic, e.Type, string(e.Data)
		if e.Data == nil {
			data[i] = "null"
		}
	}
	err = publishAll(ctx, s, topics, types, data, seqs)
	if !errors.Is(err, ErrInvalid) {
		if err != nil {
			return nil, nil, fmt.Errorf("publish batch of %d: %w", len(events), err)
		}
		return seqs, errs, nil
	}
	// Some event is refused, and it spoiled the statement: record each
	// under a savepoint of its own, so that only the refused ones fail.
	ids := make([]int64, len(events))
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		for i := range events {
			err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				var err error
				ids[i], err = PublishTx(ctx, sp, topics[i], types[i], []byte(data[i]))
				return err
			})
			if errors.Is(err, ErrInvalid) {
				errs[i] = err
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("publish batch of %d: %w", len(events), err)
	}
	clear(seqs)
	if err := s.seqsOf(ctx, ids, seqs); err != nil {
		return nil, nil, err
	}
	return seqs, errs, nil
}

// publishAll records every event with livepg.publish_many (one INSERT; see
// migrations/00008_bus.sql) and fills seqs in order. The statement is its
// own transaction, committed as it ends: one round trip. In commit_lock
// mode the events are numbered on the way in, under the log's numbering
// lock, held for no longer than the statement and its commit; in
// commit_timestamp mode they are numbered after the commit, here
// (NumberPending) or by any node.
func publishAll(ctx context.Context, s *Store, topics, types, data []string, seqs []int64) error {
	rows, err := s.Pool.Query(ctx, `
		SELECT m.id, m.seq FROM livepg.publish_many($1::text[], $2::text[], $3::text[]::jsonb[]) AS m ORDER BY m.id`,
		topics, types, data)
	if err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	defer rows.Close()
	ids := make([]int64, 0, len(seqs))
	pending := false
	for rows.Next() {
		var id int64
		var seq *int64
		if err := rows.Scan(&id, &seq); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if seq == nil {
			pending = true
		} else if len(ids) < len(seqs) {
			seqs[len(ids)] = *seq
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	if len(ids) != len(seqs) {
		return fmt.Errorf("publish: %d events recorded for %d", len(ids), len(seqs))
	}
	if pending {
		return s.seqsOf(ctx, ids, seqs)
	}
	return nil
}

// seqsOf fills seqs[i] with the seq of the committed event ids[i]; ids that
// are 0 (refused events) are skipped. Events not numbered yet (commit_timestamp
// mode) are numbered first (NumberPending): they are committed, so one
// numbering reaches them.
func (s *Store) seqsOf(ctx context.Context, ids, seqs []int64) error {
	if s.logical.Load() {
		return s.waitSeqs(ctx, ids, seqs)
	}
	for attempt := 0; ; attempt++ {
		missing, err := s.readSeqs(ctx, ids, seqs)
		if err != nil || missing == 0 {
			return err
		}
		if attempt == 1 {
			return fmt.Errorf("read seqs of a batch: %d committed events are not numbered after numbering", missing)
		}
		if _, err := s.NumberPending(ctx); err != nil {
			return err
		}
	}
}

// waitSeqs is seqsOf in the logical bus mode: only the decoding leader
// numbers, in commit order; this waits for it, up to SeenWait.
func (s *Store) waitSeqs(ctx context.Context, ids, seqs []int64) error {
	var missing int
	err := waitForLeader(ctx, func() (bool, error) {
		var err error
		missing, err = s.readSeqs(ctx, ids, seqs)
		return missing == 0, err
	})
	if errors.Is(err, ErrLeaderBehind) {
		return fmt.Errorf("read seqs of a batch: %d events: %w", missing, err)
	}
	return err
}

// readSeqs fills seqs as seqsOf does and returns how many of the events
// have no seq yet (are not in the log yet: migrations/00013_log_written_once.sql).
func (s *Store) readSeqs(ctx context.Context, ids, seqs []int64) (missing int, err error) {
	rows, err := s.Pool.Query(ctx, `SELECT id, seq FROM livepg.events WHERE id = ANY($1)`, ids)
	if err != nil {
		return 0, fmt.Errorf("read seqs of a batch: %w", err)
	}
	byID := make(map[int64]*int64, len(ids))
	for rows.Next() {
		var id int64
		var seq *int64
		if err := rows.Scan(&id, &seq); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read seqs of a batch: %w", err)
		}
		byID[id] = seq
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read seqs of a batch: %w", err)
	}
	for i, id := range ids {
		if id == 0 {
			continue
		}
		// Not in the log yet: still in livepg.pending, not numbered.
		seq, ok := byID[id]
		if !ok || seq == nil {
			missing++
			continue
		}
		seqs[i] = *seq
	}
	return missing, nil
}
