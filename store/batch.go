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
	ids := make([]int64, len(events))
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		return publishAll(ctx, tx, topics, types, data, ids)
	})
	if errors.Is(err, ErrInvalid) {
		// Some event is refused, and it spoiled the statement: record each
		// under a savepoint of its own, so that only the refused ones fail.
		clear(ids)
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
	}
	if err != nil {
		return nil, nil, fmt.Errorf("publish batch of %d: %w", len(events), err)
	}
	if err := s.seqsOf(ctx, ids, seqs); err != nil {
		return nil, nil, err
	}
	return seqs, errs, nil
}

// publishAll records every event in one statement, in order, and fills ids.
func publishAll(ctx context.Context, tx pgx.Tx, topics, types, data []string, ids []int64) error {
	rows, err := tx.Query(ctx, `
		SELECT x.i, livepg.publish(x.topic, x.data::jsonb, x.type)
		  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(topic, type, data, i)`,
		topics, types, data)
	if err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	defer rows.Close()
	for rows.Next() {
		var i, id int64
		if err := rows.Scan(&i, &id); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		ids[i-1] = id
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("publish: %w", asInvalid(err))
	}
	return nil
}

// seqsOf fills seqs[i] with the seq of the committed event ids[i]; ids that
// are 0 (refused events) are skipped.
func (s *Store) seqsOf(ctx context.Context, ids, seqs []int64) error {
	rows, err := s.Pool.Query(ctx, `SELECT id, seq FROM livepg.events WHERE id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("read seqs of a batch: %w", err)
	}
	bySeq := make(map[int64]int64, len(ids))
	for rows.Next() {
		var id, seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			rows.Close()
			return fmt.Errorf("read seqs of a batch: %w", err)
		}
		bySeq[id] = seq
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read seqs of a batch: %w", err)
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
