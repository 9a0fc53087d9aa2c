package realtime

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/realtime/internal/stream"
	"github.com/livepg/livepg/realtime/pglisten"
	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/promptconn"
)

// Node is one livepg server's real-time machinery: the LISTEN connection
// (package pglisten), the reader that moves new log rows into the hub
// (package fanout), the streams (package stream), publishing, the pruner
// and the metrics. Handler (or Routes) serves its HTTP interface.
type Node struct {
	cfg     Config
	store   *store.Store
	catchUp *store.Store // the catch-up reads' own pool (Config.CatchUpConns); made by Start
	// reader is the reader's own connection (store.ReadNext), one that
	// reads promptly on a busy process (store/promptconn); made by Start.
	reader   *store.Store
	listener *pglisten.Listener
	metrics  *metrics
	batcher  *batcher        // nil when publish batching is off
	decoder  *walbus.Decoder // the logical bus's decoding candidate; nil in the default mode
	inspect  *inspector
	presence *presence
	log      *slog.Logger

	// bus is the bus mode (store.BusCommitTimestamp or store.BusCommitLock),
	// read at Start and again by the stats poll.
	bus atomic.Value

	// Made by Start; nil before. Atomic: requests and metric scrapes may
	// come at any time.
	hub    atomic.Pointer[fanout.Hub]
	engine atomic.Pointer[stream.Engine]

	wake    chan struct{} // cap 1: "read the log now"
	closing chan struct{} // closed when streams must end (shutdown)
	closeMu sync.Once

	// The reader's health, for Ready (see readFailed).
	readMu           sync.Mutex
	readFailingSince time.Time
	readErr          error
	readStarted      time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   sync.Once
}

// NewNode builds a node on st, the pool its streams read the log with and
// its HTTP publishes write through; cfg.ListenURL names the database of its
// one LISTEN connection (the primary that st writes to). Zero fields of cfg
// take DefaultConfig's values. Start runs the node; Handler serves it; Stop
// stops it.
func NewNode(st *store.Store, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	for _, o := range cfg.CORSOrigins {
		if err := CheckOrigin(o); err != nil {
			return nil, fmt.Errorf("CORS origins: %w", err)
		}
	}
	if len(cfg.NodeID) > 128 {
		return nil, fmt.Errorf("node id %.20q...: at most 128 bytes (livepg.nodes.id)", cfg.NodeID)
	}
	listenCfg, err := pgx.ParseConfig(cfg.ListenURL)
	if err != nil {
		return nil, fmt.Errorf("listen database url: %w", err)
	}
	// Notifications wake the reader at once, however busy the process
	// (see store/promptconn).
	listenCfg.DialFunc = pgconn.DialFunc(promptconn.Dialer(promptconn.DialFunc(listenCfg.DialFunc)))
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
		Channel: store.NotifyChannel,
		// Every notification is a wake-up: the log is the truth. Then
		// yield, so that the reader runs at once on this processor rather
		// than after the listener has gone back to waiting in poll(2)
		// (store/promptconn), which keeps the processor until the runtime
		// takes it back.
		Handle:        func(string) { n.wakeReader(); runtime.Gosched() },
		SendProbe:     st.Notify,
		ProbeInterval: cfg.ProbeInterval,
		ProbeTimeout:  cfg.ProbeTimeout,
		PingAfter:     cfg.ListenerPingAfter,
		MaxLifetime:   cfg.ListenerMaxLifetime,
		Logger:        cfg.Logger,
	})
	n.metrics = newMetrics(metricSources{
		openStreams: n.Streams,
		catchUpsWaiting: func() int64 {
			if e := n.engine.Load(); e != nil {
				return e.CatchUpsWaiting()
			}
			return 0
		},
		hub:      n.hub.Load,
		listener: n.listener,
		leader:   n.DecodingLeader,
	})
	if cfg.PublishBatchWindow > 0 {
		n.batcher = newBatcher(cfg.PublishBatchWindow, st, cfg.Logger)
	}
	switch cfg.Bus {
	case "", store.BusDefault, store.BusLogical:
	default:
		return nil, fmt.Errorf("bus mode %q: want %s or %s", cfg.Bus, store.BusDefault, store.BusLogical)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = defaultNodeID()
	}
	n.cfg.NodeID = cfg.NodeID
	if cfg.Presence.NodeID == "" {
		cfg.Presence.NodeID = cfg.NodeID
	}
	n.presence = newPresence(st, cfg.Presence, cfg.Logger)
	for _, c := range n.presence.collectors() {
		n.metrics.reg.MustRegister(c)
	}
	if n.cfg.PresenceCounts == nil {
		n.cfg.PresenceCounts = func(context.Context) (map[string]int, error) { return n.presence.localCounts(), nil }
	}
	n.inspect = newInspector(n)
	return n, nil
}

// DecodingLeader reports whether this node decodes the WAL for every node
// now (the logical bus mode's elected leader).
func (n *Node) DecodingLeader() bool {
	return n.decoder != nil && n.decoder.Leader()
}

// Start reads where the log ends and starts the node's background work. It
// returns once the node serves; the listener connects in the background.
func (n *Node) Start(ctx context.Context) error {
	bounds, err := n.store.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	// One limit: the database's, for every writer. The HTTP check is only
	// the early answer, so it should say the same.
	if limit, err := n.store.MaxEventSize(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	} else if limit != n.cfg.MaxEventSize {
		n.log.Warn("LIVEPG_MAX_EVENT_SIZE differs from the database's limit, livepg.limits.max_event_size, which every writer is held to: set them equal",
			"max_event_size", n.cfg.MaxEventSize, "database_limit", limit)
	}
	if err := n.checkBus(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	// Catch-ups read through a pool of their own, so that however many
	// streams resume at once, live reads, publishes and readiness have the
	// main pool to themselves.
	poolCfg := n.store.Pool.Config()
	poolCfg.MaxConns = int32(n.cfg.CatchUpConns)
	poolCfg.MinConns = 0
	catchUpPool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("start node: catch-up pool: %w", err)
	}
	n.catchUp = &store.Store{Pool: catchUpPool}
	// The reader's round trips are on the path of every event: a
	// connection of its own whose replies wake it at once, however busy
	// the fan-out keeps the process (see store/promptconn).
	readerCfg := n.store.Pool.Config()
	readerCfg.MaxConns, readerCfg.MinConns = 1, 0
	readerCfg.ConnConfig.DialFunc = pgconn.DialFunc(promptconn.Dialer(promptconn.DialFunc(readerCfg.ConnConfig.DialFunc)))
	readerPool, err := pgxpool.NewWithConfig(ctx, readerCfg)
	if err != nil {
		catchUpPool.Close()
		return fmt.Errorf("start node: reader pool: %w", err)
	}
	n.reader = &store.Store{Pool: readerPool}
	// The presence mirror is loaded after the hub's start is read: it
	// reflects the log at least that far, and skips the events the reader
	// reads that it reflects already.
	if err := n.presence.start(ctx); err != nil {
		catchUpPool.Close()
		readerPool.Close()
		return fmt.Errorf("start node: %w", err)
	}
	hub := fanout.NewHub(bounds.Head)
	hub.KeepWindow(n.cfg.Window)         // negative: none
	hub.Reset(bounds.Epoch, bounds.Head) // no subscriber yet: this only names the history
	n.hub.Store(hub)
	n.engine.Store(stream.New(stream.Config{
		Log:                 catchUpLog{bounds: n.store, read: n.catchUp, reads: n.metrics.catchUpReads, resolve: n.resolvePosition},
		Hub:                 hub,
		Done:                n.closing,
		Metrics:             n.metrics.streams,
		Logger:              n.log,
		MaxStreams:          n.cfg.MaxStreams,
		MaxStreamsPerClient: n.cfg.MaxStreamsPerClient,
		Buffer:              n.cfg.Buffer,
		BatchSize:           n.cfg.BatchSize,
		BatchBytes:          n.cfg.BatchBytes,
		CatchUps:            n.cfg.CatchUpConns,
		CatchUpQueue:        n.cfg.CatchUpQueue,
		Heartbeat:           n.cfg.Heartbeat,
		WriteTimeout:        n.cfg.WriteTimeout,
		Retry:               n.cfg.Retry,
		WriteCoalesce:       n.cfg.WriteCoalesce,
		PlainStreams:        n.cfg.PlainStreams,
	}))
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.goRun(func() { n.listener.Run(runCtx) })
	n.goRun(func() { hub.RunWaker(runCtx) }) // streams woken a slice at a time: the listener and reader keep their turn
	n.goRun(func() { n.readLoop(runCtx, hub) })
	n.goRun(func() { n.pruneLoop(runCtx) })
	n.goRun(func() { n.statsLoop(runCtx) })
	n.goRun(func() { n.inspect.beatLoop(runCtx) })
	n.goRun(func() { n.presence.run(runCtx) })
	if n.decoder != nil {
		n.goRun(func() { _ = n.decoder.Run(runCtx) })
	}
	if n.batcher != nil {
		n.goRun(func() { n.batcher.run(runCtx) })
	}
	return nil
}

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
		if e := n.engine.Load(); e != nil {
			e.Shutdown(5 * time.Second)
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.catchUp != nil {
			n.catchUp.Close()
			n.reader.Close()
		}
	})
}

// catchUpLog is what streams read: the log's bounds through the main pool
// (one shared read for streams opening together), catch-up reads through
// the catch-up pool. Every query it runs counts in reads
// (livepg_catchup_reads_total).
type catchUpLog struct {
	bounds, read *store.Store
	reads        prometheus.Counter
	resolve      func(ctx context.Context, epoch string, after, skip int64) (int64, bool, error)
}

func (l catchUpLog) ResolvePosition(ctx context.Context, epoch string, after, skip int64) (int64, bool, error) {
	return l.resolve(ctx, epoch, after, skip)
}

func (l catchUpLog) Bounds(ctx context.Context) (store.LogBounds, error) {
	return retryStale(func() (store.LogBounds, error) {
		l.reads.Inc()
		return l.bounds.Bounds(ctx)
	})
}

func (l catchUpLog) Position(ctx context.Context, epoch string, seq int64) (store.History, error) {
	return retryStale(func() (store.History, error) {
		l.reads.Inc()
		return l.bounds.Position(ctx, epoch, seq)
	})
}

func (l catchUpLog) SeenInSnapshot(ctx context.Context, after int64, snap string) ([]int64, error) {
	return l.bounds.SeenInSnapshot(ctx, after, snap)
}

func (l catchUpLog) ReadMatching(ctx context.Context, after, through int64, exact, prefixes []string, limit int, maxBytes int64) ([]store.Event, error) {
	return retryStale(func() ([]store.Event, error) {
		l.reads.Inc()
		return l.read.ReadMatching(ctx, after, through, exact, prefixes, limit, maxBytes)
	})
}

// retryStale runs read again, once, when it failed before anything reached
// the database (pgconn.SafeToRetry): a pooled connection the server dropped
// while it sat idle (a restart, a failover) fails its first write, and a
// stream would otherwise end on it, sending its client to reconnect for
// nothing.
func retryStale[T any](read func() (T, error)) (T, error) {
	v, err := read()
	if err != nil && pgconn.SafeToRetry(err) {
		return read()
	}
	return v, err
}

// wakeReader asks the reader to read the log now. It never blocks.
func (n *Node) wakeReader() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Streams is the number of open event streams.
func (n *Node) Streams() int64 {
	if e := n.engine.Load(); e != nil {
		return e.Open()
	}
	return 0
}

// Ready reports why the node cannot serve live events, or nil: the
// listener is down, or has not proven that it hears what the pool sends
// (see pglisten/probe.go), or the log reader's reads have failed for three
// poll intervals (its head stopped), or the database does not answer, or it
// answers but cannot take writes (a standby: during a failover, until the
// pool reaches the promoted one).
func (n *Node) Ready(ctx context.Context) error {
	if err := n.listener.Ready(); err != nil {
		return err
	}
	if err := n.readerStalled(); err != nil {
		return err
	}
	if err := n.store.CheckWritable(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// readLoop moves new log rows into the hub: on every wake-up, and on a slow
// timer in case a notification was lost.
func (n *Node) readLoop(ctx context.Context, hub *fanout.Hub) {
	tick := time.NewTicker(n.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		case <-tick.C:
		}
		numbered, err := n.readLog(ctx, hub)
		if err != nil && ctx.Err() == nil {
			n.log.Warn("read log", "err", err)
		}
		// Writers are committing (this node numbered their events): let
		// the next ones gather a moment, so that the numbering runs in
		// fewer, larger transactions (see store.NumberingPause).
		if pause := store.NumberingPause(numbered); pause > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
	}
}

// readLog reads everything after the hub's head, in batches bounded in rows
// and bytes. Each read first checks, in the same snapshot, that the hub's
// place is still in the log's history: after a restore or a failover to a
// replica that lost the tail, the database's log is behind the node or
// another history; the hub then moves to the log's head and every open
// stream tells its client to reset (fanout.Hub.Reset). No row stops it: one
// the log cannot deliver (over the size limit, or unreadable) is routed as a
// placeholder with its id, logged and counted (see store.ReadAfter,
// fanout.OmittedType).
func (n *Node) readLog(ctx context.Context, hub *fanout.Hub) (numbered int, err error) {
	for {
		// One round trip: number what committed since the last wake-up
		// (commit_timestamp mode; see bus.go), then read, in one snapshot,
		// whether the hub's place is in the log's history and what follows.
		n.readStarting()
		view := hub.View()
		began := time.Now()
		next, err := n.reader.ReadNext(ctx, n.numbers(), view.Epoch, view.Head, n.cfg.BatchSize, n.cfg.BatchBytes)
		n.metrics.readStep.Observe(time.Since(began).Seconds())
		if err != nil {
			n.readFailed(err)
			return numbered, err
		}
		n.readOK()
		numbered += next.Numbered
		n.metrics.numbered.Add(float64(next.Numbered))
		history, rows := next.History, next.Events
		if !history.InHistory || history.PrunedThrough > view.Head {
			if !history.InHistory {
				n.log.Warn("the log's history changed under the node (a restored backup, a failover to a replica that lost the last commits?): its streams are told to reset",
					"node_at", view.ID().String(), "log_head", fanout.EventID{Seq: history.Head, Epoch: history.Epoch}.String())
			} else {
				// Events after the node's head were pruned (or truncated)
				// before it read them: its streams never got them.
				n.log.Warn("the log was pruned past the node's head before it read the events there (a retention shorter than the node's lag?): its streams are told to reset",
					"node_at", view.ID().String(), "pruned_through", history.PrunedThrough)
			}
			n.metrics.historyResets.Inc()
			hub.Reset(history.Epoch, history.Head)
			n.presence.reload(ctx)
			continue
		}
		// The window serves resume points as the log does: none below
		// what the log has pruned (or truncated) by now.
		hub.Pruned(history.PrunedThrough)
		events := make([]*fanout.Event, len(rows))
		now := time.Now()
		for i, row := range rows {
			typ, data := row.Type, row.Data
			if row.Omitted != "" {
				typ, data = n.omitted(row)
			}
			events[i] = fanout.NewEvent(fanout.EventID{Seq: row.Seq, Epoch: history.Epoch}, typ, row.Topic, data, row.CommittedAt)
			// Lag is measured here, once per event, not per subscriber: the
			// fan-out stays free of it.
			n.metrics.lag.Observe(max(now.Sub(row.CommittedAt), 0).Seconds())
		}
		n.metrics.publishedEvents.Add(float64(len(events)))
		// Before the hub: a stream that sees an event finds the presence
		// mirror past it (see admitPresence).
		n.presence.apply(history.Epoch, rows)
		hub.Publish(events)
		if !next.More {
			return numbered, nil
		}
	}
}

// omitted logs and counts an event routed as a placeholder and returns the
// placeholder's type and data.
func (n *Node) omitted(row store.Event) (typ string, data []byte) {
	n.log.Warn("event delivered as a placeholder, without its data", "seq", row.Seq, "topic", row.Topic,
		"type", row.Type, "size", row.Size, "reason", row.Omitted)
	n.metrics.omitted.WithLabelValues(row.Omitted).Inc()
	return fanout.OmittedType, fanout.OmittedData(row.Type, row.Size, row.Omitted)
}

// readStarting, readFailed and readOK keep the reader's state for Ready:
// since when its reads have failed (zero: the last one worked), the last
// error, and since when the read under way has run.
func (n *Node) readStarting() {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	n.readStarted = time.Now()
}

func (n *Node) readFailed(err error) {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	if n.readFailingSince.IsZero() {
		n.readFailingSince = time.Now()
	}
	n.readErr = err
	n.readStarted = time.Time{}
}

func (n *Node) readOK() {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	n.readFailingSince = time.Time{}
	n.readErr = nil
	n.readStarted = time.Time{}
}

// readerStalled reports the reader when its reads have failed, or one read
// has run, for longer than three poll intervals: its head stays where it
// is while the log may grow.
func (n *Node) readerStalled() error {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	stall := 3 * n.cfg.PollInterval
	head := n.hub.Load().Head()
	switch {
	case !n.readFailingSince.IsZero() && time.Since(n.readFailingSince) >= stall:
		return fmt.Errorf("log reader: no read has worked for %s, head stuck at %d: %w",
			time.Since(n.readFailingSince).Round(time.Second), head, n.readErr)
	case !n.readStarted.IsZero() && time.Since(n.readStarted) >= stall:
		return fmt.Errorf("log reader: a read has run for %s, head stuck at %d",
			time.Since(n.readStarted).Round(time.Second), head)
	}
	return nil
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
		through, err := n.store.Prune(ctx, n.cfg.Retention)
		if err != nil && ctx.Err() == nil {
			n.log.Warn("prune log", "err", err)
		}
		if through > 0 {
			n.hub.Load().Pruned(through) // at once, not at the reader's next read
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
	if err := n.checkBus(qctx); err != nil && ctx.Err() == nil {
		n.log.Warn("read bus mode", "err", err)
	}
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
