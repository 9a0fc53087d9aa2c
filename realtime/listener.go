package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/store"
)

// Listener holds the node's one dedicated LISTEN connection. It does nothing
// with a notification but call Wake (or OnNotify): the log is the truth, so the connection
// only has to say "look now", and it keeps reading notifications whatever the
// rest of the node is doing (an unread notification queue fills up and then
// fails every notifying commit in the cluster).
//
// Written by hand rather than with pgxlisten because a node must know when
// its listener is down (readiness), must notice a dead TCP connection (a
// ping after quiet periods), must back off exponentially, and must
// reconnect on a maximum lifetime of its own.
type Listener struct {
	// Connect opens a new dedicated connection (not one from the pool).
	Connect func(context.Context) (*pgx.Conn, error)
	// Wake is called after every LISTEN is in place, so that events
	// committed while no connection listened are read, and on every
	// notification unless OnNotify is set. It must not block.
	Wake func()
	// OnNotify, if set, receives each notification's payload instead of
	// Wake being called, so that the node can tell its wiring probes
	// (payload "probe:...") from event wake-ups (empty payload). It must
	// not block.
	OnNotify func(payload string)
	// OnListen, if set, is called after every LISTEN is in place (after
	// Wake): a new session whose wiring the node has to prove again. It
	// must not block.
	OnListen func()
	// PingAfter is how long the connection may stay quiet before a ping
	// checks that it is still alive.
	PingAfter time.Duration
	// MaxLifetime ends a connection after this long and opens a new one;
	// managed Postgres proxies cut long-lived connections anyway.
	MaxLifetime time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed connects.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger

	connected  atomic.Bool
	reconnects atomic.Int64
}

// Connected reports whether a LISTEN connection is in place now.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Reconnects counts the connections opened after the first.
func (l *Listener) Reconnects() int64 { return l.reconnects.Load() }

// Run keeps a LISTEN connection open until ctx ends.
func (l *Listener) Run(ctx context.Context) {
	backoff := l.MinBackoff
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			l.reconnects.Add(1)
		}
		listened, err := l.session(ctx)
		l.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if listened {
			backoff = l.MinBackoff
		}
		if err == nil {
			continue // lifetime reached: reconnect at once
		}
		l.Logger.Warn("listener disconnected", "err", err, "retry_in", backoff)
		// Jitter spreads the nodes' reconnects after a database restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, l.MaxBackoff)
	}
}

// session opens one connection, LISTENs and waits for notifications until
// the connection fails (an error) or reaches its lifetime (nil). listened
// reports whether LISTEN succeeded.
func (l *Listener) session(ctx context.Context) (listened bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := l.Connect(cctx)
	cancel()
	if err != nil {
		return false, fmt.Errorf("listener connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
	}()
	cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	_, err = conn.Exec(cctx, "LISTEN "+pgx.Identifier{store.NotifyChannel}.Sanitize())
	cancel()
	if err != nil {
		// A read replica refuses LISTEN ("cannot execute LISTEN during
		// recovery"): say where the listener must point.
		return false, fmt.Errorf("listen (LISTEN_DATABASE_URL must be a session on the primary, not a read replica): %w", err)
	}
	l.connected.Store(true)
	l.Wake() // LISTEN first, then read the log: nothing falls between
	if l.OnListen != nil {
		l.OnListen()
	}
	expires := time.Now().Add(l.MaxLifetime)
	for {
		wait := min(l.PingAfter, time.Until(expires))
		if wait <= 0 {
			return true, nil
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil && l.OnNotify != nil:
			l.OnNotify(n.Payload)
		case err == nil:
			l.Wake()
		case ctx.Err() != nil:
			return true, nil
		case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
			// Quiet for a while: make sure the connection is still there.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, fmt.Errorf("listener ping: %w", err)
			}
		default:
			return true, fmt.Errorf("listener wait: %w", err)
		}
	}
}
