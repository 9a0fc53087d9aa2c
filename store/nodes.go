package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The node registry, livepg.nodes (migrations/00011_nodes.sql): each node
// writes a row about itself every few seconds, and reads everyone's for its
// inspector page.

// NodeBeat is what a node writes about itself.
type NodeBeat struct {
	ID, Address, Region string
	StartedAt           time.Time
	// Every is how often the node beats: its row is stale after three.
	Every time.Duration
	// Stats is a JSON object of its figures, at most 64 KiB.
	Stats []byte
}

// NodeRow is one row of the registry as one snapshot sees it.
type NodeRow struct {
	ID        string          `json:"id"`
	Address   string          `json:"address"`
	Region    string          `json:"region"`
	StartedAt time.Time       `json:"started_at"`
	SeenAt    time.Time       `json:"seen_at"`
	Every     time.Duration   `json:"-"`
	Age       time.Duration   `json:"-"`
	Stale     bool            `json:"stale"`
	Stats     json.RawMessage `json:"stats"`
}

// StaleAfterBeats is how many of its beat intervals a node may stay silent
// before its row is stale; ForgetAfter is when any node's beat removes it.
const (
	StaleAfterBeats = 3
	ForgetAfter     = 10 * time.Minute
)

// Beat writes the node's row (livepg.node_beat) and forgets the rows of
// nodes silent for ForgetAfter.
func (s *Store) Beat(ctx context.Context, b NodeBeat) error {
	stats := b.Stats
	if stats == nil {
		stats = []byte("{}")
	}
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.node_beat($1, $2, $3, $4, $5, $6::jsonb)`,
		b.ID, b.Address, b.Region, b.StartedAt, b.Every, string(stats)); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "54000" { // stats over the bound
			return fmt.Errorf("write node %s to livepg.nodes: %w: %s", b.ID, ErrInvalid, pgErr.Message)
		}
		return fmt.Errorf("write node %s to livepg.nodes: %w", b.ID, asInvalid(err))
	}
	return nil
}

// Leave removes the node's row: it stops in order.
func (s *Store) Leave(ctx context.Context, id string) error {
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.node_leave($1)`, id); err != nil {
		return fmt.Errorf("remove node %s from livepg.nodes: %w", id, err)
	}
	return nil
}

// Nodes reads at most limit rows of the registry, the most recently seen
// first, each with its age and staleness by the database's clock.
func (s *Store) Nodes(ctx context.Context, limit int) ([]NodeRow, error) {
	rows, err := s.Pool.Query(ctx, `
		SELECT id, address, region, started_at, seen_at, every_ms,
		       extract(epoch FROM now() - seen_at)::float8,
		       now() - seen_at > every_ms * $2::int * interval '1 millisecond',
		       stats
		  FROM livepg.nodes
		 ORDER BY seen_at DESC, id
		 LIMIT $1`, limit, StaleAfterBeats)
	if err != nil {
		return nil, fmt.Errorf("read livepg.nodes: %w", err)
	}
	defer rows.Close()
	var out []NodeRow
	for rows.Next() {
		var r NodeRow
		var everyMS int64
		var age float64
		var stats []byte
		if err := rows.Scan(&r.ID, &r.Address, &r.Region, &r.StartedAt, &r.SeenAt, &everyMS, &age, &r.Stale, &stats); err != nil {
			return nil, fmt.Errorf("read livepg.nodes: %w", err)
		}
		r.Every = time.Duration(everyMS) * time.Millisecond
		r.Age = time.Duration(age * float64(time.Second))
		r.Stats = stats
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read livepg.nodes: %w", err)
	}
	return out, nil
}

// LogStats describe the log for an operator: its bounds, its oldest event
// kept and how many rows it holds, estimated.
type LogStats struct {
	LogBounds
	// OldestSeq and OldestAt are the oldest event kept (zero: the log is
	// empty).
	OldestSeq int64
	OldestAt  time.Time
	// Rows is PostgreSQL's estimate of the rows of livepg.events
	// (pg_class.reltuples, as of its last VACUUM or ANALYZE; -1 when it
	// has none yet).
	Rows int64
}

// LogStats reads the log's bounds, its oldest event and its estimated size
// in one snapshot: index probes and a catalog read, never a scan.
func (s *Store) LogStats(ctx context.Context) (LogStats, error) {
	var st LogStats
	var oldestSeq *int64
	var oldestAt *time.Time
	err := s.Pool.QueryRow(ctx, `
		SELECT p.epoch, p.head, p.pruned_through, o.seq, o.committed_at,
		       (SELECT c.reltuples::bigint FROM pg_catalog.pg_class c WHERE c.oid = 'livepg.events'::pg_catalog.regclass)
		  FROM livepg.position(NULL, NULL) p
		  LEFT JOIN LATERAL (SELECT e.seq, e.committed_at FROM livepg.events e
		                      WHERE e.seq IS NOT NULL ORDER BY e.seq LIMIT 1) o ON true`).
		Scan(&st.Epoch, &st.Head, &st.PrunedThrough, &oldestSeq, &oldestAt, &st.Rows)
	if err != nil {
		return st, fmt.Errorf("read log stats: %w", err)
	}
	if oldestSeq != nil {
		st.OldestSeq = *oldestSeq
	}
	if oldestAt != nil {
		st.OldestAt = *oldestAt
	}
	return st, nil
}
