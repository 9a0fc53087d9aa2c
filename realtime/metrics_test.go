package realtime_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// metric reads one sample of the node's registry: a counter's or gauge's
// value, or a histogram's count ("_count") or sum ("_sum"). labels are
// name=value pairs the sample must carry.
func metric(t *testing.T, n *realtime.Node, name string, labels ...string) float64 {
	t.Helper()
	families, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	base, part := name, ""
	for _, suffix := range []string{"_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, suffix); ok {
			base, part = b, suffix
		}
	}
	for _, f := range families {
		if f.GetName() != base && f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == k && lp.GetValue() == v)
				}
				if !found {
					continue samples
				}
			}
			return sampleValue(m, f.GetName() == base && part != "", part)
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func sampleValue(m *dto.Metric, histogramPart bool, part string) float64 {
	switch {
	case histogramPart && part == "_count":
		return float64(m.GetHistogram().GetSampleCount())
	case histogramPart && part == "_sum":
		return m.GetHistogram().GetSampleSum()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// The metrics follow a stream's life: open, events delivered live and from
// the log, bytes, lag observed per event, and the close with its reason;
// each stream logs one line when it opens and one when it closes.
func TestMetricsAndLogsFollowStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	logs, logger := newLogBuffer(t)
	n := startNode(t, db, realtime.Config{Logger: logger, StatsInterval: 20 * time.Millisecond, Window: realtime.DefaultConfig.Window})
	waitFor(t, "ready", func() bool { return n.Ready(ctx) == nil })
	if got := metric(t, n.Node, "livepg_listener_wiring_ok"); got != 1 {
		t.Fatalf("wiring_ok = %v once ready", got)
	}
	if got := metric(t, n.Node, "livepg_listener_connected"); got != 1 {
		t.Fatalf("listener_connected = %v", got)
	}

	live := ssetest.Open(t, n.URL+"/v1/events?topic=m/*", "")
	waitFor(t, "stream joined", func() bool { return metric(t, n.Node, "livepg_subscribers_live") == 1 })
	var last int64
	for i := range 3 {
		seq, err := n.Store.Publish(ctx, fmt.Sprintf("m/%d", i), "message", []byte(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	collect(t, live, last)
	waitFor(t, "3 events delivered", func() bool { return metric(t, n.Node, "livepg_events_delivered_total") == 3 })
	if got := metric(t, n.Node, "livepg_streams_open"); got != 1 {
		t.Errorf("streams_open = %v, want 1", got)
	}
	if got := metric(t, n.Node, "livepg_event_lag_seconds_count"); got != 3 {
		t.Errorf("lag observations = %v, want one per event read: 3", got)
	}
	if got := metric(t, n.Node, "livepg_log_head"); got != float64(last) {
		t.Errorf("log_head = %v, want %d", got, last)
	}
	if got := metric(t, n.Node, "livepg_stream_bytes_written_total"); got < 3*20 {
		t.Errorf("bytes_written = %v, too few for 3 events", got)
	}

	// A resume gets the three events from the node's window, with no
	// query (the window holds every event since the node started).
	reads := metric(t, n.Node, "livepg_catchup_reads_total")
	resumed := ssetest.Open(t, n.URL+"/v1/events?topic=m/*", "0")
	collect(t, resumed, last)
	if got := metric(t, n.Node, "livepg_catchup_window_reads_total"); got < 1 {
		t.Errorf("catch-ups from the window = %v", got)
	}
	if got := metric(t, n.Node, "livepg_catchup_reads_total"); got != reads {
		t.Errorf("the resume from the window ran %v queries", got-reads)
	}
	if got := metric(t, n.Node, "livepg_window_events"); got != 3 {
		t.Errorf("window_events = %v, want 3", got)
	}
	waitFor(t, "6 events delivered", func() bool { return metric(t, n.Node, "livepg_events_delivered_total") == 6 })

	live.Close()
	resumed.Close()
	waitFor(t, "streams closed as client_gone", func() bool {
		return metric(t, n.Node, "livepg_streams_closed_total", "reason=client_gone") == 2
	})
	// A stream is counted closed as it ends and gives back its place just
	// after: wait for the place, do not race it.
	waitFor(t, "streams_open back to 0 after both closed", func() bool {
		return metric(t, n.Node, "livepg_streams_open") == 0
	})
	if got := metric(t, n.Node, "livepg_streams_opened_total"); got != 2 {
		t.Errorf("streams_opened = %v", got)
	}
	if o, c := logs.Count("level=INFO", "stream opened", "m/*"), logs.Count("level=INFO", "stream closed", "reason=client_gone", "events=3"); o != 2 || c != 2 {
		t.Errorf("%d open and %d close log lines, want 2 and 2", o, c)
	}
	// The queue usage is polled; an idle test database uses none of it.
	waitFor(t, "queue usage polled", func() bool {
		return logs.Count("poll notification queue usage") == 0 && metric(t, n.Node, "livepg_notification_queue_usage") == 0
	})

	// The text format, as Prometheus scrapes it.
	srv := httptest.NewServer(n.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"livepg_streams_open 0", "livepg_events_delivered_total 6", "livepg_listener_reconnects_total 0",
		"livepg_notification_queue_usage", "livepg_event_lag_seconds_bucket", "livepg_subscribers_cut_off_total 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// A client that reads nothing falls behind (its buffer overflows) and is
// then cut off at the write timeout: both are counted, and the close is
// logged with its reason.
func TestMetricsCountLaggedAndCutOffSubscribers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	logs, logger := newLogBuffer(t)
	n := startNode(t, db, realtime.Config{Logger: logger, WriteTimeout: 300 * time.Millisecond, Buffer: 4, PollInterval: time.Hour})
	// The stuck client sends its request and never reads a byte.
	stuckClient(t, n, "/v1/events?topic=stuck")
	waitFor(t, "stream joined", func() bool { return metric(t, n.Node, "livepg_subscribers_live") == 1 })
	// 40 events of 256 KB in one transaction: the reader reads them in one
	// batch and the hub routes them in one go, while no write to the stuck
	// client is pending yet. The socket takes a few, the buffer 4: the rest
	// overflow it whatever the machine's speed. (Published one at a time on
	// a loaded machine, the write timeout could cut the stream off before
	// enough of them were routed to overflow its buffer.)
	blob := []byte(`"` + strings.Repeat("x", 256<<10) + `"`)
	if err := n.Store.InTx(ctx, func(tx pgx.Tx) error {
		for range 40 {
			if _, err := store.PublishTx(ctx, tx, "stuck", "message", blob); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stuck stream cut off", func() bool {
		return metric(t, n.Node, "livepg_subscribers_cut_off_total") == 1
	})
	if got := metric(t, n.Node, "livepg_streams_closed_total", "reason=write_timeout"); got != 1 {
		t.Errorf("closed with write_timeout = %v", got)
	}
	if got := metric(t, n.Node, "livepg_subscribers_lagged_total"); got < 1 {
		t.Errorf("lagged = %v, want >= 1", got)
	}
	waitFor(t, "close logged", func() bool { return logs.Count("stream closed", "reason=write_timeout") == 1 })
}

// Two nodes in one process keep separate registries.
func TestTwoNodesHaveTheirOwnMetrics(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	a, b := startNode(t, db, realtime.Config{}), startNode(t, db, realtime.Config{})
	s := ssetest.Open(t, a.URL+"/v1/events?topic=x", "")
	_ = s
	waitFor(t, "stream on a", func() bool { return metric(t, a.Node, "livepg_streams_open") == 1 })
	if got := metric(t, b.Node, "livepg_streams_open"); got != 0 {
		t.Fatalf("b counts a's stream: %v", got)
	}
}
