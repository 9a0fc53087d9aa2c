package realtime_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// TestWriteCoalescingKeepsEveryEventInOrder: whether a stream writes each
// event at once or holds fast ones back to share a write, it receives every
// event once, in order.
func TestWriteCoalescingKeepsEveryEventInOrder(t *testing.T) {
	t.Parallel()
	for _, coalesce := range []time.Duration{-1, 100 * time.Millisecond} {
		t.Run(fmt.Sprint(coalesce), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := storetest.NewDatabase(t)
			n := startNode(t, db, realtime.Config{WriteCoalesce: coalesce, Buffer: 64, PollInterval: time.Hour})
			s := ssetest.Open(t, n.URL+"/v1/events?topic=c/*", "")
			var last int64
			for i := range 300 {
				seq, err := n.Store.Publish(ctx, fmt.Sprintf("c/%d", i%3), "message", fmt.Appendf(nil, "%d", i))
				if err != nil {
					t.Fatal(err)
				}
				last = seq
			}
			got := collect(t, s, last)
			if len(got) != 300 {
				t.Fatalf("received %d events, want 300", len(got))
			}
			for i, ev := range got {
				if want := fmt.Sprint(i); string(decode(t, ev).Data) != want {
					t.Fatalf("event %d carries %s, want %s", i, decode(t, ev).Data, want)
				}
			}
			expectNothingMore(t, s)
		})
	}
}
