package realtime

import (
	"context"
	"log/slog"
	"time"

	"github.com/livepg/livepg/realtime/pglisten"
)

// Config tunes a node. Zero fields take the defaults in DefaultConfig.
type Config struct {
	// ListenURL is the connection string of the dedicated LISTEN connection:
	// a direct session on the primary (not a replica, not a transaction
	// pooler).
	ListenURL string
	// Buffer is how many events each subscriber may have queued before it is
	// moved off the live flow to catch up from the log.
	Buffer int
	// BatchSize is how many events one log read returns at most.
	BatchSize int
	// BatchBytes is how many bytes of event data one log read returns at
	// most (but always one event): the reader's and each catch-up's memory.
	BatchBytes int64
	// PollInterval is the slow timer that reads the log even without a
	// notification, in case one was lost.
	PollInterval time.Duration
	// Heartbeat is the interval of comment lines on idle streams, well inside
	// proxies' idle timeouts.
	Heartbeat time.Duration
	// WriteTimeout cuts off a stream that accepts no bytes for this long
	// (and at most a quarter longer: see internal/stream).
	WriteTimeout time.Duration
	// Retry is the reconnect delay suggested to browsers.
	Retry time.Duration
	// Retention is how long events stay in the log; older resume points get
	// a reset. PruneInterval is how often a node prunes.
	Retention, PruneInterval time.Duration
	// CatchUpConns is how many connections catch-up reads (resumes, and
	// subscribers that fell behind) have, in a pool of their own: live
	// reads, publishes and readiness never wait behind catch-ups. As many
	// catch-up reads run at once; the others queue.
	CatchUpConns int
	// CatchUpQueue is how many streams may wait for a catch-up read before
	// a new resuming stream gets 503 with Retry-After.
	CatchUpQueue int
	// MaxTopics is the most selectors one stream may name.
	MaxTopics int
	// MaxBody is the largest publish request body, in bytes.
	MaxBody int64
	// MaxEventSize is the largest event data published over HTTP, in bytes.
	MaxEventSize int
	// MaxStreams is the most streams the node holds at once; beyond it a
	// stream request gets 503 with Retry-After.
	MaxStreams int
	// MaxStreamsPerClient is the most streams one client (one address, an
	// IPv6 /64; see ClientIPHeader) may hold on the node at once; beyond it
	// a stream request gets 429. Negative: no limit.
	MaxStreamsPerClient int
	// ClientIPHeader names a request header that carries the client's
	// address, set by a proxy in front of the node that overwrites what the
	// client sends: Fly-Client-IP behind Fly.io's (cmd/livepg sets it when
	// FLY_REGION is set). Empty: the connection's peer address, the only
	// choice when clients reach the node directly (they could send any
	// header).
	ClientIPHeader string
	// BodyTimeout bounds how long a publish may take to send its body;
	// a slower one is cut off (its connection closed).
	BodyTimeout time.Duration
	// Auth authorises private topics and publishing; nil allows everything.
	Auth *Auth
	// CORSOrigins may use the stream and publish endpoints from pages of
	// theirs, with credentials; other origins get no CORS headers.
	CORSOrigins []string
	// ListenerPingAfter and ListenerMaxLifetime tune the LISTEN connection.
	ListenerPingAfter, ListenerMaxLifetime time.Duration
	// ProbeInterval is how often the node proves that its listener hears
	// what the pool sends (see pglisten/probe.go); ProbeTimeout is how
	// long it waits to hear a probe before it reports itself not ready.
	ProbeInterval, ProbeTimeout time.Duration
	// StatsInterval is how often the node polls database-side figures for
	// its metrics (the notification queue's usage).
	StatsInterval time.Duration
	// PublishBatchWindow is how long POST /v1/publish waits for more
	// publishes to commit together in one transaction (see batch.go);
	// negative commits each publish alone.
	PublishBatchWindow time.Duration
	// WriteCoalesce: when the node is behind (the next event committed
	// longer ago than this), a stream that wrote less than this long ago
	// waits out the rest before it writes again, so that events coming fast
	// share one system call. A node keeping up, or a quiet stream, writes at
	// once. Negative: never wait.
	WriteCoalesce time.Duration
	// Window is how many bytes of the last events the node routed it keeps
	// in memory (their frames, topics and a fixed overhead per event):
	// a stream that fell behind, or a client resuming from a point inside
	// it, is served from memory instead of a query (see
	// fanout/window.go). Negative: no window.
	Window int64
	// PlainStreams serves every stream through net/http to its end. By
	// default an HTTP/1.1 stream takes its connection from net/http once it
	// starts: about 13 KiB per idle stream instead of 36 (see
	// internal/stream/takeover.go).
	PlainStreams bool
	// NodeID names the node in the node registry (livepg.nodes) and on the
	// inspector page; empty: the host's name and a random suffix.
	// NodeAddress and NodeRegion are shown beside it when set.
	NodeID, NodeAddress, NodeRegion string
	// NodeInterval is how often the node writes its row of the registry
	// (and reads the others'); a node silent for three is shown stale.
	NodeInterval time.Duration
	// PresenceCounts gives the members of each topic's presence on this
	// node, for the inspector; nil: the members this node's pages hold
	// (presence.go). Called every NodeInterval.
	PresenceCounts func(ctx context.Context) (map[string]int, error)
	// Presence tunes who-is-here (see presence.go); zero fields take
	// DefaultConfig's.
	Presence PresenceConfig
	// Bus is the bus mode the node expects (store.BusDefault or
	// store.BusLogical; see migrations/00009_logical.sql); empty: whatever
	// the database's livepg.bus says. A node refuses to start when the
	// database is in another mode. In the logical mode every node also
	// campaigns to be the decoding leader (package walbus), streaming the
	// replication slot through a connection to ListenURL, whose role then
	// needs the REPLICATION attribute.
	Bus    string
	Logger *slog.Logger
}

// PresenceConfig tunes presence: pages that join a topic's member set with
// their stream (GET /v1/events?topic=...&presence=...).
type PresenceConfig struct {
	// NodeID names this node in livepg.presence_nodes; empty: the node's
	// Config.NodeID.
	NodeID string
	// LeaseTTL is how long the node's lease runs after each renewal: a node
	// that stops renewing (killed) has its members leave at most LeaseTTL
	// plus Renew after its last renewal. Renew is how often every node
	// renews its lease (one statement for all its members) and expires
	// those of dead nodes.
	LeaseTTL, Renew time.Duration
	// Grace is how long a member whose stream ended stays before it leaves:
	// a page that reconnects (to this node or another) within it does not
	// leave and join again.
	Grace time.Duration
	// Flush is how often the node writes its pages' joins and leaves: one
	// statement for all of them.
	Flush time.Duration
	// MaxMembers is the most members one topic may have; a join beyond it
	// is refused with 409 (checked by each node against what it knows: a
	// topic may overshoot by the joins of one flush on other nodes).
	MaxMembers int
	// MaxTopics is the most topics one stream may join.
	MaxTopics int
	// MaxMeta is the largest member meta, in bytes of JSON.
	MaxMeta int
	// JoinRate is how many joins one client (see ClientIPHeader) may make
	// on this node per second; beyond it a join gets 429. Negative: no
	// limit.
	JoinRate int
	// Anonymous lets a page without a token's sub join, with an identity
	// of its own (sub ""). A node with no Auth (the local mode) always does.
	Anonymous bool
}

// DefaultConfig holds the node's defaults: the one place they are written.
// NewNode gives every zero field of a Config its value here, and
// cmd/livepg's help text and settings table show them from here.
var DefaultConfig = Config{
	Buffer:              256,
	BatchSize:           1000,
	BatchBytes:          4 << 20,
	CatchUpConns:        2,
	CatchUpQueue:        1000,
	PollInterval:        5 * time.Second,
	Heartbeat:           15 * time.Second,
	WriteTimeout:        30 * time.Second,
	Retry:               2 * time.Second,
	Retention:           24 * time.Hour,
	PruneInterval:       time.Minute,
	MaxTopics:           32,
	MaxBody:             1 << 20,
	MaxEventSize:        512 << 10,
	MaxStreams:          20_000,
	MaxStreamsPerClient: 256,
	BodyTimeout:         10 * time.Second,
	ListenerPingAfter:   pglisten.DefaultPingAfter,
	ListenerMaxLifetime: pglisten.DefaultMaxLifetime,
	ProbeInterval:       pglisten.DefaultProbeInterval,
	ProbeTimeout:        pglisten.DefaultProbeTimeout,
	StatsInterval:       15 * time.Second,
	NodeInterval:        5 * time.Second,
	PublishBatchWindow:  time.Millisecond,
	WriteCoalesce:       25 * time.Millisecond,
	Window:              64 << 20,
	Presence: PresenceConfig{
		LeaseTTL:   15 * time.Second,
		Renew:      5 * time.Second,
		Grace:      5 * time.Second,
		Flush:      150 * time.Millisecond,
		MaxMembers: 1000,
		MaxTopics:  4,
		MaxMeta:    1024,
		JoinRate:   20,
	},
}

func (c Config) withDefaults() Config {
	d := DefaultConfig
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.Buffer <= 0 {
		c.Buffer = d.Buffer
	}
	if c.BatchSize <= 0 {
		c.BatchSize = d.BatchSize
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = d.BatchBytes
	}
	if c.CatchUpConns <= 0 {
		c.CatchUpConns = d.CatchUpConns
	}
	if c.CatchUpQueue <= 0 {
		c.CatchUpQueue = d.CatchUpQueue
	}
	if c.MaxTopics <= 0 {
		c.MaxTopics = d.MaxTopics
	}
	if c.MaxBody <= 0 {
		c.MaxBody = d.MaxBody
	}
	if c.MaxEventSize <= 0 {
		c.MaxEventSize = d.MaxEventSize
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = d.MaxStreams
	}
	switch {
	case c.MaxStreamsPerClient == 0:
		c.MaxStreamsPerClient = d.MaxStreamsPerClient
	case c.MaxStreamsPerClient < 0:
		c.MaxStreamsPerClient = 0 // the engine's "no limit"
	}
	set(&c.BodyTimeout, d.BodyTimeout)
	set(&c.PollInterval, d.PollInterval)
	set(&c.Heartbeat, d.Heartbeat)
	set(&c.WriteTimeout, d.WriteTimeout)
	set(&c.Retry, d.Retry)
	set(&c.Retention, d.Retention)
	set(&c.PruneInterval, d.PruneInterval)
	set(&c.ListenerPingAfter, d.ListenerPingAfter)
	set(&c.ListenerMaxLifetime, d.ListenerMaxLifetime)
	set(&c.ProbeInterval, d.ProbeInterval)
	set(&c.ProbeTimeout, d.ProbeTimeout)
	set(&c.StatsInterval, d.StatsInterval)
	set(&c.NodeInterval, d.NodeInterval)
	if c.NodeInterval < 100*time.Millisecond {
		c.NodeInterval = 100 * time.Millisecond // the registry's least
	}
	if c.PublishBatchWindow == 0 {
		c.PublishBatchWindow = d.PublishBatchWindow
	}
	if c.WriteCoalesce == 0 {
		c.WriteCoalesce = d.WriteCoalesce
	}
	p, dp := &c.Presence, d.Presence
	set(&p.LeaseTTL, dp.LeaseTTL)
	set(&p.Renew, dp.Renew)
	set(&p.Grace, dp.Grace)
	set(&p.Flush, dp.Flush)
	if p.MaxMembers <= 0 {
		p.MaxMembers = dp.MaxMembers
	}
	if p.MaxTopics <= 0 {
		p.MaxTopics = dp.MaxTopics
	}
	if p.MaxMeta <= 0 {
		p.MaxMeta = dp.MaxMeta
	}
	if p.JoinRate == 0 {
		p.JoinRate = dp.JoinRate
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
