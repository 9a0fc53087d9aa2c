package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/store"
)

// Presence: who is on a topic now, on PostgreSQL alone.
//
// A stream opened with presence=<topic> makes its page a member of that
// topic for the stream's life (plus a grace period, so that a reconnect,
// to this node or another, does not leave and join again). Each node
// keeps two things:
//
//   - its own members (local): what it must keep written in
//     livepg.presence under its lease. Joins and leaves are written in
//     batches, one statement per Flush interval (livepg.presence_flush);
//     the lease of all of them is renewed with one statement per Renew
//     interval (livepg.presence_renew), which also expires dead nodes'
//     leases and removes their members;
//   - a mirror of every topic's members, cluster-wide: loaded once with
//     the log position it reflects, then kept by the log's own presence
//     events, which the node's reader sees as it reads every event (see
//     node.readLog). Snapshots for joining streams, GET /v1/presence,
//     member limits and counts for the inspector come from it, without a
//     query.
//
// Every change of the table is published to the log in the same
// transaction (migrations/00010_presence.sql), so pages see joins and
// leaves in commit order with the log's guarantees, and the mirror as of a
// position is the table as of that position.
type presence struct {
	st   *store.Store
	node string
	cfg  PresenceConfig
	log  *slog.Logger

	mu sync.Mutex
	// local holds this node's members, by topic and id; localIDs their ids
	// by topic.
	local    map[store.MemberKey]*localMember
	localIDs map[string]map[string]struct{}
	// leaves are leaves to write whose members are no longer local (their
	// flush failed, or their grace ran out): retried until written.
	leaves []store.MemberKey

	// The mirror: every topic's members as of the log's position at (in
	// history epoch). advanced closes when at moves (and is replaced).
	at       int64
	epoch    string
	topics   map[string]map[string]store.Member
	advanced chan struct{}

	// joins counts each client's joins in the current second (JoinRate).
	joins       map[string]int
	joinsSecond int64

	// Statements written, and those that failed, for metrics and
	// benchmarks.
	flushes, renewals, failures atomic.Int64
	// retryAt: after a failed flush, the next waits until then (backoff,
	// doubling up to Renew), so that a database away is not asked 7 times
	// a second, nor its absence logged as often.
	retryAt time.Time
	backoff time.Duration
}

// collectors are presence's metrics.
func (p *presence) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "livepg_presence_members", Help: "Members of every topic's presence, across every node, as this node has read them from the log.",
		}, func() float64 {
			t := 0
			for _, c := range p.counts() {
				t += c
			}
			return float64(t)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "livepg_presence_local_members", Help: "Members this node holds (its pages', including those in their reconnect grace).",
		}, func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			return float64(len(p.local))
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "livepg_presence_flushes_total", Help: "Statements that wrote this node's batches of joins and leaves (livepg.presence_flush).",
		}, func() float64 { return float64(p.flushes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "livepg_presence_renewals_total", Help: "Statements that renewed this node's lease and expired dead nodes' (livepg.presence_renew).",
		}, func() float64 { return float64(p.renewals.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "livepg_presence_errors_total", Help: "Presence statements that failed (retried: joins and leaves are kept until written).",
		}, func() float64 { return float64(p.failures.Load()) }),
	}
}

// localMember is one member this node holds.
type localMember struct {
	m       store.Member
	streams int       // open streams holding it
	leaveAt time.Time // with no stream: when its grace runs out
	dirty   bool      // its join (or new meta) is still to be written
	written bool      // a flush wrote its join: a leave must be written too
}

func newPresence(st *store.Store, cfg PresenceConfig, logger *slog.Logger) *presence {
	node := cfg.NodeID // NewNode sets it: the node's id when not given
	return &presence{
		st: st, node: node, cfg: cfg, log: logger.With("presence_node", node),
		local:    make(map[store.MemberKey]*localMember),
		localIDs: make(map[string]map[string]struct{}),
		topics:   make(map[string]map[string]store.Member),
		advanced: make(chan struct{}),
		joins:    make(map[string]int),
	}
}

// start takes the node's lease and loads the mirror.
func (p *presence) start(ctx context.Context) error {
	if _, err := p.st.PresenceRenew(ctx, p.node, p.cfg.LeaseTTL); err != nil {
		return err
	}
	return p.load(ctx)
}

// load replaces the mirror with the table as of the log's head.
func (p *presence) load(ctx context.Context) error {
	bounds, members, err := p.st.PresenceSnapshot(ctx)
	if err != nil {
		return err
	}
	topics := make(map[string]map[string]store.Member)
	for _, m := range members {
		if topics[m.Topic] == nil {
			topics[m.Topic] = make(map[string]store.Member)
		}
		topics[m.Topic][m.ID] = m
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.topics, p.at, p.epoch = topics, bounds.Head, bounds.Epoch
	p.advance()
	return nil
}

// advance wakes those waiting for the mirror to move. p.mu is held.
func (p *presence) advance() {
	close(p.advanced)
	p.advanced = make(chan struct{})
}

// presenceChange is a presence event's data.
type presenceChange struct {
	Op   string          `json:"op"`
	ID   string          `json:"id"`
	Sub  string          `json:"sub"`
	Meta json.RawMessage `json:"meta"`
}

// apply moves the mirror through rows, events of the log's history epoch
// that the reader read in order: joins and leaves change it, and its
// position becomes the last row's.
func (p *presence) apply(epoch string, rows []store.Event) {
	if len(rows) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if epoch != p.epoch {
		return // the history changed: the reader reloads the mirror (reload)
	}
	for _, row := range rows {
		if row.Seq <= p.at || row.Type != store.PresenceType || row.Omitted != "" {
			continue
		}
		var c presenceChange
		if err := json.Unmarshal(row.Data, &c); err != nil || c.ID == "" {
			p.log.Warn("presence event not understood", "seq", row.Seq, "topic", row.Topic, "err", err)
			continue
		}
		members := p.topics[row.Topic]
		switch c.Op {
		case "join":
			if members == nil {
				members = make(map[string]store.Member)
				p.topics[row.Topic] = members
			}
			if string(c.Meta) == "null" {
				c.Meta = nil
			}
			members[c.ID] = store.Member{Topic: row.Topic, ID: c.ID, Sub: c.Sub, Meta: c.Meta}
		case "leave":
			delete(members, c.ID)
			if len(members) == 0 {
				delete(p.topics, row.Topic)
			}
		}
	}
	if last := rows[len(rows)-1].Seq; last > p.at {
		p.at = last
		p.advance()
	}
}

// reload loads the mirror again after the log's history changed under
// the node (see node.readLog).
func (p *presence) reload(ctx context.Context) {
	if err := p.load(ctx); err != nil && ctx.Err() == nil {
		p.log.Warn("presence: reload after the log's history changed", "err", err)
	}
}

// snapshot returns topic's members (in no particular order) and the
// position of the log they reflect.
func (p *presence) snapshot(topic string) ([]store.Member, fanout.EventID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	members := make([]store.Member, 0, len(p.topics[topic]))
	for _, m := range p.topics[topic] {
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b store.Member) int {
		if a.Sub != b.Sub {
			if a.Sub < b.Sub {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return members, fanout.EventID{Seq: p.at, Epoch: p.epoch}
}

// waitFor waits until the mirror reflects the log through seq (the reader
// reads what is committed on its next wake-up), or ctx ends.
func (p *presence) waitFor(ctx context.Context, seq int64) error {
	for {
		p.mu.Lock()
		at, ch := p.at, p.advanced
		p.mu.Unlock()
		if at >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("presence: waiting for the node to read the log through %d (it is at %d): %w", seq, at, ctx.Err())
		}
	}
}

// counts is every topic's member count, cluster-wide.
func (p *presence) counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[string]int, len(p.topics))
	for t, ms := range p.topics {
		c[t] = len(ms)
	}
	return c
}

// Why a join is refused.
var (
	errTopicFull   = errors.New("topic full")
	errJoinTooFast = errors.New("joins too fast")
)

// join makes m a member held by one more stream of this node, after
// checking the topic's member limit and client's join rate, and returns
// the function the stream calls when it ends. A member this node already
// holds (another stream of the same page, or a reconnect within its
// grace) is not joined again.
func (p *presence) join(client string, members []store.Member) (release func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.JoinRate > 0 {
		if now := time.Now().Unix(); now != p.joinsSecond {
			clear(p.joins)
			p.joinsSecond = now
		}
		if p.joins[client]+len(members) > p.cfg.JoinRate {
			return nil, errJoinTooFast
		}
		p.joins[client] += len(members)
	}
	for _, m := range members {
		key := store.MemberKey{Topic: m.Topic, ID: m.ID}
		if _, ok := p.topics[m.Topic][m.ID]; ok {
			continue // already a member: no new place taken
		}
		if lm := p.local[key]; lm != nil {
			continue
		}
		if len(p.topics[m.Topic])+p.pendingJoins(m.Topic) >= p.cfg.MaxMembers {
			return nil, fmt.Errorf("%w: %s has its maximum of %d members", errTopicFull, m.Topic, p.cfg.MaxMembers)
		}
	}
	for _, m := range members {
		key := store.MemberKey{Topic: m.Topic, ID: m.ID}
		lm := p.local[key]
		if lm == nil {
			lm = &localMember{m: m, dirty: true}
			p.local[key] = lm
			if p.localIDs[m.Topic] == nil {
				p.localIDs[m.Topic] = make(map[string]struct{})
			}
			p.localIDs[m.Topic][m.ID] = struct{}{}
		} else if lm.m.Sub != m.Sub || string(lm.m.Meta) != string(m.Meta) {
			lm.m, lm.dirty = m, true
		}
		lm.streams++
		lm.leaveAt = time.Time{}
	}
	var once sync.Once
	return func() { once.Do(func() { p.release(members) }) }, nil
}

// pendingJoins is how many of this node's members of topic are not yet in
// the mirror (at most MaxMembers to look at). p.mu is held.
func (p *presence) pendingJoins(topic string) int {
	n := 0
	for id := range p.localIDs[topic] {
		if _, ok := p.topics[topic][id]; !ok {
			n++
		}
	}
	return n
}

// release is the end of one stream holding members: a member no stream
// holds any more leaves once its grace runs out.
func (p *presence) release(members []store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, m := range members {
		lm := p.local[store.MemberKey{Topic: m.Topic, ID: m.ID}]
		if lm == nil {
			continue
		}
		if lm.streams--; lm.streams == 0 {
			lm.leaveAt = now.Add(p.cfg.Grace)
		}
	}
}

// run renews the lease and flushes joins and leaves until ctx ends; then
// it writes what is due and shortens the lease to the grace period, so
// that members whose pages do not reconnect elsewhere leave soon.
func (p *presence) run(ctx context.Context) {
	renew := time.NewTicker(p.cfg.Renew)
	defer renew.Stop()
	flush := time.NewTicker(p.cfg.Flush)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.flush(stopCtx)
			if _, err := p.st.PresenceRenew(stopCtx, p.node, p.cfg.Grace); err != nil {
				p.log.Warn("presence: shorten the lease at stop", "err", err)
			}
			return
		case <-renew.C:
			p.renew(ctx)
		case <-flush.C:
			// Every join and due leave since the last tick, in one
			// statement.
			p.flush(ctx)
		}
	}
}

// renew renews the lease; when it was lost, every local member is joined
// again at the next flush.
func (p *presence) renew(ctx context.Context) {
	p.renewals.Add(1)
	had, err := p.st.PresenceRenew(ctx, p.node, p.cfg.LeaseTTL)
	if err != nil {
		p.failures.Add(1)
		if ctx.Err() == nil {
			p.log.Warn("presence: renew lease", "err", err)
		}
		return
	}
	if !had {
		p.log.Warn("presence: the node's lease had expired (the node or its database was stalled for longer than the lease): its members are joined again")
		p.rejoinAll()
	}
}

func (p *presence) rejoinAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, lm := range p.local {
		lm.dirty = true
	}
}

// maxFlush is the most joins and leaves one statement writes: its events
// are inserted while it holds the log's commit-order lock, which every
// other event transaction waits for, so a flush after a deploy is a few
// statements of bounded length rather than one long one.
const maxFlush = 2000

// flush writes the joins and the due leaves, maxFlush per statement.
func (p *presence) flush(ctx context.Context) {
	renewed := false
	for {
		if time.Now().Before(p.retryAt) {
			return
		}
		joins, leaves, more := p.takeBatch(time.Now(), maxFlush)
		if len(joins) == 0 && len(leaves) == 0 {
			return
		}
		p.flushes.Add(1)
		ok, err := p.st.PresenceFlush(ctx, p.node, joins, leaves)
		if err == nil && !ok {
			if !renewed {
				// No lease: another node expired it. Take it again (renew
				// then marks every local member to join again) and retry.
				p.putBack(joins, leaves)
				p.renew(ctx)
				renewed = true
				continue
			}
			err = errors.New("no lease after renewing it")
		}
		if err != nil {
			p.failures.Add(1)
			p.backoff = min(max(2*p.backoff, p.cfg.Flush), p.cfg.Renew)
			p.retryAt = time.Now().Add(p.backoff)
			if ctx.Err() == nil {
				p.log.Warn("presence: flush joins and leaves", "joins", len(joins), "leaves", len(leaves), "err", err, "retry_in", p.backoff)
			}
			p.putBack(joins, leaves)
			return
		}
		p.backoff, p.retryAt = 0, time.Time{}
		if !more {
			return
		}
	}
}

// takeBatch takes up to limit joins to write and leaves due at now; more
// says some are left for another statement.
func (p *presence) takeBatch(now time.Time, limit int) (joins []store.Member, leaves []store.MemberKey, more bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.leaves), limit)
	leaves = append(leaves, p.leaves[:n]...)
	p.leaves = p.leaves[n:]
	if len(p.leaves) == 0 {
		p.leaves = nil
	}
	for key, lm := range p.local {
		due := lm.streams == 0 && !lm.leaveAt.After(now)
		if !due && !lm.dirty {
			continue
		}
		if len(joins)+len(leaves) >= limit {
			return joins, leaves, true
		}
		if due {
			delete(p.local, key)
			if ids := p.localIDs[key.Topic]; ids != nil {
				delete(ids, key.ID)
				if len(ids) == 0 {
					delete(p.localIDs, key.Topic)
				}
			}
			if lm.written {
				leaves = append(leaves, key)
			}
			continue
		}
		lm.dirty, lm.written = false, true
		joins = append(joins, lm.m)
	}
	return joins, leaves, len(p.leaves) > 0
}

// putBack keeps a failed batch for the next flush.
func (p *presence) putBack(joins []store.Member, leaves []store.MemberKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range joins {
		if lm := p.local[store.MemberKey{Topic: m.Topic, ID: m.ID}]; lm != nil {
			lm.dirty = true
		} else {
			// Gone meanwhile: it may have been written all the same.
			p.leaves = append(p.leaves, store.MemberKey{Topic: m.Topic, ID: m.ID})
		}
	}
	p.leaves = append(p.leaves, leaves...)
}

// localCounts is how many members of each topic this node holds (its own
// pages), for the inspector's row of this node.
func (p *presence) localCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[string]int, len(p.localIDs))
	for t, ids := range p.localIDs {
		if len(ids) > 0 {
			c[t] = len(ids)
		}
	}
	return c
}
