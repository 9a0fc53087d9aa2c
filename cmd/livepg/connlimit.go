package main

import (
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// The connection bound. Every connection costs a file descriptor; at the
// process's file limit accept fails (accept4: too many open files), the
// server backs off and retries, and everything that needs a descriptor —
// /healthz's answer, a pool connection, a log file — fails with it. So the
// server holds at most MaxConnections (by default the file limit less
// fileReserve, kept for the pool, the LISTEN connection and files): a
// connection beyond it is answered 503 with Retry-After and closed at once,
// a clear refusal that Fly's proxy and browsers retry elsewhere or later.

// fileReserve is the descriptors kept for everything but HTTP connections.
const fileReserve = 128

// defaultMaxConnections is the file limit less fileReserve (Go raises the
// soft limit to the hard one at start-up), at least 64.
func defaultMaxConnections() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 16
	}
	return max(int(lim.Cur)-fileReserve, 64)
}

// connCounter counts the server's open connections through its ConnState
// hook; a connection taken over by a stream (hijacked) leaves net/http's
// count and is counted by the node instead (Node.StreamConnections). An
// HTTP/2 connection counts once however many streams it carries: the bound
// is on descriptors; streams have their own (LIVEPG_MAX_STREAMS).
type connCounter struct{ n atomic.Int64 }

func (c *connCounter) track(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		c.n.Add(1)
	case http.StateHijacked, http.StateClosed:
		c.n.Add(-1)
	}
}

// limitListener refuses connections beyond max: open counts those held.
type limitListener struct {
	net.Listener
	open    func() int64
	max     int64
	log     *slog.Logger
	refused atomic.Int64
}

// refusal is the whole answer to a connection over the bound.
var refusal = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 72\r\n\r\n" +
	`{"error":"this node holds its maximum of connections: retry in a while"}`)

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open() < l.max {
			return c, nil
		}
		// A fresh connection's send buffer is empty: this write does not
		// wait for the client; the deadline covers the unexpected.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(refusal)
		_ = c.Close()
		if n := l.refused.Add(1); n&(n-1) == 0 { // 1, 2, 4, 8...: a trace, not a flood
			l.log.Warn("connection refused: the node holds its maximum of connections (LIVEPG_MAX_CONNECTIONS)", "max", l.max, "refused", n)
		}
	}
}
