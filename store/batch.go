package store

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// publishAll records every event with livepg.publish_batch (one INSERT,
// numbered on the way in; see migrations/00003_publish_batch.sql) and fills
// seqs in order. The statement is its own transaction, committed as it
// ends: one round trip, and the log's commit-order lock, which the call
// takes, is held for no longer than the statement and its commit.
func publishAll(ctx context.Context, s *Store, topics, types, data []string, seqs []int64) error {
	if s.logical.Load() {
		return publishAllLogical(ctx, s, topics, types, data, seqs)
	}
	db := s.Pool
	rows, err := db.Query(ctx, `
		SELECT b.i, b.seq
		  FROM livepg.publish_batch($1::text[], $2::text[], $3::text[]::jsonb[]) WITH ORDINALITY AS b(seq, i)`,
		topics, types, data)
	if err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var i, seq int64
		if err := rows.Scan(&i, &seq); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		seqs[i-1] = seq
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	if n != len(seqs) {
		return fmt.Errorf("publish: %d seqs for %d events", n, len(seqs))
	}
	return nil
}

// publishAllLogical records every event in the logical bus mode: one
// statement through livepg.publish (no lock, no NOTIFY: the decoding leader
// numbers them after the commit), then waits for their seqs.
func publishAllLogical(ctx context.Context, s *Store, topics, types, data []string, seqs []int64) error {
	rows, err := s.Pool.Query(ctx, `
		SELECT livepg.publish(x.topic, x.data::jsonb, x.type)
		  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(topic, type, data, i)
		 ORDER BY x.i`, topics, types, data)
	if err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	if len(ids) != len(seqs) {
		return fmt.Errorf("publish: %d ids for %d events", len(ids), len(seqs))
	}
	return s.seqsOf(ctx, ids, seqs)
}

// seqsOf fills seqs[i] with the seq of the committed event ids[i]; ids that
// are 0 (refused events) are skipped. An event committed but not numbered
// yet (the logical bus mode) is waited for, up to SeenWait.
func (s *Store) seqsOf(ctx context.Context, ids, seqs []int64) error {
	deadline := time.Now().Add(SeenWait)
	bySeq := make(map[int64]int64, len(ids))
	for {
		clear(bySeq)
		rows, err := s.Pool.Query(ctx, `SELECT id, seq FROM livepg.events WHERE id = ANY($1)`, ids)
		if err != nil {
			return fmt.Errorf("read seqs of a batch: %w", err)
		}
		pending := false
		for rows.Next() {
			var id int64
			var seq *int64
			if err := rows.Scan(&id, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("read seqs of a batch: %w", err)
			}
			if seq == nil {
				pending = true
				continue
			}
			bySeq[id] = *seq
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read seqs of a batch: %w", err)
		}
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("read seqs of a batch: %w", ErrLeaderBehind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	for i, id := range ids {
		if id == 0 {
			continue
		}
		seq, ok := bySeq[id]
		if !ok {
			return fmt.Errorf("read seqs of a batch: event %d is not in the log", id)
		}
		seqs[i] = seq
	}
	return nil
}
