package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event is one committed row of livepg.events.
type Event struct {
	Seq         int64
	Topic       string
	Type        string
	Data        []byte // the payload as JSON text
	CommittedAt time.Time
}

const eventColumns = `seq, topic, type, data, committed_at`

func scanEvent(row pgx.CollectableRow) (Event, error) {
	var e Event
	err := row.Scan(&e.Seq, &e.Topic, &e.Type, &e.Data, &e.CommittedAt)
	return e, err
}

// ReadAfter returns up to limit committed events with seq > after, in seq
// order. Because seq is assigned at commit under a lock, no event with a
// smaller seq can commit after a reader has seen a larger one.
func (s *Store) ReadAfter(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := s.Pool.Query(ctx,
		`SELECT `+eventColumns+` FROM livepg.events WHERE seq > $1 ORDER BY seq LIMIT $2`,
		after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return events, nil
}

// ReadMatching returns up to limit events with after < seq <= through whose
// topic is one of exact or starts with one of prefixes, in seq order: the
// catch-up read of one subscriber.
func (s *Store) ReadMatching(ctx context.Context, after, through int64, exact, prefixes []string, limit int) ([]Event, error) {
	rows, err := s.Pool.Query(ctx,
		`SELECT `+eventColumns+` FROM livepg.events
		  WHERE seq > $1 AND seq <= $2
		    AND (topic = ANY($3) OR EXISTS (SELECT 1 FROM unnest($4::text[]) p WHERE starts_with(topic, p)))
		  ORDER BY seq LIMIT $5`,
		after, through, exact, prefixes, limit)
	if err != nil {
		return nil, fmt.Errorf("read matching events after %d: %w", after, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read matching events after %d: %w", after, err)
	}
	return events, nil
}

// LogBounds are the ends of the log as one snapshot sees them.
type LogBounds struct {
	// PrunedThrough: events with seq <= PrunedThrough may be gone.
	PrunedThrough int64
	// Head: the highest committed seq.
	Head int64
	// Epoch names the log's current history (see migrations/00006_history.sql):
	// an event id is its seq and an epoch of its history.
	Epoch string
}

// Bounds reads both ends of the log, and its epoch, in one snapshot.
func (s *Store) Bounds(ctx context.Context) (LogBounds, error) {
	h, err := s.Position(ctx, "", -1)
	if err != nil {
		return LogBounds{}, fmt.Errorf("read log bounds: %w", err)
	}
	return h.LogBounds, nil
}

// History is where the log is, and whether an id is in its history.
type History struct {
	LogBounds
	// InHistory: the id asked about names an event of the log's current
	// history (or the head before any event): its epoch is the current one
	// or an ancestor, and its seq is no higher than what the current history
	// inherited from that epoch. It says nothing of pruning: compare the
	// seq with PrunedThrough.
	InHistory bool
}

// Position reads the log's bounds and checks that the id (epoch, seq) is in
// its current history, in one snapshot. An empty epoch is a plain-number id
// from before epochs: a seq of the current history. A negative seq asks
// nothing (InHistory is false).
func (s *Store) Position(ctx context.Context, epoch string, seq int64) (History, error) {
	var h History
	err := s.Pool.QueryRow(ctx, `SELECT epoch, head, pruned_through, valid FROM livepg.position($1, $2)`,
		nullIfEmpty(epoch), nullIfNegative(seq)).Scan(&h.Epoch, &h.Head, &h.PrunedThrough, &h.InHistory)
	if err != nil {
		return h, fmt.Errorf("read log position: %w", err)
	}
	return h, nil
}

// ReadHistory is the node's read of the log: in one snapshot, whether its
// place (epoch, after) is still in the log's history (see Position) and, if
// it is, up to limit committed events with seq > after, in seq order. The
// events belong to the history named by the returned Epoch.
func (s *Store) ReadHistory(ctx context.Context, epoch string, after int64, limit int) (History, []Event, error) {
	rows, err := s.Pool.Query(ctx,
		`SELECT p.epoch, p.head, p.pruned_through, p.valid, e.seq, e.topic, e.type, e.data, e.committed_at
		   FROM livepg.position($1, $2) p
		   LEFT JOIN LATERAL (SELECT `+eventColumns+` FROM livepg.events
		                       WHERE seq > $2 ORDER BY seq LIMIT $3) e ON p.valid
		  ORDER BY e.seq`,
		nullIfEmpty(epoch), after, limit)
	if err != nil {
		return History{}, nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	defer rows.Close()
	var h History
	var events []Event
	for rows.Next() {
		var seq *int64
		var topic, typ *string
		var data []byte
		var at *time.Time
		if err := rows.Scan(&h.Epoch, &h.Head, &h.PrunedThrough, &h.InHistory, &seq, &topic, &typ, &data, &at); err != nil {
			return History{}, nil, fmt.Errorf("read events after %d: %w", after, err)
		}
		if seq != nil {
			events = append(events, Event{Seq: *seq, Topic: *topic, Type: *typ, Data: data, CommittedAt: *at})
		}
	}
	if err := rows.Err(); err != nil {
		return History{}, nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return h, events, nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullIfNegative(n int64) *int64 {
	if n < 0 {
		return nil
	}
	return &n
}

// Publish records one event and commits it, returning its seq.
func (s *Store) Publish(ctx context.Context, topic, typ string, data []byte) (int64, error) {
	var id int64
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		id, err = PublishTx(ctx, tx, topic, typ, data)
		return err
	})
	if err != nil {
		return 0, err
	}
	return s.seqOf(ctx, id)
}

// PublishTx records an event inside tx through livepg.publish, as any SQL
// writer would; the event reaches subscribers if and only if tx commits. It
// returns the event's id, which SeqOf turns into its seq after the commit.
func PublishTx(ctx context.Context, tx pgx.Tx, topic, typ string, data []byte) (int64, error) {
	var id int64
	if data == nil {
		data = []byte("null")
	}
	err := tx.QueryRow(ctx, `SELECT livepg.publish($1, $2::jsonb, $3)`, topic, string(data), typ).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("publish: %w", asInvalid(err))
	}
	return id, nil
}

func (s *Store) seqOf(ctx context.Context, id int64) (int64, error) {
	var seq int64
	err := s.Pool.QueryRow(ctx, `SELECT seq FROM livepg.events WHERE id = $1`, id).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("read seq of event %d: %w", id, err)
	}
	return seq, nil
}

// Prune deletes events committed more than keep ago, if no other node is
// pruning at the moment, and returns how far the log is now pruned (0 when
// another node held the lock).
func (s *Store) Prune(ctx context.Context, keep time.Duration) (int64, error) {
	var through *int64
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.prune($1)`, keep).Scan(&through); err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	if through == nil {
		return 0, nil
	}
	return *through, nil
}
