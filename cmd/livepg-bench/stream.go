package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// stamp is the marker that carries an event's number and send time in its
// data: "lpgb:<n>:<unix nanoseconds>". The reader finds it anywhere in a data
// line, so it works inside a tracked row's JSON as well as in a publish body.
const stampMarker = "lpgb:"

func appendStamp(b []byte, n int64, sent time.Time) []byte {
	b = append(b, stampMarker...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, ':')
	return strconv.AppendInt(b, sent.UnixNano(), 10)
}

// parseStamp finds the first stamp in line.
func parseStamp(line []byte) (n, sentNanos int64, ok bool) {
	i := bytes.Index(line, []byte(stampMarker))
	if i < 0 {
		return 0, 0, false
	}
	rest := line[i+len(stampMarker):]
	n, rest, ok = parseDigits(rest)
	if !ok || len(rest) == 0 || rest[0] != ':' {
		return 0, 0, false
	}
	sentNanos, _, ok = parseDigits(rest[1:])
	return n, sentNanos, ok
}

func parseDigits(b []byte) (int64, []byte, bool) {
	var v int64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	return v, b[i:], i > 0
}

// stream is one SSE connection of the load and what it received. Its reader
// (a goroutine of its own, or the epoll poller that owns it) alone writes the
// fields below the line; the run reads them after the reader has ended.
type stream struct {
	index int
	topic int // index into the run's topics
	conn  net.Conn
	// With --h2c, the stream's body and what ends its request instead of
	// conn; closing is set before the run closes it.
	body    io.ReadCloser
	cancel  context.CancelFunc
	closing atomic.Bool

	parse    sseParser
	seen     []uint64 // bit n: event n received
	distinct int64
	dups     int64
	outOfOrd int64
	resets   int64
	lastSeq  int64
	lastAt   int64 // unix nanoseconds of the last stamped event
	err      error
}

// closedEarly reports whether the stream ended before the run closed it.
func (s *stream) closedEarly() bool {
	return s.err != nil && !errors.Is(s.err, net.ErrClosed)
}

// dialStream connects and reads the response head. It returns the body
// bytes read along with the head, and whether the body is chunked; the rest
// of the body is read by readLoop or a poller.
func dialStream(ctx context.Context, d *net.Dialer, u *url.URL, query, lastEventID string) (conn net.Conn, body []byte, chunked bool, err error) {
	conn, err = d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, false, err
	}
	path := u.Path
	if path == "" || path == "/" {
		path = "/v1/events"
	}
	req := "GET " + path + "?" + query + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAccept: text/event-stream\r\nUser-Agent: livepg-bench\r\n"
	if lastEventID != "" { // set by the run from a node's own id: no CR or LF
		req += "Last-Event-ID: " + lastEventID + "\r\n"
	}
	req += "\r\n"
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, nil, false, err
	}
	br := bufio.NewReaderSize(conn, 4<<10)
	status, err := br.ReadSlice('\n')
	if err != nil {
		conn.Close()
		return nil, nil, false, fmt.Errorf("read status: %w", err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200")) {
		conn.Close()
		return nil, nil, false, fmt.Errorf("status %q", bytes.TrimSpace(status))
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			conn.Close()
			return nil, nil, false, fmt.Errorf("read headers: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Transfer-Encoding")) &&
			bytes.Contains(bytes.ToLower(v), []byte("chunked")) {
			chunked = true
		}
	}
	_ = conn.SetDeadline(time.Time{})
	body, _ = br.Peek(br.Buffered())
	return conn, bytes.Clone(body), chunked, nil
}

// readLoop reads the stream's body on its own goroutine until it ends or
// the connection is closed (the --reader goroutine way).
func (s *stream) readLoop(body []byte, r *load) {
	buf := make([]byte, 16<<10)
	if !s.feed(body, time.Now(), r) {
		return
	}
	for {
		n, err := s.conn.Read(buf)
		if n > 0 && !s.feed(buf[:n], time.Now(), r) {
			return
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

// sseParser is the state of one stream's parse between reads: where it is
// in the chunked encoding (when the server uses it), the unfinished line and
// the event being read.
type sseParser struct {
	chunked    bool
	chunkState int   // chunkSize, chunkData or chunkEnd
	chunkLeft  int64 // bytes of chunk data left, or of the CRLF after it
	sizeLine   []byte
	line       []byte // the start of a line the last read cut off

	id, n, sent    int64
	stamped, reset bool
}

const (
	chunkSize = iota // reading a chunk-size line
	chunkData        // chunkLeft bytes of data to go
	chunkEnd         // the CRLF after a chunk's data
)

// feed parses the next bytes of the body, received at now, and records
// every stamped event they complete. It allocates nothing per event. It
// returns false when the body has ended (the last chunk of a chunked body),
// having set s.err.
func (s *stream) feed(p []byte, now time.Time, r *load) bool {
	ps := &s.parse
	if !ps.chunked {
		s.lines(p, now, r)
		return true
	}
	for len(p) > 0 {
		switch ps.chunkState {
		case chunkSize:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				ps.sizeLine = append(ps.sizeLine, p...)
				return true
			}
			line := append(ps.sizeLine, p[:i]...)
			p = p[i+1:]
			ps.sizeLine = line[:0]
			size, err := parseChunkSize(line)
			if err != nil {
				s.err = err
				return false
			}
			if size == 0 {
				s.err = io.EOF
				return false
			}
			ps.chunkState, ps.chunkLeft = chunkData, size
		case chunkData:
			k := min(ps.chunkLeft, int64(len(p)))
			s.lines(p[:k], now, r)
			p = p[k:]
			ps.chunkLeft -= k
			if ps.chunkLeft == 0 {
				ps.chunkState, ps.chunkLeft = chunkEnd, 2
			}
		case chunkEnd:
			k := min(ps.chunkLeft, int64(len(p)))
			p = p[k:]
			ps.chunkLeft -= k
			if ps.chunkLeft == 0 {
				ps.chunkState = chunkSize
			}
		}
	}
	return true
}

// parseChunkSize reads a chunk-size line ("1a2f" or "1a2f;ext", CRLF cut).
func parseChunkSize(line []byte) (int64, error) {
	line = bytes.TrimRight(line, "\r")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
	if err != nil || size < 0 {
		return 0, fmt.Errorf("bad chunk size %q", line)
	}
	return size, nil
}

// lines splits body bytes into lines and handles each complete one.
func (s *stream) lines(p []byte, now time.Time, r *load) {
	ps := &s.parse
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			ps.line = append(ps.line, p...)
			return
		}
		line := p[:i]
		if len(ps.line) > 0 {
			ps.line = append(ps.line, line...)
			line = ps.line
		}
		s.line(bytes.TrimRight(line, "\r"), now, r)
		ps.line = ps.line[:0]
		p = p[i+1:]
	}
}

// line handles one line of the event stream.
func (s *stream) line(line []byte, now time.Time, r *load) {
	ps := &s.parse
	switch {
	case len(line) == 0: // end of an event
		if ps.reset {
			s.resets++
		}
		if ps.stamped {
			s.lastAt = now.UnixNano()
			if ps.id <= s.lastSeq {
				s.outOfOrd++
			}
			s.lastSeq = ps.id
			s.record(r, ps.n, now, now.Sub(time.Unix(0, ps.sent)))
		}
		ps.stamped, ps.reset = false, false
	case line[0] == ':':
	case bytes.HasPrefix(line, []byte("data:")):
		if !ps.stamped {
			ps.n, ps.sent, ps.stamped = parseStamp(line)
		}
	case bytes.HasPrefix(line, []byte("id:")):
		ps.id, _, _ = parseDigits(bytes.TrimLeft(line[3:], " "))
	case bytes.HasPrefix(line, []byte("event: reset")):
		ps.reset = true
	}
}

func (s *stream) record(r *load, n int64, now time.Time, latency time.Duration) {
	if n < 0 || n >= int64(len(s.seen))*64 {
		return // not one of this run's events
	}
	w, bit := n/64, uint64(1)<<(n%64)
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	s.distinct++
	r.deliveries.Add(1)
	if n >= int64(r.cfg.Backlog) { // a backlog event's latency is its age
		r.latency.record(s.index, latency)
		if n < int64(len(r.committed)) {
			var after time.Duration
			if c := r.committed[n].Load(); c > 0 {
				after = max(time.Duration(now.UnixNano()-c), 0)
			}
			r.afterCommit.record(s.index, after)
		}
	}
}
