package store

import (
	"context"
	"fmt"
	"time"
)

// The bus modes: how events get their seq (migrations/00008_bus.sql).
const (
	// BusCommitTimestamp: writers only insert and NOTIFY; nodes number
	// committed events in commit-timestamp order after the commit
	// (NumberPending). Needs track_commit_timestamp = on.
	BusCommitTimestamp = "commit_timestamp"
	// BusCommitLock: the fallback when track_commit_timestamp is off. Each
	// writer numbers its events at commit under a cluster-wide advisory
	// lock: correct, at about half of NOTIFY's throughput.
	BusCommitLock = "commit_lock"
)

// BusMode reads the bus mode in force on the server (livepg.bus_mode()). It
// changes only with track_commit_timestamp, which needs a restart.
func (s *Store) BusMode(ctx context.Context) (string, error) {
	var mode string
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.bus_mode()`).Scan(&mode); err != nil {
		return "", fmt.Errorf("read bus mode: %w", err)
	}
	return mode, nil
}

// NumberingPause is how long a node's reader waits, after a read step that
// numbered numbered events (writers are committing), before it reads
// again. Every numbering transaction slows the writers' commits while it
// runs (it writes their rows into the log, and flushes), whatever it
// numbers: a reader that numbers on every wake-up as fast as it can cost
// 16 writers a quarter of their throughput, and steps of about ten events 1 ms apart still more
// than half (BenchmarkBus, sync on: publish 0.40x INSERT + NOTIFY without a
// pause, 0.46x at 1 ms, 0.53x at 5 ms, 0.65x at 20 ms). So the pause is
// 1 ms while steps stay small, and grows by numberingPausePerEvent for
// each event a step numbered beyond numberingPauseFreeEvents, up to
// maxNumberingPause. A step numbers about (rate x (pause + its own
// duration)) events, so the pause stays at 1 ms until writes come at about
// 1,500-2,000 events/s here (at 1,000 events/s, steps number 3-6); beyond
// that the steps grow and the pause reaches its maximum, about 100
// numbering transactions a second however fast writers commit. It adds at
// most the pause to an event's delivery, and nothing when writes come
// further apart than a read step.
func NumberingPause(numbered int) time.Duration {
	if numbered <= 0 {
		return 0
	}
	if numbered >= numberingPauseFreeEvents+int(maxNumberingPause/numberingPausePerEvent) {
		return maxNumberingPause
	}
	grown := time.Duration(numbered-numberingPauseFreeEvents) * numberingPausePerEvent
	return min(max(grown, minNumberingPause), maxNumberingPause)
}

const (
	minNumberingPause        = time.Millisecond
	maxNumberingPause        = 10 * time.Millisecond
	numberingPauseFreeEvents = 4
	numberingPausePerEvent   = 500 * time.Microsecond
)

// numberBatch is how many events one numbering transaction numbers at most.
const numberBatch = 10000

// NumberPending numbers every committed event that has no seq yet, in
// commit order, in transactions of at most numberBatch events, each made
// durable before it returns (livepg.number_pending). It returns how many it
// numbered. Nodes number through ReadNext, which runs the same step in its
// read's round trip; this is for the paths that must number everything
// committed first (resolving a head position, a publish's seqs, ReadNext's
// fallback). With nothing pending it costs one index probe and no lock.
func (s *Store) NumberPending(ctx context.Context) (int, error) {
	total := 0
	for {
		var n int
		if err := s.Pool.QueryRow(ctx, `SELECT numbered FROM livepg.number_pending($1)`, numberBatch).Scan(&n); err != nil {
			return total, fmt.Errorf("number pending events: %w", err)
		}
		total += n
		if n < numberBatch {
			return total, nil
		}
	}
}

// ResolvePosition turns a head position — after seq `after` of epoch, skip
// events more (livepg.head()'s '<after>.<skip>-<epoch>') — into the seq of
// the skip-th event after `after`, numbering pending events first. ok is
// false when the position cannot be resolved (not in the log's history, or
// its events are gone): the stream resets.
func (s *Store) ResolvePosition(ctx context.Context, epoch string, after, skip int64) (seq int64, ok bool, err error) {
	if _, err := s.NumberPending(ctx); err != nil {
		return 0, false, err
	}
	var found *int64
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.resolve_position($1, $2, $3)`,
		nullIfEmpty(epoch), after, skip).Scan(&found); err != nil {
		return 0, false, fmt.Errorf("resolve position %d.%d: %w", after, skip, err)
	}
	if found == nil {
		return 0, false, nil
	}
	return *found, true, nil
}
