package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PresenceType is the event type of presence changes in the log (see
// migrations/00010_presence.sql): data {"op":"join"|"leave","id","sub","meta"}.
const PresenceType = "presence"

// Member is one member of a topic's presence.
type Member struct {
	Topic string          `json:"-"`
	ID    string          `json:"id"`
	Sub   string          `json:"sub"`
	Meta  json.RawMessage `json:"meta,omitempty"`
}

// MemberKey names a member: its topic and id.
type MemberKey struct{ Topic, ID string }

// PresenceRenew renews node's lease for ttl and expires the leases of nodes
// that stopped renewing, publishing their members' leaves, in one
// statement. It returns false when node had no lease (its first renewal,
// or another node expired it): its members are gone from the table and
// must be joined again.
func (s *Store) PresenceRenew(ctx context.Context, node string, ttl time.Duration) (bool, error) {
	var had bool
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.presence_renew($1, $2)`, node, ttl).Scan(&had); err != nil {
		return false, fmt.Errorf("renew presence lease of %s: %w", node, err)
	}
	return had, nil
}

// PresenceFlush writes a batch of node's joins and leaves, and publishes
// their events, in one statement. It returns false, having changed
// nothing, when node has no lease (see PresenceRenew).
func (s *Store) PresenceFlush(ctx context.Context, node string, joins []Member, leaves []MemberKey) (bool, error) {
	jt, ji, js := make([]string, len(joins)), make([]string, len(joins)), make([]string, len(joins))
	jm := make([]*string, len(joins)) // jsonb[] from text: NULL for no meta
	for i, m := range joins {
		jt[i], ji[i], js[i] = m.Topic, m.ID, m.Sub
		if len(m.Meta) > 0 {
			v := string(m.Meta)
			jm[i] = &v
		}
	}
	lt, li := make([]string, len(leaves)), make([]string, len(leaves))
	for i, k := range leaves {
		lt[i], li[i] = k.Topic, k.ID
	}
	var ok bool
	err := s.Pool.QueryRow(ctx, `SELECT livepg.presence_flush($1, $2, $3, $4, $5::text[]::jsonb[], $6, $7)`,
		node, jt, ji, js, jm, lt, li).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("flush presence of %s (%d joins, %d leaves): %w", node, len(joins), len(leaves), err)
	}
	return ok, nil
}

// PresenceSnapshot reads every topic's members and the log position they
// reflect, in one snapshot: the set as of (epoch, head). Presence events
// after head change it.
func (s *Store) PresenceSnapshot(ctx context.Context) (LogBounds, []Member, error) {
	var b LogBounds
	var members []Member
	err := pgx.BeginTxFunc(ctx, s.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT epoch, head, pruned_through FROM livepg.position(NULL, NULL)`).
			Scan(&b.Epoch, &b.Head, &b.PrunedThrough); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT topic, id, sub, meta::text FROM livepg.presence ORDER BY topic, joined_at, id`)
		if err != nil {
			return err
		}
		members, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) {
			var m Member
			var meta *string
			err := row.Scan(&m.Topic, &m.ID, &m.Sub, &meta)
			if meta != nil {
				m.Meta = json.RawMessage(*meta)
			}
			return m, err
		})
		return err
	})
	if err != nil {
		return LogBounds{}, nil, fmt.Errorf("read presence: %w", err)
	}
	return b, members, nil
}
