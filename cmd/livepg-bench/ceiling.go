package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The ceiling is the simplest fan-out server one would write in Go, for the
// load generator to measure livepg against: no database, no resume, no
// catch-up. POST /v1/publish {"topic","type","data"} numbers the event,
// encodes its SSE frame once and offers the same bytes to every stream on
// its topic; each stream is one goroutine that takes everything queued for
// it and writes it at once (one flush; with --hijack one write or writev).
// A stream whose queue is full is cut off. It speaks the same wire format
// as livepg, so the same run works on both.
//
// Events also come in through the feed (--feed): a plain TCP connection
// carrying one event per line, "<topic> <type> <data JSON>". What one read
// of it returns is published as one batch, and each stream on a topic gets
// the batch's frames for it with one channel send (one wake-up), as livepg's
// listener hands its hub each read of the log. A publish over HTTP waits
// behind thousands of busy stream goroutines for its turn (at saturation the
// ceiling took only 6-19 of the 100 events/s offered that way); the feed
// takes the offered rate, so the ceiling is measured under the same load as
// livepg.

type ceilingConfig struct {
	Addr      string
	Buffer    int
	Heartbeat time.Duration
	Lifetime  time.Duration
	// Hijack takes each stream's connection from net/http and writes to it
	// directly (see serveHijacked): what a leaner stream would cost.
	Hijack bool
	// Feed is a loopback address taking events one per line (see above).
	Feed string
}

func parseCeilingFlags(args []string, stderr io.Writer) (ceilingConfig, error) {
	var c ceilingConfig
	fs := flag.NewFlagSet("livepg-bench ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:9090", "listen address (loopback)")
	fs.IntVar(&c.Buffer, "buffer", 256, "events queued per stream before it is cut off (livepg's LIVEPG_BUFFER default)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 15*time.Second, "comment line interval on idle streams")
	fs.DurationVar(&c.Lifetime, "lifetime", 30*time.Minute, "stop by itself after this long")
	fs.BoolVar(&c.Hijack, "hijack", false, "take each stream's connection from net/http: one small goroutine and no buffers per idle stream")
	fs.StringVar(&c.Feed, "feed", "", "also take events on this loopback TCP address, one per line: <topic> <type> <data JSON>; each read is published as one batch (livepg-bench --mode feed)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 || c.Buffer < 1 || c.Heartbeat <= 0 || c.Lifetime <= 0 {
		return c, errors.New("usage: livepg-bench ceiling [--addr 127.0.0.1:9090] [--buffer 256] [--heartbeat 15s] [--lifetime 30m] [--hijack] [--feed 127.0.0.1:9091]")
	}
	if c.Feed != "" {
		if err := checkLoopback(c.Feed); err != nil {
			return c, fmt.Errorf("--feed: %w", err)
		}
	}
	return c, nil
}

// ceilingHub routes frames to the streams of a topic.
type ceilingHub struct {
	mu        sync.Mutex
	seq       int64
	topics    map[string]map[*ceilingSub]struct{}
	buffer    int
	heartbeat time.Duration
	hijack    bool
}

// ceilingSub is one stream's queue: each element is a batch of frames,
// shared by every stream on the topic and never changed.
type ceilingSub struct {
	topic  string
	events chan [][]byte
	cut    chan struct{} // closed when the queue overflowed
}

// ceilingEvent is an event to publish.
type ceilingEvent struct {
	topic, typ string
	data       []byte
}

func newCeiling(cfg ceilingConfig) *ceilingHub {
	return &ceilingHub{topics: make(map[string]map[*ceilingSub]struct{}), buffer: cfg.Buffer, heartbeat: cfg.Heartbeat, hijack: cfg.Hijack}
}

func (h *ceilingHub) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", h.serveEvents)
	mux.HandleFunc("POST /v1/publish", h.servePublish)
	return mux
}

func (h *ceilingHub) subscribe(topic string) *ceilingSub {
	s := &ceilingSub{topic: topic, events: make(chan [][]byte, h.buffer), cut: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.topics[topic]
	if set == nil {
		set = make(map[*ceilingSub]struct{})
		h.topics[topic] = set
	}
	set[s] = struct{}{}
	return s
}

func (h *ceilingHub) unsubscribe(s *ceilingSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *ceilingHub) removeLocked(s *ceilingSub) {
	set := h.topics[s.topic]
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if len(set) == 0 {
		delete(h.topics, s.topic)
	}
}

// publish numbers the events, encodes each once and offers every stream on
// a topic that topic's frames of the batch in one send; it returns the
// last event's number.
func (h *ceilingHub) publish(events []ceilingEvent) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	byTopic := make(map[string][][]byte, 1)
	for _, e := range events {
		h.seq++
		frame := make([]byte, 0, 64+len(e.topic)+len(e.data))
		frame = append(frame, "id: "...)
		frame = strconv.AppendInt(frame, h.seq, 10)
		frame = append(frame, "\nevent: "...)
		frame = append(frame, e.typ...)
		frame = append(frame, "\ndata: {\"topic\":"...)
		frame = strconv.AppendQuote(frame, e.topic)
		frame = append(frame, `,"data":`...)
		frame = append(frame, e.data...)
		frame = append(frame, "}\n\n"...)
		byTopic[e.topic] = append(byTopic[e.topic], frame)
	}
	for topic, frames := range byTopic {
		for s := range h.topics[topic] {
			select {
			case s.events <- frames:
			default:
				h.removeLocked(s)
				close(s.cut)
			}
		}
	}
	return h.seq
}

func (h *ceilingHub) serveEvents(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		http.Error(w, `{"error":"name a topic"}`, http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	if h.hijack {
		if conn, brw, err := rc.Hijack(); err == nil {
			brw.Reader.Reset(nil) // drop net/http's buffers with the handler
			brw.Writer.Reset(nil)
			go h.serveHijacked(conn, topic) // a fresh, small stack; this handler's ends
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sub := h.subscribe(topic)
	defer h.unsubscribe(sub)
	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
	if write([]byte("retry: 2000\n\n: ceiling\n\n")) != nil || rc.Flush() != nil {
		return
	}
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.cut:
			return
		case <-heartbeat.C:
			if write([]byte(":\n\n")) != nil || rc.Flush() != nil {
				return
			}
		case frames := <-sub.events:
			if rc.SetWriteDeadline(time.Now().Add(30*time.Second)) != nil {
				return
			}
			for more := true; more; {
				for _, frame := range frames {
					if _, err := w.Write(frame); err != nil {
						return
					}
				}
				select {
				case frames = <-sub.events:
				default:
					more = false
				}
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

func (h *ceilingHub) servePublish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Topic string          `json:"topic"`
		Type  string          `json:"type"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || req.Topic == "" {
		http.Error(w, `{"error":"want {\"topic\",\"type\",\"data\"}"}`, http.StatusBadRequest)
		return
	}
	if req.Type == "" {
		req.Type = "message"
	}
	if len(req.Data) == 0 {
		req.Data = json.RawMessage("null")
	}
	seq := h.publish([]ceilingEvent{{topic: req.Topic, typ: req.Type, data: req.Data}})
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"seq\":%d}\n", seq)
}

// serveCeiling runs the ceiling server until ctx ends or its lifetime is
// over.
func serveCeiling(ctx context.Context, cfg ceilingConfig, out io.Writer) error {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	var fln net.Listener
	if cfg.Feed != "" {
		fln, err = net.Listen("tcp", cfg.Feed)
		if err != nil {
			ln.Close()
			return fmt.Errorf("ceiling feed: %w", err)
		}
	}
	return serveCeilingOn(ctx, cfg, ln, fln, out)
}

// serveCeilingOn is serveCeiling on listeners of the caller's (fln: the
// feed's, or nil), which it closes.
func serveCeilingOn(ctx context.Context, cfg ceilingConfig, ln, fln net.Listener, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Lifetime)
	defer cancel()
	hub := newCeiling(cfg)
	mux := hub.routes()
	if fln != nil {
		var feeds sync.WaitGroup
		defer func() { cancel(); feeds.Wait() }() // the feed ends with ctx, whatever ends this
		feeds.Add(1)
		go func() {
			defer feeds.Done()
			hub.serveFeed(ctx, fln, &feeds)
		}()
		fmt.Fprintf(out, "ceiling feed on %s\n", fln.Addr())
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(out, "ceiling serving on http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("ceiling: %w", err)
	case <-ctx.Done():
	}
	// Streams end with the base context; give them a moment to go.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// serveHijacked is a stream on a connection taken from net/http: it writes
// the response head itself, then the frames as they come, everything queued
// in one system call (write for one frame, writev for several), straight
// from the shared encoded frames. The body
// ends when the connection closes, so there is no chunked encoding and no
// buffer per stream. A second goroutine only waits for the client to go
// (net/http keeps one such per connection too).
func (h *ceilingHub) serveHijacked(conn net.Conn, topic string) {
	defer conn.Close()
	sub := h.subscribe(topic)
	defer h.unsubscribe(sub)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	var bufs [][]byte
	write := func(frames ...[]byte) error {
		if err := conn.SetWriteDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return err
		}
		if len(frames) == 1 { // write, not a writev of one element
			_, err := conn.Write(frames[0])
			return err
		}
		nb := net.Buffers(append(bufs[:0], frames...))
		_, err := nb.WriteTo(conn)
		return err
	}
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\nretry: 2000\n\n: ceiling\n\n")
	if write(head) != nil {
		return
	}
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-gone:
			return
		case <-sub.cut:
			return
		case <-heartbeat.C:
			if write([]byte(":\n\n")) != nil {
				return
			}
		case frames := <-sub.events:
			bufs = append(bufs[:0], frames...)
		more:
			for len(bufs) < 1024 {
				select {
				case frames = <-sub.events:
					bufs = append(bufs, frames...)
				default:
					break more
				}
			}
			if write(bufs...) != nil {
				return
			}
			clear(bufs)
		}
	}
}

// maxFeedLine bounds one line of the feed: an event's topic, type and data.
const maxFeedLine = 1 << 20

// serveFeed accepts feed connections on ln until ctx ends; each connection
// is read on a goroutine of its own, counted in conns.
func (h *ceilingHub) serveFeed(ctx context.Context, ln net.Listener, conns *sync.WaitGroup) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // closed with ctx
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer conn.Close()
			closeWithCtx := context.AfterFunc(ctx, func() { conn.Close() })
			defer closeWithCtx()
			h.readFeed(conn)
		}()
	}
}

// readFeed publishes the events of a feed connection until it ends or
// sends a bad line: the complete lines of each read as one batch.
func (h *ceilingHub) readFeed(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	var batch []ceilingEvent
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: take the rest of it, bounded.
			long := bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxFeedLine {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil || len(line) > maxFeedLine {
			if len(batch) > 0 {
				h.publish(batch)
			}
			return
		}
		e, ok := parseFeedLine(line)
		if !ok {
			return
		}
		batch = append(batch, e)
		if br.Buffered() == 0 { // everything this read returned
			h.publish(batch)
			batch = batch[:0] // publish keeps nothing of it
		}
	}
}

// parseFeedLine reads "<topic> <type> <data JSON>\n"; the data is copied.
func parseFeedLine(line []byte) (ceilingEvent, bool) {
	line = bytes.TrimRight(line, "\r\n")
	topic, rest, ok1 := bytes.Cut(line, []byte(" "))
	typ, data, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(topic) == 0 || len(typ) == 0 || !json.Valid(data) {
		return ceilingEvent{}, false
	}
	return ceilingEvent{topic: string(topic), typ: string(typ), data: bytes.Clone(data)}, true
}
