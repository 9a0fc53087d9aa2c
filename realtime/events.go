package realtime

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/realtime/internal/stream"
	"github.com/livepg/livepg/store"
)

// ServeEvents is GET /v1/events?topic=<selector>&topic=...: a Server-Sent
// Events stream of the events matching the selectors. With a resume point
// (the Last-Event-ID header, or the lastEventId query parameter) it first
// replays what the client missed from the log, then continues live, with no
// gap and no duplicate.
//
// This is admission — parse, authorise, count against MaxStreams, find the
// start — each refusal a clear 4xx or 503 before any work; running the
// stream is package stream's.
func (n *Node) ServeEvents(w http.ResponseWriter, r *http.Request) {
	topics := r.URL.Query()["topic"]
	selectors, err := parseSelectors(topics, n.cfg.MaxTopics)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	cursor, resume, err := parseResumePoint(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	expires, err := n.cfg.Auth.authorizeStream(r, selectors)
	if err != nil {
		WriteAuthError(w, err)
		return
	}
	joining, perr := n.parsePresence(r, selectors)
	if perr != nil {
		WriteAuthError(w, perr)
		return
	}
	engine := n.engine.Load()
	select {
	case <-n.closing:
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "node is shutting down")
		return
	default:
		if engine == nil {
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "node is not started")
			return
		}
	}
	// Take a place among the node's streams, or send the client elsewhere.
	place, err := engine.Reserve(n.clientKey(r))
	switch {
	case errors.Is(err, stream.ErrClientFull):
		w.Header().Set("Retry-After", "10")
		WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("this client (%s) holds its maximum of %d streams on this node (LIVEPG_MAX_STREAMS_PER_CLIENT): close one first", n.clientKey(r), n.cfg.MaxStreamsPerClient))
		return
	case err != nil:
		w.Header().Set("Retry-After", "2")
		WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("this node holds its maximum of %d streams", n.cfg.MaxStreams))
		return
	}
	// A resume the window serves reads nothing: the queue is not its.
	if resume && engine.CatchUpQueueFull() && !engine.InWindow(cursor) {
		place.Release()
		w.Header().Set("Retry-After", "2")
		WriteError(w, http.StatusServiceUnavailable, "too many streams are catching up from the log on this node")
		return
	}

	// Find the start before answering, so that a client that has the
	// response headers gets every event committed after it had them.
	start, gen, reset, err := engine.Position(r.Context(), cursor, resume)
	if err != nil {
		place.Release()
		n.log.Error("stream start", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "event log unavailable")
		return
	}
	// A page's position in the logical bus mode carries its snapshot: the
	// events it saw that were not numbered yet are skipped.
	skip, err := engine.Skips(r.Context(), start)
	if errors.Is(err, store.ErrTooFarBehind) {
		// Too old to resolve: start from the head, and the client
		// refetches its state (event: reset), as for any position the log
		// cannot resolve.
		n.log.Info("stream start: a page's position too far behind the log's head: reset", "id", truncate(cursor.String(), 60))
		start, gen, _, err = engine.Position(r.Context(), fanout.EventID{}, false)
		reset = err == nil
	}
	if err != nil {
		place.Release()
		switch {
		case errors.Is(err, store.ErrInvalid):
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("invalid Last-Event-ID %q: its snapshot is not one the database reads", truncate(cursor.String(), 60)))
		case errors.Is(err, store.ErrLeaderBehind):
			w.Header().Set("Retry-After", "2")
			WriteError(w, http.StatusServiceUnavailable, "events the page has seen are not numbered yet: retry")
		default:
			n.log.Error("stream start: events the page saw", "err", err)
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "event log unavailable")
		}
		return
	}
	req := stream.Request{Topics: topics, Selectors: selectors, Resume: resume, Start: start, Skip: skip, Gen: gen, Reset: reset, Expires: expires, Place: place}
	if joining != nil {
		first, release, perr := n.admitPresence(r.Context(), n.clientKey(r), joining, start)
		if perr != nil {
			place.Release()
			if perr.status == http.StatusServiceUnavailable || perr.status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			WriteAuthError(w, perr)
			return
		}
		req.First, req.Ended = first, release
	}
	engine.Serve(w, r, req)
}

func parseSelectors(topics []string, max int) ([]Selector, error) {
	if len(topics) == 0 {
		return nil, errors.New("name at least one topic: ?topic=boards/42 or ?topic=boards/*")
	}
	if len(topics) > max {
		return nil, fmt.Errorf("too many topics: %d, at most %d", len(topics), max)
	}
	sels := make([]Selector, 0, len(topics))
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
func parseResumePoint(r *http.Request) (id EventID, ok bool, err error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	if v == "" {
		return id, false, nil
	}
	return ParseEventID(v)
}

// EventID is an event's id on the stream: its seq and the epoch of the
// log's history it belongs to, written '<seq>-<epoch>' (see
// migrations/00006_history.sql); a plain '<seq>' is an id from before
// epochs. Clients treat it as an opaque string.
type EventID = fanout.EventID

// ParseEventID parses a resume point: the id of an event ('<seq>-<epoch>',
// as streams and livepg.head() write it), or a plain seq from before epochs.
func ParseEventID(v string) (id EventID, ok bool, err error) {
	id, err = fanout.ParseEventID(v)
	if err != nil {
		return id, false, fmt.Errorf("invalid Last-Event-ID %q: want the id of an event (<seq>-<epoch>, or a plain <seq> >= 0)", truncate(v, 40))
	}
	return id, true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// StreamConnections is the number of connections the node's streams hold
// themselves: those lean streams took from net/http (HTTP/1.1 only), which
// an http.Server no longer counts (its ConnState hook sees them hijacked).
// Streams served through net/http, all those of HTTP/2 connections among
// them, hold no connection of their own. A server bounding its descriptors
// counts its own connections plus these (as cmd/livepg does).
func (n *Node) StreamConnections() int64 {
	if e := n.engine.Load(); e != nil {
		return e.TakenConns()
	}
	return 0
}
