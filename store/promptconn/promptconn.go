// Package promptconn wraps network connections so that a goroutine waiting
// to read from one wakes as soon as the bytes arrive, even when its
// process is busy.
//
// Why: Go parks a goroutine that reads from a socket on the runtime's
// network poller, and a process whose threads are all busy — a node
// writing one event to ten thousand streams — checks the poller only when
// a thread runs out of work or every 10 ms from the runtime's monitor. Each
// round trip to the database then waits up to 10 ms for the reply to be
// noticed, however fast the database answered (measured in BENCHMARKS.md,
// "The reader's round trips under fan-out"). A connection from this
// package reads in a blocking poll(2) on a thread of its own instead: the
// kernel wakes that thread when the bytes arrive, and the goroutine queues
// for the next free processor at once.
//
// The price is one thread blocked per waiting read, and a wake-up every
// Slice while nothing arrives (to notice deadlines and Close). livepg uses
// it for the two connections on the path of every event: the node's
// LISTEN connection and its reader's (store.ReadNext), not for its pool.
//
// No library does this (pgx reads through net.Conn, and Go's net package
// offers no other way to wait); the code is small: see Conn.Read.
package promptconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Slice bounds one blocking wait: a deadline set or a Close made while a
// Read waits takes effect within it.
const Slice = 20 * time.Millisecond

// DialFunc dials as pgconn.DialFunc does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer wraps dial so that the connections it makes read promptly (see
// Wrap). Use it as a pgx config's DialFunc:
//
//	cfg.DialFunc = promptconn.Dialer(cfg.DialFunc)
func Dialer(dial DialFunc) DialFunc {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}

// Wrap returns c reading promptly when the platform allows it (see the
// package comment), and c itself otherwise (a connection that is not a
// socket, or a platform without poll(2)).
func Wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok || !supported {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{Conn: c, raw: raw}
}

// Conn is a net.Conn whose Read waits in a blocking poll(2). Writes and
// everything else are the wrapped connection's.
type Conn struct {
	net.Conn
	raw syscall.RawConn
	// readDeadline is the read deadline in Unix nanoseconds, 0 for none.
	readDeadline atomic.Int64
}

// Read reads into b, waiting for bytes in poll(2) in slices of at most
// Slice, until they come, the read deadline passes or the connection is
// closed.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		wait := Slice
		if d := c.readDeadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			wait = min(wait, left)
		}
		var n int
		var rerr error
		var again bool
		// The callback runs with the descriptor held open: a Close waits
		// for it, and the next call reports the connection closed.
		err := c.raw.Read(func(fd uintptr) bool {
			n, again, rerr = readOrWait(fd, b, wait)
			return true
		})
		switch {
		case err != nil:
			return 0, err // closed, or the deadline passed
		case again:
			continue
		case rerr != nil:
			return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// SetDeadline sets the read and write deadlines (see net.Conn).
func (c *Conn) SetDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline (see net.Conn): a Read waiting
// returns os.ErrDeadlineExceeded within Slice of it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *Conn) setReadDeadline(t time.Time) {
	if t.IsZero() {
		c.readDeadline.Store(0)
		return
	}
	c.readDeadline.Store(max(t.UnixNano(), 1))
}

var errUnsupported = errors.New("promptconn: poll(2) is not available on this platform")
