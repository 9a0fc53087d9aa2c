package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"strconv"
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
// goroutine alone writes the fields below the line; the run reads them after
// the reader has ended.
type stream struct {
	index int
	topic int // index into the run's topics
	conn  net.Conn

	seen     []uint64 // bit n: event n received
	distinct int64
	dups     int64
	outOfOrd int64
	resets   int64
	lastSeq  int64
	lastAt   int64 // unix nanoseconds of the last stamped event
	err      error
}

// dialStream connects and reads the response head; the body is read by
// readLoop.
func dialStream(ctx context.Context, d *net.Dialer, u *url.URL, query string) (net.Conn, *bufio.Reader, bool, error) {
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, false, err
	}
	path := u.Path
	if path == "" || path == "/" {
		path = "/v1/events"
	}
	req := "GET " + path + "?" + query + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAccept: text/event-stream\r\nUser-Agent: livepg-bench\r\n\r\n"
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, nil, false, err
	}
	br := bufio.NewReaderSize(conn, 32<<10) // large: one system call takes in a whole backlog
	status, err := br.ReadSlice('\n')
	if err != nil {
		conn.Close()
		return nil, nil, false, fmt.Errorf("read status: %w", err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200")) {
		conn.Close()
		return nil, nil, false, fmt.Errorf("status %q", bytes.TrimSpace(status))
	}
	chunked := false
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
	return conn, br, chunked, nil
}

// readLoop parses the stream until it ends or the connection is closed,
// recording every stamped event. It allocates nothing per event.
func (s *stream) readLoop(br *bufio.Reader, chunked bool, r *load) {
	var body io.Reader = br
	if chunked {
		body = httputil.NewChunkedReader(br)
	}
	lr := bufio.NewReaderSize(body, 16<<10)
	var long []byte // a line longer than lr's buffer
	var id int64
	var n, sent int64
	stamped, reset := false, false
	for {
		line, err := lr.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = lr.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			s.err = err
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0: // end of an event
			now := time.Now()
			if reset {
				s.resets++
			}
			if stamped {
				s.lastAt = now.UnixNano()
				if id <= s.lastSeq {
					s.outOfOrd++
				}
				s.lastSeq = id
				s.record(r, n, now.Sub(time.Unix(0, sent)))
			}
			stamped, reset = false, false
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("data:")):
			if !stamped {
				n, sent, stamped = parseStamp(line)
			}
		case bytes.HasPrefix(line, []byte("id:")):
			id, _, _ = parseDigits(bytes.TrimLeft(line[3:], " "))
		case bytes.HasPrefix(line, []byte("event: reset")):
			reset = true
		}
	}
}

func (s *stream) record(r *load, n int64, latency time.Duration) {
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
	r.latency.record(s.index, latency)
}
