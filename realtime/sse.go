package realtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/livepg/livepg/realtime/fanout"
)

// Why streams end, besides write errors.
var (
	errShutdown   = errors.New("node shutting down")
	errClientGone = errors.New("client gone")
	errLogRead    = errors.New("read the event log")
)

// ServeEvents is GET /v1/events?topic=<selector>&topic=...: a Server-Sent
// Events stream of the events matching the selectors. With a resume point
// (the Last-Event-ID header, or the lastEventId query parameter) it first
// replays what the client missed from the log, then continues live, with no
// gap and no duplicate.
func (n *Node) ServeEvents(w http.ResponseWriter, r *http.Request) {
	selectors, err := parseSelectors(r.URL.Query()["topic"], n.cfg.MaxTopics)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	cursor, resume, err := parseResumePoint(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := n.cfg.Auth.AuthorizeSubscribe(r, selectors); err != nil {
		WriteAuthError(w, err)
		return
	}
	select {
	case <-n.closing:
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "node is shutting down")
		return
	default:
	}
	// Take a place among the node's streams, or send the client elsewhere.
	if n.streams.Add(1) > int64(n.cfg.MaxStreams) {
		n.streams.Add(-1)
		w.Header().Set("Retry-After", "2")
		WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("this node holds its maximum of %d streams", n.cfg.MaxStreams))
		return
	}
	defer n.streams.Add(-1)

	// Find the start before answering, so that a client that has the
	// response headers gets every event committed after it had them.
	start, reset, err := n.position(r.Context(), cursor, resume)
	if err != nil {
		n.log.Error("stream start", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "event log unavailable")
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell buffering proxies to pass bytes at once
	topics := r.URL.Query()["topic"]
	// Log here, on the handler's goroutine: formatting a log line takes
	// stack, and a lean stream's own goroutine should stay small.
	n.metrics.streamsOpened.Inc()
	n.log.Info("stream opened", "topics", topics, "resume", resume, "from", start, "reset", reset, "remote", r.RemoteAddr)
	if !n.cfg.PlainStreams {
		n.streams.Add(1) // the taken stream's own place: the handler's ends as it returns
		if n.taken.take(w, func(ctx context.Context, out streamOut) {
			defer n.streams.Add(-1)
			n.serveStream(ctx, out, topics, selectors, start, reset)
		}) {
			return
		}
		n.streams.Add(-1)
	}
	w.WriteHeader(http.StatusOK)
	n.serveStream(r.Context(), newResponseOut(w), topics, selectors, start, reset)
}

// serveStream runs one stream, from its start, until it ends.
func (n *Node) serveStream(ctx context.Context, out streamOut, topics []string, selectors []fanout.Selector, start int64, reset bool) {
	opened := time.Now()
	s := &stream{
		node:   n,
		out:    out,
		sub:    fanout.NewSubscriber(selectors, n.cfg.Buffer),
		cursor: start,
	}
	defer n.hub.Leave(s.sub)
	err := s.run(ctx, reset)
	reason := n.metrics.closed(err)
	n.log.Info("stream closed", "reason", reason, "err", err, "topics", topics,
		"last_event_id", s.cursor, "events", s.delivered, "duration", time.Since(opened).Round(time.Millisecond))
}

// stream is one open SSE response.
type stream struct {
	node *Node
	out  streamOut
	sub  *fanout.Subscriber
	// cursor is the seq through which the client has every matching event.
	cursor int64
	buf    []byte
	// delivered counts the events written, for the stream's closing log line.
	delivered int64
	// wrote is when writeLive last wrote (see Config.WriteCoalesce).
	wrote time.Time
	// deadlineSet is when the write deadline was last moved (see extendDeadline).
	deadlineSet time.Time
}

func (s *stream) run(ctx context.Context, reset bool) error {
	frames := [][]byte{fanout.RetryFrame(s.node.cfg.Retry), []byte(": livepg\n\n")}
	if reset {
		frames = append(frames, fanout.ResetFrame(s.cursor))
	}
	if err := s.write(frames...); err != nil {
		return err
	}
	if err := s.catchUp(ctx); err != nil {
		return err
	}
	heartbeat := time.NewTicker(s.node.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return errClientGone
		case <-s.node.closing:
			_ = s.write(fanout.RetryFrame(s.node.cfg.Retry))
			return errShutdown
		case <-heartbeat.C:
			if err := s.write(fanout.HeartbeatFrame); err != nil {
				return err
			}
		case ev := <-s.sub.Events():
			if err := s.writeLive(ev); err != nil {
				return err
			}
		case <-s.sub.Lagged():
			// Fallen behind the live flow: send what is queued, then read the
			// rest from the log and join again.
			if err := s.writeLive(nil); err != nil {
				return err
			}
			if err := s.catchUp(ctx); err != nil {
				return err
			}
		}
	}
}

// position is where a stream starts: the log's head for a new stream (it
// gets the events committed from now on), or the client's resume point. A
// resume point outside the log (pruned, or from another database) moves to
// the head, and reset says the client must refetch its state.
func (n *Node) position(ctx context.Context, cursor int64, resume bool) (start int64, reset bool, err error) {
	bounds, err := n.bounds.get(ctx, n.store.Bounds)
	if err != nil {
		return 0, false, err
	}
	switch {
	case !resume:
		return bounds.Head, false, nil
	case cursor < bounds.PrunedThrough || cursor > bounds.Head:
		return bounds.Head, true, nil
	}
	return cursor, false, nil
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
	batch := s.node.cfg.BatchSize
	for {
		joined, head := s.node.hub.Join(s.sub, s.cursor)
		if joined {
			return nil
		}
		for s.cursor < head {
			rows, err := s.node.store.ReadMatching(ctx, s.cursor, head, exact, prefixes, batch)
			if err != nil {
				if ctx.Err() != nil {
					return errClientGone
				}
				return fmt.Errorf("catch up: %w: %w", errLogRead, err)
			}
			s.node.metrics.catchUpBatch.Observe(float64(len(rows)))
			s.buf = s.buf[:0]
			for _, row := range rows {
				s.buf = fanout.AppendFrame(s.buf, row.Seq, row.Type, row.Topic, row.Data)
				s.cursor = row.Seq
			}
			if len(rows) < batch {
				s.cursor = head
			}
			if err := s.write(s.buf); err != nil {
				return err
			}
			s.counted(len(rows), 0)
		}
	}
}

// writeLive writes ev (if not nil) and every event already queued behind it,
// then flushes once.
func (s *stream) writeLive(ev *fanout.Event) error {
	now := time.Now()
	coalesce := s.node.cfg.WriteCoalesce
	if wait := coalesce - now.Sub(s.wrote); wait > 0 && ev != nil && now.Sub(ev.CommittedAt) > coalesce {
		// Events come fast and the node is behind them (this one committed
		// a while ago): let those behind ev arrive and go out in the same
		// write. At saturation this keeps the system calls per event down;
		// a node keeping up, or a quiet stream, never waits.
		time.Sleep(wait)
		now = time.Now()
	}
	s.wrote = now
	if err := s.extendDeadline(now); err != nil {
		return err
	}
	events, bytes := 0, 0
	for {
		if ev != nil && ev.Seq > s.cursor {
			if _, err := s.out.Write(ev.Frame); err != nil {
				return err
			}
			s.cursor = ev.Seq
			events++
			bytes += len(ev.Frame)
		}
		select {
		case ev = <-s.sub.Events():
			continue
		default:
		}
		if err := s.out.Flush(); err != nil {
			return err
		}
		s.counted(events, bytes)
		return nil
	}
}

// extendDeadline keeps the write deadline at least WriteTimeout ahead of
// now, moving it (to 1.25 WriteTimeout ahead) only when a quarter of the
// timeout has passed since the last move: a stream that accepts no bytes is
// cut off after between WriteTimeout and 1.25 times it, and a busy stream
// does not pay for moving a timer on every write.
func (s *stream) extendDeadline(now time.Time) error {
	timeout := s.node.cfg.WriteTimeout
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
	if events > 0 {
		s.delivered += int64(events)
		s.node.metrics.delivered.Add(float64(events))
	}
	if bytes > 0 {
		s.node.metrics.bytesWritten.Add(float64(bytes))
	}
}

// write writes frames and flushes them, giving up after the write timeout.
func (s *stream) write(frames ...[]byte) error {
	if err := s.extendDeadline(time.Now()); err != nil {
		return err
	}
	bytes := 0
	for _, f := range frames {
		if _, err := s.out.Write(f); err != nil {
			return err
		}
		bytes += len(f)
	}
	if err := s.out.Flush(); err != nil {
		return err
	}
	s.counted(0, bytes)
	return nil
}

func parseSelectors(topics []string, max int) ([]fanout.Selector, error) {
	if len(topics) == 0 {
		return nil, errors.New("name at least one topic: ?topic=boards/42 or ?topic=boards/*")
	}
	if len(topics) > max {
		return nil, fmt.Errorf("too many topics: %d, at most %d", len(topics), max)
	}
	sels := make([]fanout.Selector, 0, len(topics))
	for _, t := range topics {
		sel, err := ParseSelector(t)
		if err != nil {
			return nil, err
		}
		sels = append(sels, sel)
	}
	return sels, nil
}

// parseResumePoint reads the Last-Event-ID header, which a reconnecting
// EventSource sends, or else the lastEventId query parameter, which a page
// sets on its first connect.
func parseResumePoint(r *http.Request) (seq int64, ok bool, err error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	if v == "" {
		return 0, false, nil
	}
	return ParseEventID(v)
}

// ParseEventID parses a resume point: a seq, a decimal integer >= 0.
func ParseEventID(v string) (seq int64, ok bool, err error) {
	digits := v != ""
	for i := 0; i < len(v); i++ {
		digits = digits && '0' <= v[i] && v[i] <= '9'
	}
	if digits {
		seq, err = strconv.ParseInt(v, 10, 64)
	}
	if !digits || err != nil {
		return 0, false, fmt.Errorf("invalid Last-Event-ID %q: want the id of an event, a decimal integer >= 0", truncate(v, 40))
	}
	return seq, true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
