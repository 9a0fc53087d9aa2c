package realtime

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/realtime/pglisten"
	"github.com/livepg/livepg/store"
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
	// PollInterval is the slow timer that reads the log even without a
	// notification, in case one was lost.
	PollInterval time.Duration
	// Heartbeat is the interval of comment lines on idle streams, well inside
	// proxies' idle timeouts.
	Heartbeat time.Duration
	// WriteTimeout cuts off a stream that accepts no bytes for this long
	// (and at most a quarter longer: see stream.extendDeadline).
	WriteTimeout time.Duration
	// Retry is the reconnect delay suggested to browsers.
	Retry time.Duration
	// Retention is how long events stay in the log; older resume points get
	// a reset. PruneInterval is how often a node prunes.
	Retention, PruneInterval time.Duration
	// MaxTopics is the most selectors one stream may name.
	MaxTopics int
	// MaxBody is the largest publish request body, in bytes.
	MaxBody int64
	// MaxEventSize is the largest event data published over HTTP, in bytes.
	MaxEventSize int
	// MaxStreams is the most streams the node holds at once; beyond it a
	// stream request gets 503 with Retry-After.
	MaxStreams int
	// Auth authorises private topics and publishing; nil allows everything.
	Auth *Auth
	// CORSOrigins may use the stream and publish endpoints from pages of
	// theirs, with credentials; other origins get no CORS headers.
	CORSOrigins []string
	// ListenerPingAfter and ListenerMaxLifetime tune the LISTEN connection.
	ListenerPingAfter, ListenerMaxLifetime time.Duration
	// ProbeInterval is how often the node proves that its listener hears
	// what the pool sends (see pglisten/probe.go); ProbeTimeout is how long it waits
	// to hear a probe before it reports itself not ready.
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
	// PlainStreams serves every stream through net/http to its end. By
	// default an HTTP/1.1 stream takes its connection from net/http once it
	// starts, which costs about 15 KiB less per idle stream (see
	// takeover.go).
	PlainStreams bool
	Logger       *slog.Logger
}

// DefaultConfig holds the defaults documented in the README.
var DefaultConfig = Config{
	Buffer:              256,
	BatchSize:           1000,
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
	ListenerPingAfter:   10 * time.Second,
	ListenerMaxLifetime: 10 * time.Minute,
	ProbeInterval:       30 * time.Second,
	ProbeTimeout:        10 * time.Second,
	StatsInterval:       15 * time.Second,
	PublishBatchWindow:  time.Millisecond,
	WriteCoalesce:       25 * time.Millisecond,
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
	if c.PublishBatchWindow == 0 {
		c.PublishBatchWindow = d.PublishBatchWindow
	}
	if c.WriteCoalesce == 0 {
		c.WriteCoalesce = d.WriteCoalesce
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Node is one livepg server's real-time machinery: the LISTEN connection,
// the reader that moves new log rows into the hub, the pruner and the HTTP
// handlers for streams and publishing.
type Node struct {
	cfg      Config
	store    *store.Store
	hub      *fanout.Hub
	started  atomic.Pointer[fanout.Hub] // hub, for metrics scraped at any time
	listener *pglisten.Listener
	metrics  *metrics
	batcher  *batcher // nil when publish batching is off
	bounds   sharedBounds
	taken    takenStreams // streams on connections taken from net/http
	log      *slog.Logger

	streams atomic.Int64  // open streams
	wake    chan struct{} // cap 1: "read the log now"
	closing chan struct{} // closed when streams must end (shutdown)
	closeMu sync.Once

	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   sync.Once
}

// NewNode builds a node on st. Start runs it.
func NewNode(st *store.Store, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	listenCfg, err := pgx.ParseConfig(cfg.ListenURL)
	if err != nil {
		return nil, fmt.Errorf("listen database url: %w", err)
	}
	n := &Node{
		cfg:     cfg,
		store:   st,
		log:     cfg.Logger,
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	n.listener = pglisten.New(pglisten.Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, listenCfg.Copy())
		},
		Channel:       store.NotifyChannel,
		Handle:        func(string) { n.wakeReader() }, // every notification is a wake-up: the log is the truth
		SendProbe:     st.Notify,
		ProbeInterval: cfg.ProbeInterval,
		ProbeTimeout:  cfg.ProbeTimeout,
		PingAfter:     cfg.ListenerPingAfter,
		MaxLifetime:   cfg.ListenerMaxLifetime,
		Logger:        cfg.Logger,
	})
	n.metrics = newMetrics(n)
	if cfg.PublishBatchWindow > 0 {
		n.batcher = newBatcher(cfg.PublishBatchWindow, st, cfg.Logger)
	}
	return n, nil
}

// Start reads where the log ends and starts the node's background work. It
// returns once the node serves; the listener connects in the background.
func (n *Node) Start(ctx context.Context) error {
	bounds, err := n.store.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	n.hub = fanout.NewHub(bounds.Head)
	n.started.Store(n.hub)
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.goRun(func() { n.listener.Run(runCtx) })
	n.goRun(func() { n.readLoop(runCtx) })
	n.goRun(func() { n.pruneLoop(runCtx) })
	n.goRun(func() { n.statsLoop(runCtx) })
	if n.batcher != nil {
		n.goRun(func() { n.batcher.run(runCtx) })
	}
	return nil
}

// hubIfStarted is the hub once Start has made it, or nil.
func (n *Node) hubIfStarted() *fanout.Hub { return n.started.Load() }

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// CloseStreams tells every open stream to end with a retry hint, so that its
// browser reconnects (to another node) and resumes. New streams are refused.
func (n *Node) CloseStreams() {
	n.closeMu.Do(func() { close(n.closing) })
}

// Stop ends streams and background work and waits for the background work.
// It is safe to call more than once.
func (n *Node) Stop() {
	n.CloseStreams()
	n.stop.Do(func() {
		// Streams on taken connections end on their own once told, unless
		// a client stopped reading: those are cut after a grace period.
		n.taken.wait(5 * time.Second)
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
	})
}

// wakeReader asks the reader to read the log now. It never blocks.
func (n *Node) wakeReader() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Streams is the number of open event streams.
func (n *Node) Streams() int64 { return n.streams.Load() }

// Hub is the node's hub.
func (n *Node) Hub() *fanout.Hub { return n.hub }

// Ready reports why the node cannot serve live events, or nil: the
// listener is down, or has not proven that it hears what the pool sends
// (see pglisten/probe.go), or the database does not answer.
func (n *Node) Ready(ctx context.Context) error {
	if err := n.listener.Ready(); err != nil {
		return err
	}
	if err := n.store.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// readLoop moves new log rows into the hub: on every wake-up, and on a slow
// timer in case a notification was lost.
func (n *Node) readLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		case <-tick.C:
		}
		if err := n.readLog(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("read log", "err", err)
		}
	}
}

// readLog reads everything after the hub's head, in batches.
func (n *Node) readLog(ctx context.Context) error {
	for {
		rows, err := n.store.ReadAfter(ctx, n.hub.Head(), n.cfg.BatchSize)
		if err != nil {
			return err
		}
		events := make([]*fanout.Event, len(rows))
		now := time.Now()
		for i, row := range rows {
			events[i] = fanout.NewEvent(row.Seq, row.Type, row.Topic, row.Data, row.CommittedAt)
			// Lag is measured here, once per event, not per subscriber: the
			// fan-out stays free of it.
			n.metrics.lag.Observe(max(now.Sub(row.CommittedAt), 0).Seconds())
		}
		n.metrics.publishedEvents.Add(float64(len(events)))
		n.hub.Publish(events)
		if len(rows) < n.cfg.BatchSize {
			return nil
		}
	}
}

func (n *Node) pruneLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.PruneInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := n.store.Prune(ctx, n.cfg.Retention); err != nil && ctx.Err() == nil {
			n.log.Warn("prune log", "err", err)
		}
	}
}

// statsLoop polls database-side figures for the metrics.
func (n *Node) statsLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.StatsInterval)
	defer tick.Stop()
	for {
		n.pollStats(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Node) pollStats(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	usage, err := n.store.NotificationQueueUsage(qctx)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("poll notification queue usage", "err", err)
		}
		return
	}
	n.metrics.queueUsageBits.Store(math.Float64bits(usage))
	if usage >= 0.5 {
		// Cleaned only as far as the slowest listener in the cluster has
		// read; when full, every notifying commit fails.
		n.log.Warn("notification queue more than half full: a listener somewhere in the cluster is not reading (an idle-in-transaction LISTEN session?)", "usage", usage)
	}
}
