// Package pglisten holds one dedicated PostgreSQL LISTEN connection open and
// proves that it hears what the rest of the program sends.
//
// A notification is only ever a wake-up here: the caller keeps the truth
// elsewhere (livepg's event log) and reads it when woken. So the listener
// calls one handler, Config.Handle, for every notification on its channel,
// and once more after every LISTEN is in place — LISTEN first, then read
// the backlog, so that nothing sent while no connection listened falls in
// between. It keeps reading notifications whatever the handler's owner is
// doing: an unread notification queue fills up and then fails every
// notifying commit in the cluster.
//
// The wiring probe (probe.go) answers the question a connected listener
// cannot: does it hear what the pool sends? Ready reports both.
//
// Written by hand rather than with pgxlisten because a node must know when
// its listener is down (readiness), must notice a dead TCP connection (a
// ping after quiet periods), must back off exponentially, and must
// reconnect on a maximum lifetime of its own. It depends on pgx only.
package pglisten

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Config configures a Listener. Connect, Channel and Handle are required;
// zero durations take the Default... values below.
type Config struct {
	// Connect opens a new dedicated connection (not one from a pool): a
	// session on the primary.
	Connect func(context.Context) (*pgx.Conn, error)
	// Channel is the channel to LISTEN on.
	Channel string
	// Handle is called on the listener's goroutine with the payload of
	// every notification on Channel (the wiring probes excepted), and with
	// an empty payload after every LISTEN is in place: whatever was sent
	// while no connection listened went unheard, so treat it as a wake-up.
	// It must not block.
	Handle func(payload string)
	// SendProbe sends a notification on Channel the way the program's
	// writers do (through its pool), for the wiring probe. Nil: no probe,
	// and Ready answers for the connection only.
	SendProbe func(ctx context.Context, payload string) error
	// ProbeInterval is how often the wiring is proven again;
	// ProbeTimeout how long a probe may take to be heard before the
	// listener reports itself not ready.
	ProbeInterval, ProbeTimeout time.Duration
	// PingAfter is how long the connection may stay quiet before a ping
	// checks that it is still alive (between once and twice this long: it
	// is pinged after a period of PingAfter in which nothing arrived).
	PingAfter time.Duration
	// MaxLifetime ends a connection after this long and opens a new one
	// managed Postgres proxies cut long-lived connections
	// anyway.
	MaxLifetime time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed connects
	//.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives disconnections and wiring changes (default
	// slog.Default()).
	Logger *slog.Logger
}

// The defaults of Config's durations.
const (
	DefaultProbeInterval = 30 * time.Second
	DefaultProbeTimeout  = 10 * time.Second
	DefaultPingAfter     = 10 * time.Second
	DefaultMaxLifetime   = 10 * time.Minute
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 5 * time.Second
)

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.ProbeInterval, DefaultProbeInterval)
	def(&c.ProbeTimeout, DefaultProbeTimeout)
	def(&c.PingAfter, DefaultPingAfter)
	def(&c.MaxLifetime, DefaultMaxLifetime)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Listener keeps one LISTEN connection open (Run) and answers whether it is
// ready (Ready).
type Listener struct {
	cfg   Config
	probe *prober // nil without Config.SendProbe

	connected     atomic.Bool
	reconnects    atomic.Int64
	notifications atomic.Int64
}

// New returns a listener; Run runs it.
func New(cfg Config) *Listener {
	cfg = cfg.withDefaults()
	l := &Listener{cfg: cfg}
	if cfg.SendProbe != nil {
		l.probe = newProber(cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SendProbe, l.wiringChanged)
	}
	return l
}

// Connected reports whether a LISTEN connection is in place now.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Reconnects counts the connections opened after the first.
func (l *Listener) Reconnects() int64 { return l.reconnects.Load() }

// Notifications counts the notifications the listener has received on its
// channel, its own and other nodes' wiring probes included. Its rate is the
// cluster's rate of notifying commits on the channel, as this node drains it.
func (l *Listener) Notifications() int64 { return l.notifications.Load() }

// WiringProven reports whether the listener heard the latest wiring probe
// (always true without a probe).
func (l *Listener) WiringProven() bool { return l.probe == nil || l.probe.err() == nil }

// Ready reports why the listener cannot be relied on to wake its handler,
// or nil: no LISTEN connection is in place, or the current one has not
// (yet) heard a wiring probe sent through the pool (see probe.go).
func (l *Listener) Ready() error {
	if !l.Connected() {
		return errors.New("listener not connected")
	}
	if l.probe != nil {
		return l.probe.err()
	}
	return nil
}

// Run keeps a LISTEN connection open, and proves its wiring, until ctx
// ends; then it returns, its work stopped.
func (l *Listener) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if l.probe != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.probe.run(ctx)
		}()
	}
	backoff := l.cfg.MinBackoff
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
			backoff = l.cfg.MinBackoff
		}
		if err == nil {
			continue // lifetime reached: reconnect at once
		}
		l.cfg.Logger.Warn("listener disconnected", "err", err, "retry_in", backoff)
		// Jitter spreads the nodes' reconnects after a database restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

// session opens one connection, LISTENs and waits for notifications until
// the connection fails (an error) or reaches its lifetime (nil). listened
// reports whether LISTEN succeeded.
func (l *Listener) session(ctx context.Context) (listened bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := l.cfg.Connect(cctx)
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
	_, err = conn.Exec(cctx, "LISTEN "+pgx.Identifier{l.cfg.Channel}.Sanitize())
	cancel()
	if err != nil {
		// A read replica refuses LISTEN ("cannot execute LISTEN during
		// recovery"): say where the listener must point.
		return false, fmt.Errorf("listen (LISTEN_DATABASE_URL must be a session on the primary, not a read replica): %w", err)
	}
	l.connected.Store(true)
	l.cfg.Handle("") // LISTEN first, then read the backlog: nothing falls between
	if l.probe != nil {
		l.probe.listened() // a new session, whose wiring must be proven again
	}
	expires := time.Now().Add(l.cfg.MaxLifetime)
	for {
		wait := min(l.cfg.PingAfter, time.Until(expires))
		if wait <= 0 {
			return true, nil
		}
		// One wait serves every notification until it ends: a context per
		// notification was most of the cost of draining a busy queue.
		wctx, cancel := context.WithTimeout(ctx, wait)
		received, err := l.receive(wctx, conn)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case received > 0 && (errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)):
			// Busy: the connection is alive. (A ping now would wait behind
			// whatever backlog the server is still sending.)
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

// receive hands every notification to the handler until ctx ends or the
// connection fails, and returns how many it received.
func (l *Listener) receive(ctx context.Context, conn *pgx.Conn) (received int, err error) {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return received, err
		}
		received++
		l.notifications.Add(1)
		if l.probe == nil || !l.probe.notified(n.Payload) {
			l.cfg.Handle(n.Payload)
		}
	}
}

// wiringChanged logs a failed wiring probe (with its cause and fix) or the
// recovery after one.
func (l *Listener) wiringChanged(err error) {
	if err != nil {
		l.cfg.Logger.Error("not ready: wiring probe failed", "err", err, "node_probe_id", l.probe.id)
		return
	}
	l.cfg.Logger.Info("ready again: the listener hears the pool's wiring probes", "node_probe_id", l.probe.id)
}
