package realtime

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
)

// DecodeHandler numbers what the logical bus's decoding leader decodes, in
// the log of s (livepg.number_decoded and livepg.recover_decoded: see
// migrations/00009_logical.sql).
func DecodeHandler(s *store.Store, log *slog.Logger) walbus.Handler {
	if log == nil {
		log = slog.Default()
	}
	return decodeHandler{s, log}
}

type decodeHandler struct {
	s   *store.Store
	log *slog.Logger
}

func (h decodeHandler) Done(ctx context.Context) (walbus.LSN, error) {
	text, err := h.s.DecodedThrough(ctx)
	if err != nil {
		return 0, err
	}
	return walbus.ParseLSN(text)
}

func (h decodeHandler) Recover(ctx context.Context, snapshot string, point walbus.LSN) (int64, error) {
	return h.s.RecoverDecoded(ctx, snapshot, point.String())
}

func (h decodeHandler) Apply(ctx context.Context, b walbus.Batch) error {
	n := b.Events()
	ids := make([]int64, 0, n)
	times := make([]time.Time, 0, n)
	for _, t := range b.Txns {
		for _, id := range t.IDs {
			ids = append(ids, id)
			times = append(times, t.CommitTime)
		}
	}
	through := b.Txns[len(b.Txns)-1].CommitLSN.String()
	for tries := 1; ; tries++ {
		_, err := h.s.NumberDecoded(ctx, ids, times, through)
		if !errors.Is(err, store.ErrNotVisibleYet) {
			return err
		}
		// A writer's commit is flushed (the walsender sent it) but not
		// finished: a synchronous standby is slow to confirm. Nothing
		// after it can be numbered before it; wait.
		if tries%10 == 0 {
			h.log.Warn("walbus: decoded events are still not visible: is a synchronous standby slow or down?", "through", through, "waiting", time.Duration(tries)*time.Second)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
