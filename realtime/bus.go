package realtime

import (
	"context"
	"fmt"

	"github.com/livepg/livepg/store"
)

// The bus: how events get their seq (migrations/00008_bus.sql).
//
// In commit_timestamp mode (track_commit_timestamp = on) writers only insert
// and NOTIFY; every node, on each wake-up and before it reads, numbers the
// committed events that have none, in commit order (store.NumberPending).
// In commit_lock mode (the setting off) writers number their events at
// commit under a cluster-wide lock, at about half the throughput; the node
// says at start what to change. It runs the numbering step in both modes:
// with nothing pending it is one index probe, and the mode can change under
// a running node (a restart of PostgreSQL with the setting changed).

// busAdvice is what the node logs when it finds the bus in commit_lock mode.
const busAdvice = "track_commit_timestamp is off: every event transaction takes a cluster-wide lock at commit (bus mode commit_lock: correct, but about half the write throughput of commit_timestamp). " +
	"To let writers commit at NOTIFY's cost, run as a superuser: ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL " +
	"(Fly Postgres: `fly postgres connect -a <db-app>`, run the ALTER SYSTEM there, then `fly postgres restart -a <db-app>`; a managed service: its parameter settings)"

// checkBus reads the bus mode, records it, and logs what to change when it
// is commit_lock. It is run at start and by the stats poll.
func (n *Node) checkBus(ctx context.Context) error {
	mode, err := n.store.BusMode(ctx)
	if err != nil {
		return err
	}
	old, _ := n.bus.Swap(mode).(string)
	if old == mode {
		return nil
	}
	if old != "" {
		n.metrics.busMode.WithLabelValues(old).Set(0)
	}
	n.metrics.busMode.WithLabelValues(mode).Set(1)
	if mode == store.BusCommitLock {
		n.log.Warn(busAdvice, "bus", mode)
	} else {
		n.log.Info("bus mode: writers commit at NOTIFY's cost; nodes number events after their commit", "bus", mode)
	}
	return nil
}

// Bus is the bus mode last found (at Start, then by the stats poll):
// store.BusCommitTimestamp or store.BusCommitLock; "" before Start.
func (n *Node) Bus() string {
	mode, _ := n.bus.Load().(string)
	return mode
}

// numberPending is the node's numbering step, run before each read of the
// log.
func (n *Node) numberPending(ctx context.Context) error {
	numbered, err := n.store.NumberPending(ctx)
	if err != nil {
		return fmt.Errorf("number pending events: %w", err)
	}
	n.metrics.numbered.Add(float64(numbered))
	return nil
}

// resolvePosition turns a head position ('<after>.<skip>-<epoch>', see
// livepg.head()) into the seq of the skip-th event after `after`, once the
// events committed before it are numbered.
func (n *Node) resolvePosition(ctx context.Context, epoch string, after, skip int64) (int64, bool, error) {
	return retryStale3(func() (int64, bool, error) { return n.store.ResolvePosition(ctx, epoch, after, skip) })
}

func retryStale3(f func() (int64, bool, error)) (int64, bool, error) {
	type r struct {
		seq int64
		ok  bool
	}
	v, err := retryStale(func() (r, error) {
		seq, ok, err := f()
		return r{seq, ok}, err
	})
	return v.seq, v.ok, err
}
