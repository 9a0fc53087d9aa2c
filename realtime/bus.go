package realtime

import (
	"context"
	"fmt"

	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
)

// The bus: how events get their seq (migrations/00008_bus.sql).
//
// In commit_timestamp mode (track_commit_timestamp = on) writers only insert
// and NOTIFY; every node, on each wake-up, numbers the committed events
// that have none, in commit order, and reads them in the same round trip
// (store.ReadNext).
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
//
// The logical mode (migrations/00009_logical.sql): at start, a node whose
// Config.Bus (LIVEPG_BUS) says logical while the database is not in the
// logical mode, or the other way round, refuses to start; in the logical
// mode it becomes a candidate for the decoding leadership (package walbus,
// started by Start). A switch into or out of the logical mode under a
// running node is logged: the node numbers (or stops numbering) as the new
// mode says, but decodes only if it started in the logical mode: restart
// it.
func (n *Node) checkBus(ctx context.Context) error {
	mode, err := n.store.BusMode(ctx)
	if err != nil {
		return err
	}
	old, _ := n.bus.Load().(string)
	logical := mode == store.BusLogical
	if want := n.cfg.Bus; old == "" && want != "" && (want == store.BusLogical) != logical {
		dbMode := store.BusDefault
		if logical {
			dbMode = store.BusLogical
		}
		return fmt.Errorf("LIVEPG_BUS=%s, but the database's bus is in the %s mode (livepg.bus): switch it as livepg's owner with `livepg bus %s`, or set LIVEPG_BUS=%s", want, dbMode, want, dbMode)
	}
	n.bus.Store(mode)
	if old == mode {
		return nil
	}
	if old != "" {
		n.metrics.busMode.WithLabelValues(old).Set(0)
	}
	n.metrics.busMode.WithLabelValues(mode).Set(1)
	n.store.UseLogicalBus(logical)
	switch {
	case old == "" && logical:
		d, err := walbus.New(walbus.Config{URL: n.cfg.ListenURL, Handler: DecodeHandler(n.store, n.log), Logger: n.log})
		if err != nil {
			return err
		}
		n.decoder = d
		n.log.Info("bus mode logical: writers do not NOTIFY; one node decodes the WAL and numbers events (see migrations/00009_logical.sql)", "bus", mode)
	case old != "" && (old == store.BusLogical) != logical:
		n.log.Warn("the bus mode changed into or out of the logical mode under this node: restart it (and every node) so that the right ones decode", "from", old, "to", mode)
	case mode == store.BusCommitLock:
		n.log.Warn(busAdvice, "bus", mode)
	case !logical:
		n.log.Info("bus mode: writers commit at NOTIFY's cost; nodes number events after their commit", "bus", mode)
	}
	return nil
}

// Bus is the bus mode last found (at Start, then by the stats poll):
// store.BusCommitTimestamp, store.BusCommitLock or store.BusLogical; ""
// before Start.
func (n *Node) Bus() string {
	mode, _ := n.bus.Load().(string)
	return mode
}

// numbers reports whether this node numbers pending events before it
// reads the log (store.ReadNext): in every mode but the logical one, where
// only the decoding leader numbers (and number_pending would not).
func (n *Node) numbers() bool {
	return n.Bus() != store.BusLogical
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
