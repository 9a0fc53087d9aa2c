package realtime

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/livepg/livepg/store"
)

// Publish batching. Every transaction that NOTIFYs commits one at a time
// (Postgres holds a cluster-wide lock across the commit's flush), so one
// transaction per HTTP publish caps a node at the notifying-commit rate.
// The batcher gathers the publishes that arrive within a short window and
// commits them in one transaction — one flush, one NOTIFY — and answers
// each with its own seq. Requests are validated before they join a batch;
// one the database still refuses fails alone (see store.PublishBatch).

const (
	// maxBatch bounds one transaction's events.
	maxBatch = 512
	// maxFlushes bounds the batches committing at once: one in its commit,
	// one on its way to it.
	maxFlushes = 2
)

var errNodeStopped = errors.New("node stopped")

type pendingPublish struct {
	event store.NewEvent
	done  chan publishResult // cap 1: the flush never waits for the handler
}

type publishResult struct {
	seq int64
	err error
}

// batcher gathers publishes into batches; run is its one loop.
type batcher struct {
	window  time.Duration
	publish func(context.Context, []store.NewEvent) ([]int64, []error, error)
	log     *slog.Logger

	in      chan *pendingPublish // unbuffered: what run took, it answers
	stopped chan struct{}        // closed when run has returned
}

func newBatcher(window time.Duration, st *store.Store, log *slog.Logger) *batcher {
	return &batcher{
		window:  window,
		publish: st.PublishBatch,
		log:     log,
		in:      make(chan *pendingPublish),
		stopped: make(chan struct{}),
	}
}

// submit adds one event to the next batch and waits for its outcome. When
// ctx ends first the event may still be committed; its caller is gone.
func (b *batcher) submit(ctx context.Context, ev store.NewEvent) (int64, error) {
	p := &pendingPublish{event: ev, done: make(chan publishResult, 1)}
	select {
	case b.in <- p:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-b.stopped:
		return 0, errNodeStopped
	}
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run gathers batches until ctx ends: a batch opens with the first publish
// and stays open for the window, and after it for as long as the batches
// before it are still committing (up to maxFlushes at once) — commits run
// one at a time in Postgres anyway, so the publishes that arrive meanwhile
// are better off in the next batch than in a queue of small ones. A full
// batch waits for a free slot.
func (b *batcher) run(ctx context.Context) {
	defer close(b.stopped)
	var flushes sync.WaitGroup
	defer flushes.Wait()
	slots := make(chan struct{}, maxFlushes)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var batch []*pendingPublish
		select {
		case p := <-b.in:
			batch = append(make([]*pendingPublish, 0, 64), p)
		case <-ctx.Done():
			return
		}
		timer.Reset(b.window)
		var slot chan struct{} // nil, so not ready, until the window has passed
		slotTaken := false
	gather:
		for len(batch) < maxBatch {
			select {
			case p := <-b.in:
				batch = append(batch, p)
			case <-timer.C:
				slot = slots
			case slot <- struct{}{}:
				slotTaken = true
				break gather
			case <-ctx.Done():
				answerAll(batch, publishResult{err: errNodeStopped})
				return
			}
		}
		timer.Stop()
		if !slotTaken {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				answerAll(batch, publishResult{err: errNodeStopped})
				return
			}
		}
		flushes.Add(1)
		go func() {
			defer flushes.Done()
			defer func() { <-slots }()
			b.flush(ctx, batch)
		}()
	}
}

// flush commits one batch and answers its requests.
func (b *batcher) flush(ctx context.Context, batch []*pendingPublish) {
	events := make([]store.NewEvent, len(batch))
	for i, p := range batch {
		events[i] = p.event
	}
	seqs, errs, err := b.publish(ctx, events)
	if err != nil {
		b.log.Error("publish batch", "events", len(batch), "err", err)
		answerAll(batch, publishResult{err: err})
		return
	}
	for i, p := range batch {
		p.done <- publishResult{seq: seqs[i], err: errs[i]}
	}
}

func answerAll(batch []*pendingPublish, r publishResult) {
	for _, p := range batch {
		p.done <- r
	}
}

// publish records one event: through the batcher when batching is on,
// else in a transaction of its own.
func (n *Node) publish(ctx context.Context, ev store.NewEvent) (int64, error) {
	if n.batcher == nil {
		return n.store.Publish(ctx, ev.Topic, ev.Type, ev.Data)
	}
	return n.batcher.submit(ctx, ev)
}
