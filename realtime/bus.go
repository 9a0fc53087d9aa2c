package realtime

import (
	"context"
	"fmt"
	"time"

	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
)

// The bus: how events get their seq (migrations/00008_bus.sql).
//
// In commit_timestamp mode (track_commit_timestamp = on) writers only insert
// and NOTIFY; every node, on each wake-up and before it reads, numbers the
// committed events that have none, in commit order (store.NumberPending).
// In commit_lock mode (the setting off) writers number their events at
// commit under a cluster-wide lock, at about half the throughput; the node
// says at start what to change, and numbers only on its slow poll (rows
// left pending from before a restart).

// checkBus reads the bus mode and, in commit_lock mode, logs what to change.
// A node whose Config.Bus (LIVEPG_BUS) says logical while the database is
// not in the logical mode, or the other way round, refuses to start. In the
// logical mode the node becomes a candidate for the decoding leadership
// (package walbus; migrations/00009_logical.sql).
func (n *Node) checkBus(ctx context.Context) error {
	mode, err := n.store.BusMode(ctx)
	if err != nil {
		return err
	}
	if want := n.cfg.Bus; want != "" && (want == store.BusLogical) != (mode == store.BusLogical) {
		dbMode := store.BusDefault
		if mode == store.BusLogical {
			dbMode = store.BusLogical
		}
		return fmt.Errorf("LIVEPG_BUS=%s, but the database's bus is in the %s mode (livepg.bus): switch it as livepg's owner with `livepg bus %s`, or set LIVEPG_BUS=%s", want, dbMode, want, dbMode)
	}
	n.bus.Store(mode)
	n.metrics.busMode.WithLabelValues(mode).Set(1)
	n.store.UseLogicalBus(mode == store.BusLogical)
	if mode == store.BusLogical {
		d, err := walbus.New(walbus.Config{URL: n.cfg.ListenURL, Handler: DecodeHandler(n.store, n.log), Logger: n.log})
		if err != nil {
			return err
		}
		n.decoder = d
		n.log.Info("bus mode logical: writers do not NOTIFY; one node decodes the WAL and numbers events (see migrations/00009_logical.sql)", "bus", mode)
		return nil
	}
	if mode == store.BusCommitLock {
		n.log.Warn("track_commit_timestamp is off: every event transaction takes a cluster-wide lock at commit (bus mode commit_lock, correct but about half the write throughput). "+
			"To let writers commit at NOTIFY's cost, run as a superuser: ALTER SYSTEM SET track_commit_timestamp = on; and restart PostgreSQL "+
			"(on Fly Postgres: `fly postgres connect -a <db-app>`, run the ALTER SYSTEM, then `fly postgres restart -a <db-app>`).",
			"bus", mode)
	} else {
		n.log.Info("bus mode", "bus", mode)
	}
	return nil
}

// Bus is the bus mode found at Start: store.BusCommitTimestamp or
// store.BusCommitLock ("" before Start).
func (n *Node) Bus() string {
	mode, _ := n.bus.Load().(string)
	return mode
}

// numberPending is the node's numbering step, run before each read of the
// log: in commit_timestamp mode on every wake-up; in commit_lock mode, where
// writers number at commit, at most once per poll interval (rows left
// pending from a commit_timestamp period before a restart).
func (n *Node) numberPending(ctx context.Context) error {
	switch n.Bus() {
	case store.BusLogical:
		return nil // only the decoding leader numbers
	case store.BusCommitLock:
		now := time.Now()
		if last := n.lastNumbering.Load(); last != 0 && now.Sub(time.Unix(0, last)) < n.cfg.PollInterval {
			return nil
		}
		n.lastNumbering.Store(now.UnixNano())
	}
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
