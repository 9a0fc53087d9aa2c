// Package stream runs livepg's event streams: it answers an admitted
// request with a Server-Sent Events response, replays what the client
// missed from the log, joins it to the hub's live flow with no gap and no
// duplicate, and writes until the client goes, the connection stalls past
// the write timeout, or the node shuts down.
//
// The engine gets everything it needs passed in (Config): a reader of the
// log (Log), the hub, the channel that closes at shutdown, its counters and
// its limits. Admitting a request — parsing it, authorising it, counting it
// against the node's cap — is the caller's (package realtime); running the
// stream is this package's. Every wait of a stream is a case of one select
// with client-gone and shutdown.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/store"
)

// Log is what a stream reads from the event log (a *store.Store is one).
type Log interface {
	// Bounds is where the log begins and ends now, and its epoch.
	Bounds(ctx context.Context) (store.LogBounds, error)
	// Position is Bounds, and whether the id (epoch, seq) is in the log's
	// current history.
	Position(ctx context.Context, epoch string, seq int64) (store.History, error)
	// ResolvePosition turns a head position (after seq `after` of epoch, skip
	// events more: fanout.EventID.Skip) into the seq of the skip-th event
	// after `after`, or ok false when it cannot (the stream resets).
	ResolvePosition(ctx context.Context, epoch string, after, skip int64) (seq int64, ok bool, err error)
	// ReadMatching returns up to limit events with after < seq <= through
	// whose topic is one of exact or starts with one of prefixes, in seq
	// order, with no more than maxBytes of data (but at least one event).
	ReadMatching(ctx context.Context, after, through int64, exact, prefixes []string, limit int, maxBytes int64) ([]store.Event, error)
	// SeenInSnapshot returns the seqs after after of the events whose
	// writers' commits snap sees, once they are numbered (the logical bus
	// mode's page positions: see fanout.EventID).
	SeenInSnapshot(ctx context.Context, after int64, snap string) ([]int64, error)
}

// Config is the engine's dependencies and limits. Every field is required.
type Config struct {
	Log Log
	Hub *fanout.Hub
	// Done closes when streams must end (the node shuts down): each writes
	// a retry hint and ends, so that its browser resumes elsewhere.
	Done    <-chan struct{}
	Metrics Metrics
	Logger  *slog.Logger

	// MaxStreams is the most places Reserve hands out;
	// MaxStreamsPerClient the most one client may hold (0: no limit).
	MaxStreams, MaxStreamsPerClient int
	// Buffer is each subscriber's buffer in the hub; BatchSize the most
	// events one catch-up read returns, BatchBytes the most bytes of data.
	Buffer, BatchSize int
	BatchBytes        int64
	// CatchUps is how many catch-up reads run at once (the connections of
	// the pool Log reads with); CatchUpQueue how many streams may wait for
	// one before new resuming streams are refused (see CatchUpQueueFull).
	CatchUps, CatchUpQueue int
	// Heartbeat, WriteTimeout, Retry and WriteCoalesce are as documented
	// on realtime.Config.
	Heartbeat, WriteTimeout, Retry, WriteCoalesce time.Duration
	// PlainStreams serves every stream through net/http to its end
	// instead of taking HTTP/1.1 connections (see takeover.go).
	PlainStreams bool
}

// Metrics are the counters the engine adds to.
type Metrics struct {
	Opened       prometheus.Counter
	Closed       map[string]prometheus.Counter // by reason: one for each of CloseReasons
	CutOff       prometheus.Counter            // streams closed for write_timeout
	Delivered    prometheus.Counter            // events written
	BytesWritten prometheus.Counter
	CatchUpBatch prometheus.Observer // events per catch-up read
	// WindowReads counts catch-up batches served from the hub's window
	// instead of the log.
	WindowReads prometheus.Counter
}

// Why a stream ended, as its log line and livepg_streams_closed_total name
// it.
const (
	ReasonClientGone   = "client_gone"   // the client closed the connection
	ReasonShutdown     = "shutdown"      // the node is shutting down
	ReasonWriteTimeout = "write_timeout" // no bytes accepted for the write timeout: cut off
	ReasonWriteError   = "write_error"   // the connection failed
	ReasonLogError     = "log_error"     // reading the event log failed during catch-up
	ReasonTokenExpired = "token_expired" // the token the stream was opened with expired
)

// CloseReasons lists every reason a stream ends for.
var CloseReasons = []string{ReasonClientGone, ReasonShutdown, ReasonWriteTimeout, ReasonWriteError, ReasonLogError, ReasonTokenExpired}

// Why streams end, besides write errors.
var (
	errShutdown   = errors.New("node shutting down")
	errClientGone = errors.New("client gone")
	errLogRead    = errors.New("read the event log")
	errExpired    = errors.New("token expired")
)

// TokenExpiredFrame is a stream's last event when the token it was opened
// with expires: the page closes its EventSource, fetches a fresh token and
// opens a new stream from its last event id. It has no id, so the resume
// point stays the last event's.
var TokenExpiredFrame = []byte("event: token-expired\ndata: {\"error\":\"the token of this stream expired: reconnect with a fresh token\"}\n\n")

// Engine runs a node's streams.
type Engine struct {
	cfg    Config
	gate   catchUpGate
	bounds sharedBounds
	taken  takenStreams // streams on connections taken from net/http
	open   atomic.Int64 // places taken: open streams, and requests on their way to be

	mu      sync.Mutex
	clients map[string]int // places taken, by client (see Reserve)

	topics topicCounts // running streams by selector (see Topics)
}

// New returns an engine on cfg's log and hub.
func New(cfg Config) *Engine {
	if cfg.CatchUps <= 0 {
		cfg.CatchUps = 1 // an unbuffered gate would admit no read at all
	}
	if cfg.CatchUpQueue <= 0 {
		cfg.CatchUpQueue = cfg.MaxStreams
	}
	return &Engine{cfg: cfg, clients: make(map[string]int), gate: catchUpGate{slots: make(chan struct{}, cfg.CatchUps)}}
}

// CatchUpQueueFull reports whether CatchUpQueue streams already wait for a
// catch-up read: a resuming stream is then better sent elsewhere (503 with
// Retry-After) than queued. Streams already open that fall behind still
// queue: they hold one of MaxStreams places.
func (e *Engine) CatchUpQueueFull() bool {
	return e.gate.waiting.Load() >= int64(e.cfg.CatchUpQueue)
}

// InWindow reports whether a stream resuming from id is served from the
// hub's window of the log, without a catch-up read (see Position).
func (e *Engine) InWindow(id fanout.EventID) bool {
	_, ok := e.cfg.Hub.InWindow(id)
	return ok
}

// CatchUpsWaiting is how many streams wait for a catch-up read now.
func (e *Engine) CatchUpsWaiting() int64 { return e.gate.waiting.Load() }

// catchUpGate admits catch-up reads: at most cap(slots) at once, each held
// for one read (never while writing to the client), and counts those
// waiting.
type catchUpGate struct {
	slots   chan struct{}
	waiting atomic.Int64
}

// read runs one catch-up read when a slot is free.
func (g *catchUpGate) read(ctx context.Context, done <-chan struct{}, read func() ([]store.Event, error)) ([]store.Event, error) {
	select {
	case g.slots <- struct{}{}:
		// A free slot: never counted as waiting, so that a stream passing
		// through does not fill the queue for a moment (CatchUpQueueFull).
	default:
		g.waiting.Add(1)
		select {
		case g.slots <- struct{}{}:
			g.waiting.Add(-1)
		case <-ctx.Done():
			g.waiting.Add(-1)
			return nil, errClientGone
		case <-done:
			g.waiting.Add(-1)
			return nil, errShutdown
		}
	}
	defer func() { <-g.slots }()
	return read()
}

// Open is the number of streams open (or being opened) now.
func (e *Engine) Open() int64 { return e.open.Load() }

// TakenConns is the number of connections the engine holds itself, taken
// from net/http by lean streams: net/http counts the others (HTTP/2
// connections, whatever streams they carry, among them).
func (e *Engine) TakenConns() int64 { return e.taken.held.Load() }

// Why Reserve refuses a place.
var (
	ErrNodeFull   = errors.New("every stream place of the node is taken")
	ErrClientFull = errors.New("the client holds its most streams")
)

// Place is one of the node's MaxStreams places, held by one client. Each
// open stream holds exactly one, from admission to its end, whether it is
// served through net/http or on a taken connection: the node's count is
// exact, never transiently double.
type Place struct {
	e      *Engine
	client string
	once   sync.Once
}

// Reserve takes a place for a stream of client (an address: see
// realtime's clientKey), or refuses with ErrNodeFull when every place of
// the node is taken, ErrClientFull when client holds MaxStreamsPerClient.
// The place goes back with Release, or at the end of the stream that Serve
// runs with it.
func (e *Engine) Reserve(client string) (*Place, error) {
	if e.open.Add(1) > int64(e.cfg.MaxStreams) {
		e.open.Add(-1)
		return nil, ErrNodeFull
	}
	if max := e.cfg.MaxStreamsPerClient; max > 0 {
		e.mu.Lock()
		if e.clients[client] >= max {
			e.mu.Unlock()
			e.open.Add(-1)
			return nil, ErrClientFull
		}
		e.clients[client]++
		e.mu.Unlock()
	}
	return &Place{e: e, client: client}, nil
}

// Release gives the place back; calls after the first do nothing.
func (p *Place) Release() {
	p.once.Do(func() {
		e := p.e
		if e.cfg.MaxStreamsPerClient > 0 {
			e.mu.Lock()
			if e.clients[p.client]--; e.clients[p.client] <= 0 {
				delete(e.clients, p.client)
			}
			e.mu.Unlock()
		}
		e.open.Add(-1)
	})
}

// Request is an admitted stream request.
type Request struct {
	Topics    []string // the selectors as the client wrote them, for the log
	Selectors []fanout.Selector
	Resume    bool           // the client sent a resume point
	Start     fanout.EventID // the id through which the client has every event (see Position)
	Gen       uint64         // the hub's generation Start was found under (see fanout.View)
	Reset     bool           // the resume point was outside the log: send event: reset first
	// Skip lists the seqs after Start.Seq the client has too (see Skips).
	Skip []int64
	// Expires, when not zero, is when the stream's right to its topics
	// ends (its token's expiry): it ends then with TokenExpiredFrame.
	Expires time.Time
	// Place is the stream's place (Reserve); Serve gives it back when the
	// stream ends.
	Place *Place
	// First are frames written after the stream's opening (and its reset,
	// if any), before any event: presence snapshots. They carry no id.
	First [][]byte
	// Ended, when set, is called once when the stream ends, however it
	// ends: the stream's presence leaves.
	Ended func()
}

// Position is where a stream starts: the log's head for a new stream (it
// gets the events committed from now on), or the client's resume point, and
// the hub's generation it was found under. A resume point outside the log
// (pruned, from another history of the log or another database) moves to
// the head, and reset says the client must refetch its state. A resume
// point inside the hub's window (fanout.Hub.InWindow) costs no query: the
// window holds every event after it, as the node's reader last read the
// log. Other streams that ask together share one read of the log's bounds
// (see bounds.go); only an id from an older epoch than the current one
// costs a query of its own.
func (e *Engine) Position(ctx context.Context, cursor fanout.EventID, resume bool) (start fanout.EventID, gen uint64, reset bool, err error) {
	if resume {
		if gen, ok := e.cfg.Hub.InWindow(cursor); ok {
			return cursor, gen, false, nil
		}
	}
	// The generation is taken first: if the node leaves its history after
	// this, the stream is reset (see catchUp).
	gen = e.cfg.Hub.View().Gen
	unresolved := false
	if resume && cursor.Skip > 0 {
		// A head position: after cursor.Seq, skip the next cursor.Skip
		// events, which may not have been numbered when the page read it.
		// Resolved before the bounds are read, so that they include it.
		if cursor.Skip > MaxHeadSkip {
			unresolved = true
		} else {
			seq, ok, err := e.cfg.Log.ResolvePosition(ctx, cursor.Epoch, cursor.Seq, cursor.Skip)
			if err != nil {
				return start, 0, false, err
			}
			unresolved = !ok
			cursor = fanout.EventID{Seq: seq, Epoch: cursor.Epoch}
		}
	}
	bounds, err := e.bounds.get(ctx, e.cfg.Log.Bounds)
	if err != nil {
		return start, 0, false, err
	}
	head := fanout.EventID{Seq: bounds.Head, Epoch: bounds.Epoch}
	if !resume {
		return head, gen, false, nil
	}
	if unresolved {
		return head, gen, true, nil
	}
	inHistory := cursor.Seq <= bounds.Head
	if cursor.Epoch != "" && cursor.Epoch != bounds.Epoch {
		h, err := e.cfg.Log.Position(ctx, cursor.Epoch, cursor.Seq)
		if err != nil {
			return start, 0, false, err
		}
		bounds, inHistory = h.LogBounds, h.InHistory
		head = fanout.EventID{Seq: bounds.Head, Epoch: bounds.Epoch}
	}
	if !inHistory || cursor.Seq < bounds.PrunedThrough {
		return head, gen, true, nil
	}
	return cursor, gen, false, nil
}

// Skips resolves a start that carries a snapshot (a page's position in the
// logical bus mode, fanout.EventID.Snap): the seqs after it of the events
// the page's snapshot saw, which the stream must not send again. It waits
// for the decoding leader to number them.
func (e *Engine) Skips(ctx context.Context, start fanout.EventID) ([]int64, error) {
	if start.Snap == "" {
		return nil, nil
	}
	return e.cfg.Log.SeenInSnapshot(ctx, start.Seq, start.Snap)
}

// MaxHeadSkip bounds the skip of a head position a stream resolves (each
// resolution walks that many index entries): a larger one is answered with
// a reset, which is always safe. A page's head counts the events committed
// but not yet numbered when it was read: a handful while nodes run.
const MaxHeadSkip = 100000

// Serve answers an admitted request with its stream and runs it until it
// ends. It takes over req.Place and gives it back when the stream ends: as
// Serve returns, or later for a stream that goes on on a taken connection.
func (e *Engine) Serve(w http.ResponseWriter, r *http.Request, req Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell buffering proxies to pass bytes at once
	// An HTTP/2 connection is shared by many streams, each cut by its own
	// deadline when its client grants it no flow-control window: its send
	// buffer is left as the kernel sizes it.
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok && r.ProtoMajor == 1 {
		limitSendBuffer(c)
	}
	// Log here, on the handler's goroutine: formatting a log line takes
	// stack, and a lean stream's own goroutine should stay small.
	e.cfg.Metrics.Opened.Inc()
	e.cfg.Logger.Info("stream opened", "topics", req.Topics, "resume", req.Resume, "from", req.Start.String(), "reset", req.Reset, "remote", r.RemoteAddr)
	if !e.cfg.PlainStreams && r.ProtoMajor == 1 { // HTTP/2 cannot hand its connection over
		if e.taken.take(w, func(ctx context.Context, out streamOut) {
			defer req.Place.Release() // the place goes with the stream
			e.run(ctx, out, req)
		}) {
			return
		}
	}
	defer req.Place.Release()
	w.WriteHeader(http.StatusOK)
	e.run(r.Context(), newResponseOut(w, r.ProtoMajor == 2), req)
}

// connKey is the context key of ConnContext's connection.
type connKey struct{}

// ConnContext is for http.Server's ConnContext: it keeps each request's
// connection in its context, so that a stream served through net/http
// (HTTP/2 excepted) can limit its socket's send buffer as a lean stream
// does (see limitSendBuffer).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// sendBuffer is the send buffer of a stream's socket. The kernel wakes a
// writer blocked on a full socket only once a good part of the buffer has
// drained: with the megabytes Linux gives a loopback or fast socket, a
// client reading steadily at 40 KB/s can leave a write blocked for longer
// than the write timeout although it accepts bytes all along. 64 KiB keeps
// that wait short (the kernel doubles it: at most about 128 KiB in flight
// per round trip, 2.5 MB/s at 50 ms).
const sendBuffer = 64 << 10

// limitSendBuffer sets c's send buffer to sendBuffer when c is a TCP
// connection; anything else is left as it is.
func limitSendBuffer(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetWriteBuffer(sendBuffer)
	}
}

// Shutdown waits for the streams on taken connections to end (Done must be
// closed: they end on their own once told), at most grace; then it closes
// the connections of those still writing to stuck clients and waits for
// them. Streams served through net/http end with their server.
func (e *Engine) Shutdown(grace time.Duration) { e.taken.wait(grace) }

// run runs one stream, from its start, until it ends.
func (e *Engine) run(ctx context.Context, out streamOut, req Request) {
	opened := time.Now()
	s := &stream{
		e:      e,
		out:    out,
		sub:    fanout.NewSubscriber(req.Selectors, e.cfg.Buffer),
		cursor: req.Start.Seq,
		gen:    req.Gen,
		sent:   req.Start,
		skip:   req.Skip,
	}
	if len(s.skip) > 0 {
		s.snap = req.Start.Snap
	} else {
		s.sent.Snap = ""
	}
	defer e.cfg.Hub.Leave(s.sub)
	e.topics.add(req.Topics, 1)
	defer e.topics.add(req.Topics, -1)
	if req.Ended != nil {
		defer req.Ended()
	}
	err := s.run(ctx, req)
	reason := e.closed(err)
	e.cfg.Logger.Info("stream closed", "reason", reason, "err", err, "topics", req.Topics,
		"last_event_id", s.cursor, "events", s.delivered, "resets", s.resets, "duration", time.Since(opened).Round(time.Millisecond))
}

// closed counts a stream's end and returns its reason.
func (e *Engine) closed(err error) string {
	r := closeReason(err)
	e.cfg.Metrics.Closed[r].Inc()
	if r == ReasonWriteTimeout {
		e.cfg.Metrics.CutOff.Inc()
	}
	return r
}

func closeReason(err error) string {
	switch {
	case errors.Is(err, errShutdown):
		return ReasonShutdown
	case errors.Is(err, errClientGone):
		return ReasonClientGone
	case errors.Is(err, errLogRead):
		return ReasonLogError
	case errors.Is(err, errExpired):
		return ReasonTokenExpired
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonWriteTimeout
	}
	return ReasonWriteError
}

// stream is one open SSE response.
type stream struct {
	e   *Engine
	out streamOut
	sub *fanout.Subscriber
	// cursor is the seq through which the client has every matching event,
	// in the history the hub's generation gen names.
	cursor int64
	gen    uint64
	// sent is the id the client would resume from now: the last event (or
	// reset) written, or where the stream started.
	sent   fanout.EventID
	resets int64 // event: reset frames written
	buf    []byte
	// delivered counts the events written, for the stream's closing log line.
	delivered int64
	// wrote is when writeLive last wrote (see Config.WriteCoalesce).
	wrote time.Time
	// deadlineSet is when the write deadline was last moved (see extendDeadline).
	deadlineSet time.Time
	// pending is how many bytes put has queued since the last flush.
	pending int
	// live holds the events writeLive took from the hub.
	live []*fanout.Event
	// pauseTimer times writeLive's coalescing waits; made on the first.
	pauseTimer *time.Timer
	// expires is when the stream's token expires (zero: never); a long
	// catch-up checks it between batches.
	expires time.Time
	// skip holds, in order, the seqs after cursor the client has already
	// (a page's position in the logical bus mode: Request.Skip); while it
	// is not empty the stream stays on the log and its ids carry snap, so
	// that a resume from one of them skips the rest too.
	skip []int64
	snap string
}

// passed drops the skips the cursor has passed.
func (s *stream) passed() {
	i := 0
	for i < len(s.skip) && s.skip[i] <= s.cursor {
		i++
	}
	s.skip = s.skip[i:]
	if len(s.skip) == 0 {
		s.skip, s.snap = nil, ""
	}
}

// skipped reports whether the client has seq already (and drops it).
func (s *stream) skipped(seq int64) bool {
	for len(s.skip) > 0 && s.skip[0] < seq {
		s.skip = s.skip[1:]
	}
	return len(s.skip) > 0 && s.skip[0] == seq
}

func (s *stream) run(ctx context.Context, req Request) error {
	cfg := &s.e.cfg
	var expiry <-chan time.Time // nil, never ready, for a stream no token limits
	if expires := req.Expires; !expires.IsZero() {
		t := time.NewTimer(time.Until(expires))
		defer t.Stop()
		expiry = t.C
		s.expires = expires
	}
	frames := [][]byte{fanout.RetryFrame(cfg.Retry), []byte(": livepg\n\n")}
	if req.Reset {
		frames = append(frames, fanout.ResetFrame(req.Start))
		s.resets++
	}
	frames = append(frames, req.First...)
	if err := s.write(frames...); err != nil {
		return err
	}
	if err := s.catchUp(ctx); err != nil {
		return err
	}
	heartbeat := time.NewTicker(cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return errClientGone
		case <-cfg.Done:
			_ = s.write(fanout.RetryFrame(cfg.Retry))
			return errShutdown
		case <-expiry:
			_ = s.write(TokenExpiredFrame)
			return errExpired
		case <-heartbeat.C:
			if err := s.write(fanout.HeartbeatFrame); err != nil {
				return err
			}
		case <-s.sub.Ready():
			if err := s.writeLive(ctx, true); err != nil {
				return err
			}
		case <-s.sub.Lagged():
			// Fallen behind the live flow: send what is queued, then read the
			// rest from the log and join again. Unless the node left its
			// history (Hub.Reset): then what is queued may be events the
			// log no longer has, and catchUp finds out what the client
			// needs.
			if cfg.Hub.View().Gen != s.gen {
				s.discardQueued()
			} else if err := s.writeLive(ctx, false); err != nil {
				return err
			}
			if err := s.catchUp(ctx); err != nil {
				return err
			}
		}
	}
}

// catchUp reads the events after the cursor from the log, in batches, until
// the stream can join the hub's live flow with nothing in between.
func (s *stream) catchUp(ctx context.Context) error {
	var exact, prefixes []string
	for _, sel := range s.sub.Selectors() {
		if sel.Prefix {
			prefixes = append(prefixes, sel.Topic)
		} else {
			exact = append(exact, sel.Topic)
		}
	}
	cfg := &s.e.cfg
	batch := cfg.BatchSize
	for {
		var joined bool
		var view fanout.View
		if len(s.skip) == 0 {
			joined, view = cfg.Hub.Join(s.sub, s.cursor, s.gen)
		} else {
			// Not live before every skip is passed: read the log through
			// the last one, even past what the hub has routed.
			view = cfg.Hub.View()
			view.Head = max(view.Head, s.skip[len(s.skip)-1])
		}
		if joined {
			return nil
		}
		if view.Gen != s.gen {
			// The node found that its place was no longer in the log's
			// history (a restored backup, a promoted replica that lost the
			// tail) and moved to the new history's head. If what the client
			// has is still in the log's history, the stream goes on from
			// there, reading the new history; if not, the client is told to
			// reset.
			h, err := cfg.Log.Position(ctx, s.sent.Epoch, s.sent.Seq)
			if err != nil {
				if ctx.Err() != nil {
					return errClientGone
				}
				return fmt.Errorf("catch up: %w: %w", errLogRead, err)
			}
			if h.InHistory && s.sent.Seq >= h.PrunedThrough {
				s.cursor, s.gen = s.sent.Seq, view.Gen
				continue
			}
			if err := s.resetTo(view.ID(), view.Gen); err != nil {
				return err
			}
			continue
		}
		for s.cursor < view.Head {
			if !s.expires.IsZero() && !time.Now().Before(s.expires) {
				_ = s.write(TokenExpiredFrame)
				return errExpired
			}
			// The hub's window first: no query when it holds every event
			// after the cursor in the stream's history.
			if served, err := s.fromWindow(batch); served || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			from := s.cursor
			rows, err := s.e.gate.read(ctx, cfg.Done, func() ([]store.Event, error) {
				return cfg.Log.ReadMatching(ctx, from, view.Head, exact, prefixes, batch, cfg.BatchBytes)
			})
			if err != nil {
				if errors.Is(err, errShutdown) || errors.Is(err, errClientGone) {
					return err
				}
				if ctx.Err() != nil {
					return errClientGone
				}
				return fmt.Errorf("catch up: %w: %w", errLogRead, err)
			}
			// Whoever prunes (a node, an operator's livepg.prune, a
			// TRUNCATE), events after from may have gone before the read
			// saw them: a client told nothing would skip them.
			if pruned, err := s.prunedPast(ctx, from); err != nil || pruned != nil {
				if err != nil {
					return err
				}
				if err := s.resetTo(*pruned, s.gen); err != nil {
					return err
				}
				break
			}
			cfg.Metrics.CatchUpBatch.Observe(float64(len(rows)))
			// One batch in memory: the rows become frames and go.
			full := store.FullBatch(rows, batch, cfg.BatchBytes)
			s.buf = s.buf[:0]
			for i, row := range rows {
				if s.skipped(row.Seq) {
					s.cursor = row.Seq
					rows[i] = store.Event{}
					continue
				}
				typ, data := row.Type, row.Data
				if row.Omitted != "" {
					typ, data = fanout.OmittedType, fanout.OmittedData(row.Type, row.Size, row.Omitted)
				}
				id := fanout.EventID{Seq: row.Seq, Epoch: view.Epoch}
				if len(s.skip) > 0 {
					id.Snap = s.snap
				}
				s.buf = fanout.AppendFrame(s.buf, id, typ, row.Topic, data)
				s.cursor, s.sent = row.Seq, id
				rows[i] = store.Event{}
			}
			if !full {
				s.cursor = view.Head
			}
			s.passed()
			n := len(rows)
			rows = nil
			if err := s.write(s.buf); err != nil {
				return err
			}
			s.counted(n, 0)
		}
		if cap(s.buf) > maxKeptBuf {
			s.buf = nil // a batch's worth of memory is not kept by a stream gone live
		}
		if cap(s.live) > maxKeptEvents {
			s.live = nil // nor a window batch's room
		}
	}
}

// fromWindow writes the next batch of the stream's events from the hub's
// window, if the window holds every event after the cursor in the
// stream's history (its generation); served is false when it does not,
// and the stream reads the log instead. The frames are the live path's
// own, written as they are.
func (s *stream) fromWindow(batch int) (served bool, err error) {
	if len(s.skip) > 0 {
		// A page's snapshot position (logical bus) still has events to
		// skip: the log path drops them and passes them.
		return false, nil
	}
	cfg := &s.e.cfg
	events, through, ok := cfg.Hub.FromWindow(s.live[:0], s.sub.Selectors(), s.cursor, s.gen, batch, cfg.BatchBytes)
	s.live = events
	if !ok || through <= s.cursor && len(events) == 0 {
		return false, nil // not held (or, never expected, nothing to move on to): read the log
	}
	cfg.Metrics.WindowReads.Inc()
	bytes := 0
	for _, ev := range events {
		if err := s.put(ev.Frame); err != nil {
			return true, err
		}
		s.sent = fanout.EventID{Seq: ev.Seq, Epoch: ev.Epoch}
		bytes += len(ev.Frame)
	}
	s.cursor = through
	n := len(events)
	clear(s.live)
	s.live = s.live[:0]
	if n > 0 {
		if err := s.flush(); err != nil {
			return true, err
		}
	}
	s.counted(n, bytes)
	return true, nil
}

// prunedPast reads the log's bounds after a catch-up read that began after
// from: if the log is now pruned past from, it returns the head to reset
// to. Streams checking together share one read (see bounds.go).
func (s *stream) prunedPast(ctx context.Context, from int64) (*fanout.EventID, error) {
	b, err := s.e.bounds.get(ctx, s.e.cfg.Log.Bounds)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errClientGone
		}
		return nil, fmt.Errorf("catch up: %w: %w", errLogRead, err)
	}
	if b.PrunedThrough <= from {
		return nil, nil
	}
	return &fanout.EventID{Seq: b.Head, Epoch: b.Epoch}, nil
}

// resetTo tells the client to reset: it has missed events it can no longer
// get, and the stream continues after to.
func (s *stream) resetTo(to fanout.EventID, gen uint64) error {
	s.cursor, s.gen, s.sent = to.Seq, gen, to
	s.resets++
	s.e.cfg.Logger.Info("stream reset", "to", to.String())
	return s.write(fanout.ResetFrame(to))
}

// writeLive takes every event the hub has queued for the stream, and those
// queued while it writes them, and sends them in one flush (one system
// call, or one per writeChunk bytes). coalesce allows the wait of
// Config.WriteCoalesce first (not when writing what is left before a
// catch-up).
func (s *stream) writeLive(ctx context.Context, coalesce bool) error {
	s.live = s.sub.Take(s.live[:0])
	if len(s.live) == 0 {
		return nil // a wake-up whose events an earlier Take wrote
	}
	now := time.Now()
	pause := s.e.cfg.WriteCoalesce
	if wait := pause - now.Sub(s.wrote); wait > 0 && coalesce && now.Sub(s.live[0].CommittedAt) > pause {
		// Events come fast and the node is behind them (the first committed
		// a while ago): let those behind arrive and go out in the same
		// write. At saturation this keeps the system calls per event down;
		// a node keeping up, or a quiet stream, never waits.
		if err := s.pause(ctx, wait); err != nil {
			return err
		}
		now = time.Now()
		s.live = s.sub.Take(s.live)
	}
	s.wrote = now
	if err := s.extendDeadline(now); err != nil {
		return err
	}
	events, bytes := 0, 0
	for len(s.live) > 0 {
		for _, ev := range s.live {
			if ev.Seq <= s.cursor {
				continue
			}
			if err := s.put(ev.Frame); err != nil {
				return err
			}
			s.cursor = ev.Seq
			s.sent = fanout.EventID{Seq: ev.Seq, Epoch: ev.Epoch}
			events++
			bytes += len(ev.Frame)
		}
		// The writer keeps the frames themselves until the flush, not the
		// events: the slice can take the next ones.
		clear(s.live)
		s.live = s.sub.Take(s.live[:0])
	}
	if cap(s.live) > maxKeptEvents {
		s.live = nil // a burst's worth of room is not kept by a quiet stream
	}
	if err := s.flush(); err != nil {
		return err
	}
	s.counted(events, bytes)
	return nil
}

// maxKeptEvents is the most room for taken events a stream keeps between
// writes.
const maxKeptEvents = 64

// discardQueued drops the events the hub queued for the stream before it
// was dropped from the live flow.
func (s *stream) discardQueued() {
	s.live = s.sub.Take(s.live[:0])
	clear(s.live)
	s.live = s.live[:0]
}

// pause waits d before a coalesced write. A client that goes ends the
// stream at once; a shutdown ends the wait (what is queued goes out, then
// the stream ends with its retry hint).
func (s *stream) pause(ctx context.Context, d time.Duration) error {
	if s.pauseTimer == nil {
		s.pauseTimer = time.NewTimer(d)
	} else {
		s.pauseTimer.Reset(d)
	}
	select {
	case <-s.pauseTimer.C:
		return nil
	case <-ctx.Done():
		s.pauseTimer.Stop()
		return errClientGone
	case <-s.e.cfg.Done:
		s.pauseTimer.Stop()
		return nil
	}
}

// extendDeadline keeps the write deadline at least WriteTimeout ahead of
// now, moving it (to 1.25 WriteTimeout ahead) only when a quarter of the
// timeout has passed since the last move: a stream that accepts no bytes is
// cut off after between WriteTimeout and 1.25 times it, and a busy stream
// does not pay for moving a timer on every write.
func (s *stream) extendDeadline(now time.Time) error {
	timeout := s.e.cfg.WriteTimeout
	if !s.deadlineSet.IsZero() && now.Sub(s.deadlineSet) < timeout/4 {
		return nil
	}
	s.deadlineSet = now
	return s.out.SetWriteDeadline(now.Add(timeout + timeout/4))
}

// counted adds one write batch to the metrics: an atomic add per counter,
// never per event. Catch-up batches pass 0 bytes, having counted them in
// write.
func (s *stream) counted(events, bytes int) {
	m := &s.e.cfg.Metrics
	if events > 0 {
		s.delivered += int64(events)
		m.Delivered.Add(float64(events))
	}
	if bytes > 0 {
		m.BytesWritten.Add(float64(bytes))
	}
}

// write writes frames and flushes them, giving up when the client accepts
// no bytes for the write timeout.
func (s *stream) write(frames ...[]byte) error {
	bytes := 0
	for _, f := range frames {
		if err := s.put(f); err != nil {
			return err
		}
		bytes += len(f)
	}
	if err := s.flush(); err != nil {
		return err
	}
	s.counted(0, bytes)
	return nil
}

// writeChunk is how many bytes go out under one extension of the write
// deadline: a client that accepts bytes at all keeps its stream however
// large the batch (at 40 KB/s a chunk takes under a second), and one that
// accepts none for the write timeout is cut off.
const writeChunk = 32 << 10

// maxKeptBuf is the most catch-up buffer a stream keeps once live.
const maxKeptBuf = 64 << 10

// put writes p, in chunks of writeChunk bytes, each sent (flushed) under a
// deadline moved on before it: the deadline follows the bytes the client
// accepts, not whole batches.
func (s *stream) put(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), writeChunk-s.pending)
		if err := s.extendDeadline(time.Now()); err != nil {
			return err
		}
		if _, err := s.out.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		s.pending += n
		if s.pending == writeChunk {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush sends what put queued, under a deadline moved on before it. On an
// HTTP/2 stream the deadline is lifted once the bytes are out: net/http
// would reset an idle stream when it passed.
func (s *stream) flush() error {
	s.pending = 0
	if err := s.extendDeadline(time.Now()); err != nil {
		return err
	}
	if err := s.out.Flush(); err != nil {
		return err
	}
	if o, ok := s.out.(responseOut); ok && o.http2 {
		s.deadlineSet = time.Time{}
		return s.out.SetWriteDeadline(time.Time{})
	}
	return nil
}

// streamOut is where a stream writes: the ResponseWriter (with its
// controller), or a taken connection.
type streamOut interface {
	// Write queues p. A taken connection keeps p itself, not a copy, until
	// the next Flush: callers do not change p before flushing.
	Write(p []byte) (int, error)
	Flush() error
	SetWriteDeadline(t time.Time) error
}

// responseOut writes through net/http.
type responseOut struct {
	http.ResponseWriter
	*http.ResponseController
	// http2: net/http resets an HTTP/2 stream when its write deadline
	// passes, even while the stream writes nothing; the deadline must not
	// outlive the write it guards (see flush).
	http2 bool
}

func newResponseOut(w http.ResponseWriter, http2 bool) responseOut {
	return responseOut{w, http.NewResponseController(w), http2}
}

// Write resolves the ambiguity between the two embedded types' methods.
func (o responseOut) Write(p []byte) (int, error) { return o.ResponseWriter.Write(p) }

// connOut writes to a connection taken from net/http: Write collects the
// frames and Flush sends them in one system call: write for one frame (a
// net.Buffers of one element would still cost a writev), writev for more.
type connOut struct {
	conn net.Conn
	bufs net.Buffers
}

func (c *connOut) Write(p []byte) (int, error) {
	c.bufs = append(c.bufs, p)
	return len(p), nil
}

func (c *connOut) Flush() error {
	var err error
	switch len(c.bufs) {
	case 0:
		return nil
	case 1:
		_, err = c.conn.Write(c.bufs[0])
	default:
		b := c.bufs // WriteTo consumes its receiver; keep the backing array
		_, err = b.WriteTo(c.conn)
	}
	clear(c.bufs) // let the frames go
	c.bufs = c.bufs[:0]
	return err
}

func (c *connOut) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
