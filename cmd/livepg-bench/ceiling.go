package main

import (
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
// its topic; each stream is one goroutine that writes whatever is queued and
// flushes once (coalesced writes). A stream whose queue is full is cut off.
// It speaks the same wire format as livepg, so the same run works on both.

type ceilingConfig struct {
	Addr      string
	Buffer    int
	Heartbeat time.Duration
	Lifetime  time.Duration
	// Hijack takes each stream's connection from net/http and writes to it
	// directly (see serveHijacked): what a leaner stream would cost.
	Hijack bool
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
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 || c.Buffer < 1 || c.Heartbeat <= 0 || c.Lifetime <= 0 {
		return c, errors.New("usage: livepg-bench ceiling [--addr 127.0.0.1:9090] [--buffer 256] [--heartbeat 15s] [--lifetime 30m]")
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

type ceilingSub struct {
	topic  string
	events chan []byte
	cut    chan struct{} // closed when the queue overflowed
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
	s := &ceilingSub{topic: topic, events: make(chan []byte, h.buffer), cut: make(chan struct{})}
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

// publish numbers the event, encodes it once and offers it to every stream
// on the topic.
func (h *ceilingHub) publish(topic, typ string, data []byte) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	frame := make([]byte, 0, 64+len(topic)+len(data))
	frame = append(frame, "id: "...)
	frame = strconv.AppendInt(frame, h.seq, 10)
	frame = append(frame, "\nevent: "...)
	frame = append(frame, typ...)
	frame = append(frame, "\ndata: {\"topic\":"...)
	frame = strconv.AppendQuote(frame, topic)
	frame = append(frame, `,"data":`...)
	frame = append(frame, data...)
	frame = append(frame, "}\n\n"...)
	for s := range h.topics[topic] {
		select {
		case s.events <- frame:
		default:
			h.removeLocked(s)
			close(s.cut)
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
		case frame := <-sub.events:
			if write(frame) != nil {
				return
			}
		more:
			for {
				select {
				case frame = <-sub.events:
					if _, err := w.Write(frame); err != nil {
						return
					}
				default:
					break more
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
	seq := h.publish(req.Topic, req.Type, req.Data)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"seq\":%d}\n", seq)
}

// serveCeiling runs the ceiling server until ctx ends or its lifetime is
// over.
func serveCeiling(ctx context.Context, cfg ceilingConfig, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Lifetime)
	defer cancel()
	mux := newCeiling(cfg).routes()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
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
		case frame := <-sub.events:
			bufs = append(bufs[:0], frame)
		more:
			for len(bufs) < 1024 {
				select {
				case frame = <-sub.events:
					bufs = append(bufs, frame)
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
