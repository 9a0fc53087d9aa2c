package stream

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepg/livepg/store"
)

// TestSharedBoundsAreReadAfterEachCaller: streams opening together share
// reads of the log's bounds, and every stream gets bounds from a read that
// began after it asked (so its start covers everything committed before).
func TestSharedBoundsAreReadAfterEachCaller(t *testing.T) {
	t.Parallel()
	var s sharedBounds
	var begun atomic.Int64
	read := func(ctx context.Context) (store.LogBounds, error) {
		n := begun.Add(1)
		time.Sleep(time.Millisecond) // let callers pile up behind the read
		return store.LogBounds{Head: n}, nil
	}
	const callers = 500
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := begun.Load()
			b, err := s.get(context.Background(), read)
			if err != nil {
				t.Error(err)
				return
			}
			if b.Head <= before {
				t.Errorf("got bounds from read %d, which began before the call (after read %d)", b.Head, before)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d callers shared %d reads", callers, begun.Load())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	block := func(ctx context.Context) (store.LogBounds, error) {
		time.Sleep(10 * time.Millisecond)
		return store.LogBounds{}, nil
	}
	if _, err := s.get(ctx, block); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err %v", err)
	}
}
