package realtime

import (
	"errors"
	"math"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Why a stream ended, as its log line and livepg_streams_closed_total name
// it.
const (
	reasonClientGone   = "client_gone"   // the client closed the connection
	reasonShutdown     = "shutdown"      // the node is shutting down
	reasonWriteTimeout = "write_timeout" // no bytes accepted for the write timeout: cut off
	reasonWriteError   = "write_error"   // the connection failed
	reasonLogError     = "log_error"     // reading the event log failed during catch-up
)

var closeReasons = []string{reasonClientGone, reasonShutdown, reasonWriteTimeout, reasonWriteError, reasonLogError}

// metrics are one node's Prometheus metrics, in a registry of the node's
// own, so that several nodes in one process (as in the tests) do not
// collide. The stream hot path only touches counters, each an atomic add,
// once per write batch.
type metrics struct {
	reg *prometheus.Registry

	streamsOpened   prometheus.Counter
	streamsClosed   *prometheus.CounterVec
	cutOff          prometheus.Counter
	delivered       prometheus.Counter
	bytesWritten    prometheus.Counter
	catchUpBatch    prometheus.Histogram
	lag             prometheus.Histogram
	queueUsageBits  atomic.Uint64 // float64 bits of the last pg_notification_queue_usage()
	closedByReason  map[string]prometheus.Counter
	publishedEvents prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }

	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_streams_open", Help: "Event streams open now.",
	}, func() float64 { return float64(n.streams.Load()) }))
	m.streamsOpened = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_streams_opened_total", Help: "Event streams opened.",
	})
	f(m.streamsOpened)
	m.streamsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livepg_streams_closed_total", Help: "Event streams ended, by reason: client_gone, shutdown, write_timeout (cut off), write_error, log_error.",
	}, []string{"reason"})
	f(m.streamsClosed)
	m.closedByReason = make(map[string]prometheus.Counter, len(closeReasons))
	for _, r := range closeReasons {
		m.closedByReason[r] = m.streamsClosed.WithLabelValues(r)
	}
	m.cutOff = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_subscribers_cut_off_total", Help: "Streams cut off because they accepted no bytes for the write timeout; their browsers resume on reconnect.",
	})
	f(m.cutOff)
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "livepg_subscribers_lagged_total", Help: "Times a subscriber's buffer was full and it left the live flow to catch up from the log.",
	}, func() float64 {
		if h := n.hubIfStarted(); h != nil {
			return float64(h.Lagged())
		}
		return 0
	}))
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_events_delivered_total", Help: "Events written to streams (live and caught up), counted per write batch.",
	})
	f(m.delivered)
	m.bytesWritten = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_stream_bytes_written_total", Help: "Bytes written to streams: events, heartbeats, retry hints.",
	})
	f(m.bytesWritten)
	m.catchUpBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "livepg_catchup_batch_events",
		Help:    "Events returned by each catch-up read of the log (resumes and subscribers that fell behind); its count is the number of catch-up reads.",
		Buckets: []float64{0, 1, 4, 16, 64, 256, 1024},
	})
	f(m.catchUpBatch)
	m.publishedEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepg_events_read_total", Help: "Committed events the reader read from the log and routed to the hub.",
	})
	f(m.publishedEvents)
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "livepg_event_lag_seconds",
		Help:    "From an event's commit (committed_at, the database's clock) to the reader routing it to the hub, once per event per node.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	f(m.lag)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_log_head", Help: "Seq of the last event this node routed.",
	}, func() float64 {
		if h := n.hubIfStarted(); h != nil {
			return float64(h.Head())
		}
		return 0
	}))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "livepg_listener_reconnects_total", Help: "LISTEN connections opened after the first (failures, lifetime reached).",
	}, func() float64 { return float64(n.listener.Reconnects()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_listener_connected", Help: "1 while the LISTEN connection is in place.",
	}, func() float64 { return boolFloat(n.listener.Connected()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_listener_wiring_ok", Help: "1 while the listener has heard this node's latest wiring probe sent through the pool.",
	}, func() float64 { return boolFloat(n.listener.WiringProven()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livepg_notification_queue_usage", Help: "pg_notification_queue_usage(), polled: the fraction of the cluster's NOTIFY queue in use. At 1, every notifying commit fails.",
	}, func() float64 { return math.Float64frombits(m.queueUsageBits.Load()) }))
	return m
}

// closed counts a stream's end and returns its reason.
func (m *metrics) closed(err error) string {
	r := closeReason(err)
	m.closedByReason[r].Inc()
	if r == reasonWriteTimeout {
		m.cutOff.Inc()
	}
	return r
}

func closeReason(err error) string {
	switch {
	case errors.Is(err, errShutdown):
		return reasonShutdown
	case errors.Is(err, errClientGone):
		return reasonClientGone
	case errors.Is(err, errLogRead):
		return reasonLogError
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonWriteTimeout
	}
	return reasonWriteError
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
