package realtime

import (
	"math"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/realtime/internal/stream"
	"github.com/livepg/livepg/realtime/pglisten"
)

// metrics are one node's Prometheus metrics, in a registry of the node's
// own, so that several nodes in one process (as in the tests) do not
// collide. The stream hot path only touches counters, each an atomic add,
// once per write batch.
type metrics struct {
	reg *prometheus.Registry

	// streams are the counters the stream engine adds to.
	streams stream.Metrics
	// The reader's: events it read and their lag.
	publishedEvents prometheus.Counter
	lag             prometheus.Histogram
	// readStep times each read step (store.ReadNext) as the node sees it.
	readStep prometheus.Histogram
	// omitted counts events routed as placeholders, by reason.
	omitted       *prometheus.CounterVec
	historyResets prometheus.Counter
	// catchUpReads counts the queries streams ran against the log to catch
	// up or resume (see catchUpLog).
	catchUpReads prometheus.Counter
	// The bus: its mode (one series set to 1) and the events this node
	// numbered (commit_timestamp mode).
	busMode  *prometheus.GaugeVec
	numbered prometheus.Counter
	// queueUsageBits is the float64 bits of the last
	// pg_notification_queue_usage(), set by the stats poll.
	queueUsageBits atomic.Uint64
}

// metricSources are the figures the metrics read when scraped, from the
// parts that own them.
type metricSources struct {
	openStreams func() int64
	// leader reports whether the node is the logical bus's decoding leader.
	leader func() bool
	// catchUpsWaiting is how many streams wait for a catch-up read.
	catchUpsWaiting func() int64
	hub             func() *fanout.Hub // nil until the node starts
	listener        *pglisten.Listener
}

func newMetrics(src metricSources) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	fromHub := func(read func(*fanout.Hub) float64) func() float64 {
		return func() float64 {
			if h := src.hub(); h != nil {
				return read(h)
			}
			return 0
		}
	}

	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_streams_open", Help: "Event streams open now.",
	}, func() float64 { return float64(src.openStreams()) }))
	m.streams.Opened = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_streams_opened_total", Help: "Event streams opened.",
	})
	f(m.streams.Opened)
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livepg_streams_closed_total", Help: "Event streams ended, by reason: client_gone, shutdown, write_timeout (cut off), write_error, log_error, token_expired.",
	}, []string{"reason"})
	f(closed)
	m.streams.Closed = make(map[string]prometheus.Counter, len(stream.CloseReasons))
	for _, r := range stream.CloseReasons {
		m.streams.Closed[r] = closed.WithLabelValues(r)
	}
	m.streams.CutOff = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_subscribers_cut_off_total", Help: "Streams cut off because they accepted no bytes for the write timeout; their browsers resume on reconnect.",
	})
	f(m.streams.CutOff)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_subscribers_live", Help: "Streams in the hub's live flow now (the others are catching up from the log, or starting).",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Subscribers()) })))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "livepg_subscribers_lagged_total", Help: "Times a subscriber's buffer was full and it left the live flow to catch up from the log.",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Lagged()) })))
	m.streams.Delivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_events_delivered_total", Help: "Events written to streams (live and caught up), counted per write batch.",
	})
	f(m.streams.Delivered)
	m.streams.BytesWritten = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_stream_bytes_written_total", Help: "Bytes written to streams: events, heartbeats, retry hints.",
	})
	f(m.streams.BytesWritten)
	catchUpBatch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "livepg_catchup_batch_events",
		Help:    "Events returned by each catch-up read of the log (resumes and subscribers that fell behind); its count is the number of catch-up reads.",
		Buckets: []float64{0, 1, 4, 16, 64, 256, 1024},
	})
	f(catchUpBatch)
	m.streams.CatchUpBatch = catchUpBatch
	m.catchUpReads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_catchup_reads_total",
		Help: "Queries this node's streams ran against the log: catch-up reads, and the log's bounds and positions read to start, resume or check streams (each try counted; streams opening together share a bounds read). The node's reader of new events is not counted.",
	})
	f(m.catchUpReads)
	m.streams.WindowReads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_catchup_window_reads_total",
		Help: "Catch-up batches (resumes, streams that fell behind) served from the node's window of the log (LIVEPG_WINDOW) instead of a query.",
	})
	f(m.streams.WindowReads)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_window_bytes", Help: "Bytes the node's window of the log holds now (frames, topics and a fixed overhead per event), at most LIVEPG_WINDOW.",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Window().Bytes) })))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_window_events", Help: "Events the node's window of the log holds now.",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Window().Events) })))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_window_from", Help: "The window holds every event after this seq through livepg_log_head: resume points from here are served without a query.",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Window().From) })))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_catchups_waiting", Help: "Streams waiting for a catch-up read (LIVEPG_CATCHUP_CONNS read at once); at LIVEPG_CATCHUP_QUEUE resuming streams get 503.",
	}, func() float64 { return float64(src.catchUpsWaiting()) }))
	m.publishedEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_events_read_total", Help: "Committed events the reader read from the log and routed to the hub.",
	})
	f(m.publishedEvents)
	m.omitted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livepg_events_omitted_total", Help: "Events the reader routed as placeholders (event: livepg.omitted) without their data, by reason: too_large (over livepg.limits.max_event_size), unreadable (the database failed to read it).",
	}, []string{"reason"})
	f(m.omitted)
	m.historyResets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_history_resets_total", Help: "Times the reader found its place no longer in the log's history (a restored backup, a failover to a replica that lost the last commits) and told every open stream to reset.",
	})
	f(m.historyResets)
	m.busMode = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "livepg_bus_mode", Help: "The bus mode found at start, as the label with value 1: commit_timestamp (writers commit at NOTIFY's cost; nodes number events after the commit) or commit_lock (track_commit_timestamp is off: every event transaction takes a cluster-wide lock at commit).",
	}, []string{"mode"})
	f(m.busMode)
	m.numbered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_events_numbered_total", Help: "Committed events this node numbered after their commit (commit_timestamp mode).",
	})
	f(m.numbered)
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "livepg_event_lag_seconds",
		Help:    "From an event's commit (committed_at, the database's clock) to the reader routing it to the hub, once per event per node.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	f(m.lag)
	m.readStep = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "livepg_log_read_seconds",
		Help:    "Each read step of the reader (number pending events and read what follows, one round trip), from the query's start to its last row as the node sees it: the database's time and the wait for this process to run the reader again.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	f(m.readStep)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_log_head", Help: "Seq of the last event this node routed.",
	}, fromHub(func(h *fanout.Hub) float64 { return float64(h.Head()) })))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "livepg_listener_reconnects_total", Help: "LISTEN connections opened after the first (failures, lifetime reached).",
	}, func() float64 { return float64(src.listener.Reconnects()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "livepg_listener_notifications_total", Help: "Notifications the listener received (wiring probes included): the rate at which this node drains the cluster's NOTIFY queue.",
	}, func() float64 { return float64(src.listener.Notifications()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_bus_decoding_leader", Help: "1 while this node decodes the WAL for every node (LIVEPG_BUS=logical's elected leader).",
	}, func() float64 { return boolFloat(src.leader != nil && src.leader()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_listener_connected", Help: "1 while the LISTEN connection is in place.",
	}, func() float64 { return boolFloat(src.listener.Connected()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_listener_wiring_ok", Help: "1 while the listener has heard this node's latest wiring probe sent through the pool.",
	}, func() float64 { return boolFloat(src.listener.WiringProven()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_notification_queue_usage", Help: "pg_notification_queue_usage(), polled: the fraction of the cluster's NOTIFY queue in use. At 1, every notifying commit fails.",
	}, func() float64 { return math.Float64frombits(m.queueUsageBits.Load()) }))
	return m
}

// Metrics is the node's Prometheus registry. The program adds what is not
// the node's own (build info, Go runtime, process).
func (n *Node) Metrics() *prometheus.Registry { return n.metrics.reg }

// MetricsHandler serves the node's registry in the Prometheus text format:
// GET /metrics.
func (n *Node) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{Registry: n.metrics.reg})
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
