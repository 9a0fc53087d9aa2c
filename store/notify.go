package store

import (
	"context"
	"fmt"
)

// Notify sends payload on livepg's notification channel through the pool,
// in a transaction of its own. Nodes use it to prove that their LISTEN
// connection hears what the pool writes (a wiring probe); events never need
// it, since their trigger notifies.
func (s *Store) Notify(ctx context.Context, payload string) error {
	if _, err := s.Pool.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", NotifyChannel, err)
	}
	return nil
}

// NotificationQueueUsage is the fraction (0 to 1) of the cluster's
// notification queue in use. The queue is cleaned only as far as the slowest
// listener has read; when it is full, every notifying commit fails.
func (s *Store) NotificationQueueUsage(ctx context.Context) (float64, error) {
	var usage float64
	if err := s.Pool.QueryRow(ctx, `SELECT pg_notification_queue_usage()`).Scan(&usage); err != nil {
		return 0, fmt.Errorf("read notification queue usage: %w", err)
	}
	return usage, nil
}
