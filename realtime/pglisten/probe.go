package pglisten

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The wiring probe. A node's pool and its LISTEN connection must reach the
// same primary: a listener on a read replica cannot LISTEN at all, and one
// behind a transaction-pooling PgBouncer, or on another database, LISTENs
// happily and hears nothing, so the node would serve streams that never
// receive a live event. Nothing else would tell: the slow timer would
// still deliver every event, late.
//
// So the listener proves its wiring itself. After every LISTEN is in place,
// and periodically after that, it sends a notification through the pool
// (Config.SendProbe) with a payload only it knows ("probe:<id>:<n>") and
// waits to hear it. Until one is heard on the current LISTEN session, or
// after one is not heard in time, the node is not ready (/readyz fails) and
// says why in the log.

const probePrefix = "probe:"

// errWiring is the cause and fix named when a probe is not heard.
var errWiring = errors.New("the LISTEN connection does not hear notifications sent through the pool: " +
	"LISTEN_DATABASE_URL does not reach the primary that DATABASE_URL writes to " +
	"(it reaches a read replica, a transaction-pooling PgBouncer or another database); " +
	"set LISTEN_DATABASE_URL to a direct session on the primary")

// prober keeps the wiring state. Its notified and listened methods run on
// the listener's goroutine; run runs on a goroutine of its own (Run's).
type prober struct {
	id       string
	interval time.Duration
	timeout  time.Duration
	send     func(ctx context.Context, payload string) error
	onChange func(err error) // called when the state changes, for the log

	kick  chan struct{} // cap 1: a new LISTEN session needs proof now
	heard chan struct{} // cap 1: a probe of ours was heard

	mu sync.Mutex
	// session counts LISTEN sessions; proven is the session in which a
	// probe of ours was last heard. The wiring holds while they are equal
	// and no later probe has failed.
	session, proven int64
	sent, got       int64 // numbers of the last probe sent and heard
	failure         error // why the last probe failed; nil once one is heard
}

func newProber(interval, timeout time.Duration, send func(context.Context, string) error, onChange func(error)) *prober {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &prober{
		id:       hex.EncodeToString(b[:]),
		interval: interval,
		timeout:  timeout,
		send:     send,
		onChange: onChange,
		kick:     make(chan struct{}, 1),
		heard:    make(chan struct{}, 1),
	}
}

// err is why the wiring is not proven, or nil.
func (p *prober) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.failure != nil:
		return p.failure
	case p.session == 0 || p.proven != p.session:
		return errors.New("waiting for the listener to hear this node's wiring probe")
	}
	return nil
}

// listened says a new LISTEN session is in place: it must be proven.
func (p *prober) listened() {
	p.mu.Lock()
	p.session++
	p.mu.Unlock()
	signal(p.kick)
}

// notified handles a notification's payload and reports whether it was a
// probe (of this node or another). A probe of ours heard on the current
// session proves the session: it was sent through the pool after this
// session's LISTEN was in place.
func (p *prober) notified(payload string) bool {
	rest, ok := strings.CutPrefix(payload, probePrefix)
	if !ok {
		return false
	}
	id, num, _ := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(num, 10, 64)
	if id != p.id || err != nil {
		return true // another node's probe
	}
	p.mu.Lock()
	p.got = max(p.got, n)
	p.proven = p.session
	recovered := p.failure != nil
	p.failure = nil
	p.mu.Unlock()
	signal(p.heard)
	if recovered {
		p.onChange(nil)
	}
	return true
}

// run probes at once, after every new LISTEN session, and every interval;
// while the wiring is not proven it probes every timeout instead.
func (p *prober) run(ctx context.Context) {
	next := time.NewTimer(p.interval)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-next.C:
		}
		again, sendFailed := p.probe(ctx)
		for again {
			// A new session began while waiting: prove it at once.
			again, sendFailed = p.probe(ctx)
		}
		wait := p.interval
		if p.err() != nil {
			wait = p.timeout
		}
		if sendFailed {
			// The pool could not send it (the database restarting, a
			// failover under way): try again soon, not a whole timeout
			// later, so that readiness follows the database back.
			wait = min(wait, sendRetry)
		}
		next.Reset(wait)
	}
}

// sendRetry is how soon a probe the pool could not send is tried again.
const sendRetry = time.Second

// probe sends one probe and waits for it. It returns again if a new LISTEN
// session began meanwhile, which needs a probe of its own, and sendFailed
// if the pool refused to send it before the timeout.
func (p *prober) probe(ctx context.Context) (again, sendFailed bool) {
	// Drop earlier signals first: this probe covers the session read below,
	// and a session that begins after it kicks again.
	drain(p.kick)
	drain(p.heard)
	p.mu.Lock()
	if p.session == 0 {
		p.mu.Unlock()
		return false, false // no LISTEN yet: its listened kicks
	}
	p.sent++
	n, session := p.sent, p.session
	p.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.send(sctx, probePrefix+p.id+":"+strconv.FormatInt(n, 10))
	timedOut := sctx.Err() != nil
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.fail(session, n, fmt.Errorf("send wiring probe through the pool (DATABASE_URL must reach the primary, not a read replica): %w", err))
		}
		// Refused at once (a database restarting, a standby not yet
		// promoted) is worth retrying soon; a pool that gave no connection
		// for the whole timeout is not.
		return false, !timedOut
	}
	timeout := time.NewTimer(p.timeout)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, false
		case <-p.kick:
			return true, false
		case <-p.heard:
			p.mu.Lock()
			got := p.got
			p.mu.Unlock()
			if got >= n {
				return false, false
			}
		case <-timeout.C:
			p.fail(session, n, fmt.Errorf("wiring probe %d not heard within %s: %w", n, p.timeout, errWiring))
			return false, false
		}
	}
}

// fail records a failed probe unless a later one was heard or a new
// session began (which is probed again).
func (p *prober) fail(session, n int64, err error) {
	p.mu.Lock()
	stale := p.session != session || p.got >= n
	if !stale {
		p.failure = err
	}
	p.mu.Unlock()
	if !stale {
		p.onChange(err)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}
