package store_test

import (
	"testing"
	"time"

	"github.com/livepg/livepg/store"
)

// TestNumberingPauseGrowsWithTheStepAndIsBounded: no pause after a step that
// numbered nothing, 1 ms after small steps (light and moderate writes keep
// their latency), longer as steps grow, never more than 10 ms.
func TestNumberingPauseGrowsWithTheStepAndIsBounded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		numbered int
		want     time.Duration
	}{
		{-1, 0}, {0, 0},
		{1, time.Millisecond}, {4, time.Millisecond}, {6, time.Millisecond},
		{7, 1500 * time.Microsecond}, {10, 3 * time.Millisecond}, {20, 8 * time.Millisecond},
		{24, 10 * time.Millisecond}, {25, 10 * time.Millisecond}, {10000, 10 * time.Millisecond},
		{1 << 40, 10 * time.Millisecond}, {1<<63 - 1, 10 * time.Millisecond},
	} {
		if got := store.NumberingPause(c.numbered); got != c.want {
			t.Errorf("NumberingPause(%d) = %v, want %v", c.numbered, got, c.want)
		}
	}
	prev := time.Duration(0)
	for n := 0; n <= 100; n++ {
		got := store.NumberingPause(n)
		if got < prev {
			t.Errorf("NumberingPause(%d) = %v, less than for %d (%v)", n, got, n-1, prev)
		}
		prev = got
	}
}
