package realtime

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/livepg/livepg/realtime/internal/stream"
	"github.com/livepg/livepg/store"
)

// The inspector: what an operator sees of the nodes at /inspect (see
// inspectpage.go for the page and its endpoints).
//
// Every node keeps its figures in memory and, every NodeInterval (5 s by
// default), writes them as one small row of the node registry,
// livepg.nodes (migrations/00011_nodes.sql), and reads everyone's rows
// back. The page of a node shows that registry, with the node's own row
// replaced by figures a second old at most, pushed over the node's own
// stream: nothing of the inspector goes through the event log, so a busy
// cluster's log and its subscribers never see it, and the database sees one
// write and one read per node per interval, however many pages watch.

// Bounds of what the inspector reads, keeps and shows.
const (
	// InspectTopics is how many selectors a node's figures list (those the
	// most streams name); the total of distinct ones is given beside.
	InspectTopics = 20
	// inspectNodes is the most registry rows a node reads.
	inspectNodes = 100
	// inspectWindow is what rates and lag are measured over (about: from
	// the oldest figures kept within it).
	inspectWindow = 10 * time.Second
	// inspectFresh is how long the node's own figures are served before
	// they are taken again: the page's update interval.
	inspectFresh = time.Second
)

// TopicCount is how many of a node's open streams name a selector.
type TopicCount = stream.TopicCount

// PresenceCount is how many members a topic's presence has on a node.
type PresenceCount struct {
	Topic   string `json:"topic"`
	Members int    `json:"members"`
}

// NodeStats are a node's figures, as its registry row and its inspector
// page carry them.
type NodeStats struct {
	// Streams open on the node, those in the hub's live flow (the others
	// are catching up from the log, or starting) and those waiting for a
	// catch-up read.
	Streams         int64 `json:"streams"`
	StreamsLive     int   `json:"streams_live"`
	CatchUpsWaiting int64 `json:"catchups_waiting"`
	// Topics are the InspectTopics selectors the most streams name;
	// TopicsDistinct how many distinct selectors the streams name in all.
	Topics         []TopicCount `json:"topics"`
	TopicsDistinct int          `json:"topics_distinct"`
	// EventsPerSecond is the rate at which the node read events from the
	// log (every committed event, whatever its topic); DeliveredPerSecond
	// the rate at which it wrote events to its streams (one per stream an
	// event reached). Both over WindowSeconds.
	EventsPerSecond    float64 `json:"events_per_second"`
	DeliveredPerSecond float64 `json:"delivered_per_second"`
	// Lag is from an event's commit to the node routing it to its streams
	// (livepg_event_lag_seconds), over WindowSeconds.
	Lag           LagStats `json:"lag"`
	WindowSeconds float64  `json:"window_seconds"`
	// Listener is the LISTEN connection's state.
	Listener ListenerStats `json:"listener"`
	// NotificationQueueUsage is pg_notification_queue_usage(), polled
	// every StatsInterval: at 1 every notifying commit in the cluster fails.
	NotificationQueueUsage float64 `json:"notification_queue_usage"`
	// Log is the event log as the node sees it.
	Log LogView `json:"log"`
	// Ready is "" when the node is ready (GET /readyz), else why not.
	Ready string `json:"ready"`
	// Presence is the presence counts of the topics with the most members,
	// when the node has presence (Config.PresenceCounts); absent otherwise.
	Presence []PresenceCount `json:"presence,omitempty"`
}

// LagStats summarise the lag histogram over a window: upper bounds of its
// buckets (a p99 of 0.01 means 99% of events took at most 10 ms); null
// when no event came (Events 0), or beyond the last bucket, 60 s.
type LagStats struct {
	Events int64    `json:"events"`
	P50    *float64 `json:"p50_seconds"`
	P99    *float64 `json:"p99_seconds"`
	Max    *float64 `json:"max_seconds"`
}

// ListenerStats are the LISTEN connection's state: connected, whether it
// heard the node's latest wiring probe (pglisten/probe.go), how often it
// reconnected and how many notifications it received.
type ListenerStats struct {
	Connected     bool  `json:"connected"`
	WiringOK      bool  `json:"wiring_ok"`
	Reconnects    int64 `json:"reconnects"`
	Notifications int64 `json:"notifications"`
}

// LogView is the event log for an operator. NodeHead is the last seq the
// node routed; the others are the database's, read every NodeInterval:
// its head, how far it is pruned, the oldest event kept and when it was
// committed, PostgreSQL's estimate of its rows (-1 before the table's first
// VACUUM or ANALYZE) and the retention the node prunes by.
type LogView struct {
	NodeHead         int64      `json:"node_head"`
	Head             int64      `json:"head"`
	Epoch            string     `json:"epoch"`
	PrunedThrough    int64      `json:"pruned_through"`
	OldestSeq        int64      `json:"oldest_seq"`
	OldestAt         *time.Time `json:"oldest_at"`
	RowsEstimate     int64      `json:"rows_estimate"`
	RetentionSeconds float64    `json:"retention_seconds"`
	// Error is why the database's figures could not be read, if they
	// could not.
	Error string `json:"error,omitempty"`
}

// NodeView is one node as the inspector shows it: its registry row, with
// the node's own figures fresh for itself.
type NodeView struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Region    string    `json:"region"`
	StartedAt time.Time `json:"started_at"`
	SeenAt    time.Time `json:"seen_at"`
	// AgeSeconds is how long ago the row was written, by the database's
	// clock; Stale says the node missed three beats: presumed dead (its
	// row goes after store.ForgetAfter).
	AgeSeconds float64 `json:"age_seconds"`
	Stale      bool    `json:"stale"`
	// Self marks the node that serves the page.
	Self  bool            `json:"self"`
	Stats json.RawMessage `json:"stats"`
}

// Inspection is what the inspector page reads: GET /inspect/api/nodes, and
// each event of its stream.
type Inspection struct {
	// Node is the id of the node that answers.
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Nodes are the nodes in the registry, the answering one first, then
	// the others by id; at most 100.
	Nodes []NodeView `json:"nodes"`
	// RegistryError is why the registry could not be read or written, if
	// so: Nodes then holds this node alone, or what was read last.
	RegistryError string `json:"registry_error,omitempty"`
}

// inspector keeps a node's figures and its view of the registry.
type inspector struct {
	n       *Node
	id      string
	started time.Time

	mu      sync.Mutex
	samples []counterSample // within inspectWindow, oldest first, and one older
	stats   NodeStats       // the node's figures, taken at statsAt
	statsAt time.Time
	// Read by the beat: the database's figures and readiness.
	log      LogView
	ready    string
	presence []PresenceCount
	// The registry as last read.
	rows    []store.NodeRow
	rowsErr string
	viewers atomic.Int32 // open inspector streams
}

// counterSample is the counters the rates and the lag come from, at one time.
type counterSample struct {
	at        time.Time
	read      float64
	delivered float64
	lag       []uint64 // cumulative bucket counts
	lagCount  uint64
}

func newInspector(n *Node) *inspector {
	id := n.cfg.NodeID
	if id == "" {
		id = defaultNodeID()
	}
	return &inspector{n: n, id: id, started: time.Now()}
}

// defaultNodeID is the host's name and a random suffix: unique per start.
func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%.100s-%s", host, hex.EncodeToString(b[:]))
}

// NodeID is the node's id in the registry.
func (n *Node) NodeID() string { return n.inspect.id }

// sample reads the counters behind the rates and the lag.
func (m *metrics) sample(now time.Time) counterSample {
	s := counterSample{at: now, read: counterValue(m.publishedEvents), delivered: counterValue(m.streams.Delivered)}
	var d dto.Metric
	if m.lag.(prometheus.Metric).Write(&d) == nil && d.Histogram != nil {
		s.lagCount = d.Histogram.GetSampleCount()
		for _, b := range d.Histogram.Bucket {
			s.lag = append(s.lag, b.GetCumulativeCount())
		}
	}
	return s
}

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if c.Write(&d) != nil || d.Counter == nil {
		return 0
	}
	return d.Counter.GetValue()
}

// lagBuckets are livepg_event_lag_seconds's upper bounds.
var lagBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// lagBetween summarises the lag of the events observed between two samples.
func lagBetween(old, cur counterSample) LagStats {
	ls := LagStats{Events: int64(cur.lagCount - old.lagCount)}
	if ls.Events <= 0 || len(old.lag) != len(cur.lag) || len(cur.lag) != len(lagBuckets) {
		return LagStats{}
	}
	quantile := func(q float64) *float64 {
		want := uint64(math.Ceil(q * float64(ls.Events)))
		for i := range cur.lag {
			if cur.lag[i]-old.lag[i] >= want {
				return &lagBuckets[i]
			}
		}
		return nil // beyond the last bucket, 60 s: JSON has no infinity

	}
	ls.P50, ls.P99, ls.Max = quantile(0.5), quantile(0.99), quantile(1)
	return ls
}

// own returns the node's figures, taken again when older than inspectFresh.
func (in *inspector) own() NodeStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	now := time.Now()
	if !in.statsAt.IsZero() && now.Sub(in.statsAt) < inspectFresh {
		return in.stats
	}
	n := in.n
	cur := n.metrics.sample(now)
	in.samples = append(in.samples, cur)
	// Keep the samples within the window, and the newest one before it.
	for len(in.samples) > 2 && now.Sub(in.samples[1].at) >= inspectWindow {
		in.samples = in.samples[1:]
	}
	old := in.samples[0]
	st := NodeStats{
		Streams:                n.Streams(),
		Listener:               ListenerStats{Connected: n.listener.Connected(), WiringOK: n.listener.WiringProven(), Reconnects: n.listener.Reconnects(), Notifications: n.listener.Notifications()},
		NotificationQueueUsage: math.Float64frombits(n.metrics.queueUsageBits.Load()),
		Log:                    in.log,
		Ready:                  in.ready,
		Presence:               in.presence,
	}
	if e := n.engine.Load(); e != nil {
		st.CatchUpsWaiting = e.CatchUpsWaiting()
		st.Topics, st.TopicsDistinct = e.Topics(InspectTopics)
	}
	if st.Topics == nil {
		st.Topics = []TopicCount{}
	}
	if h := n.hub.Load(); h != nil {
		st.StreamsLive = h.Subscribers()
		st.Log.NodeHead = h.Head()
	}
	if dt := cur.at.Sub(old.at).Seconds(); dt > 0 {
		st.WindowSeconds = math.Round(dt*10) / 10
		st.EventsPerSecond = math.Round((cur.read-old.read)/dt*10) / 10
		st.DeliveredPerSecond = math.Round((cur.delivered-old.delivered)/dt*10) / 10
		st.Lag = lagBetween(old, cur)
	}
	in.stats, in.statsAt = st, now
	return st
}

// beatLoop writes the node's row every NodeInterval and reads the
// registry back; it removes the row when the node stops.
func (in *inspector) beatLoop(ctx context.Context) {
	tick := time.NewTicker(in.n.cfg.NodeInterval)
	defer tick.Stop()
	for {
		in.beat(ctx)
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := in.n.store.Leave(lctx, in.id); err != nil {
				in.n.log.Warn("leave the node registry: the row stays until it is stale", "node", in.id, "err", err)
			}
			return
		case <-tick.C:
		}
	}
}

// beat reads the database's figures, writes the node's row and reads the
// registry. Each part is bounded by a timeout of the interval.
func (in *inspector) beat(ctx context.Context) {
	n := in.n
	qctx, cancel := context.WithTimeout(ctx, max(n.cfg.NodeInterval, time.Second))
	defer cancel()
	log := LogView{RetentionSeconds: n.cfg.Retention.Seconds()}
	if ls, err := n.store.LogStats(qctx); err != nil {
		log.Error = err.Error()
	} else {
		log.Head, log.Epoch, log.PrunedThrough, log.OldestSeq, log.RowsEstimate = ls.Head, ls.Epoch, ls.PrunedThrough, ls.OldestSeq, ls.Rows
		if !ls.OldestAt.IsZero() {
			at := ls.OldestAt
			log.OldestAt = &at
		}
	}
	ready := ""
	if err := n.Ready(qctx); err != nil {
		ready = err.Error()
	}
	var presence []PresenceCount
	if f := n.cfg.PresenceCounts; f != nil {
		counts, err := f(qctx)
		if err != nil {
			n.log.Warn("inspector: presence counts", "err", err)
		}
		presence = topPresence(counts, InspectTopics)
	}
	in.mu.Lock()
	in.log, in.ready, in.presence = log, ready, presence
	in.statsAt = time.Time{} // take the figures again, with these
	in.mu.Unlock()
	stats, err := json.Marshal(in.own())
	if err != nil {
		n.log.Error("inspector: encode stats", "err", err)
		return
	}
	var problem string
	if err := n.store.Beat(qctx, store.NodeBeat{ID: in.id, Address: n.cfg.NodeAddress, Region: n.cfg.NodeRegion,
		StartedAt: in.started, Every: n.cfg.NodeInterval, Stats: stats}); err != nil {
		problem = err.Error()
		if ctx.Err() == nil {
			n.log.Warn("inspector: write the node registry", "err", err)
		}
	}
	rows, err := n.store.Nodes(qctx, inspectNodes)
	in.mu.Lock()
	defer in.mu.Unlock()
	if err != nil {
		in.rowsErr = err.Error()
		return
	}
	in.rows, in.rowsErr = rows, problem
}

// topPresence returns the limit topics with the most members.
func topPresence(counts map[string]int, limit int) []PresenceCount {
	out := make([]PresenceCount, 0, len(counts))
	for t, m := range counts {
		out = append(out, PresenceCount{Topic: t, Members: m})
	}
	slices.SortFunc(out, func(a, b PresenceCount) int {
		return cmp.Or(cmp.Compare(b.Members, a.Members), cmp.Compare(a.Topic, b.Topic))
	})
	return out[:min(limit, len(out))]
}

// Inspect returns what the inspector page shows: every node in the
// registry (at most 100), this one first with its figures fresh.
func (n *Node) Inspect() Inspection {
	in := n.inspect
	own := in.own()
	ownJSON, _ := json.Marshal(own)
	in.mu.Lock()
	rows, rowsErr := in.rows, in.rowsErr
	in.mu.Unlock()
	now := time.Now()
	out := Inspection{Node: in.id, At: now.UTC(), RegistryError: rowsErr}
	self := NodeView{ID: in.id, Address: n.cfg.NodeAddress, Region: n.cfg.NodeRegion, StartedAt: in.started.UTC(), SeenAt: now.UTC(), Self: true, Stats: ownJSON}
	out.Nodes = append(out.Nodes, self)
	for _, r := range rows {
		if r.ID == in.id {
			continue
		}
		out.Nodes = append(out.Nodes, NodeView{ID: r.ID, Address: r.Address, Region: r.Region, StartedAt: r.StartedAt.UTC(), SeenAt: r.SeenAt.UTC(),
			AgeSeconds: math.Round(r.Age.Seconds()*10) / 10, Stale: r.Stale, Stats: r.Stats})
	}
	slices.SortFunc(out.Nodes[1:], func(a, b NodeView) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
