package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// TestReadNextGenericPlan: ReadNext's read is a prepared statement, which
// PostgreSQL may run with a generic plan (planned without its arguments)
// after a few executions. That plan must still walk the seq index from the
// node's place, never scan or join the whole log: a read costs the events
// it returns, whatever the log holds.
func TestReadNextGenericPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.NewStore(t)
	if _, err := s.Pool.Exec(ctx, `
		INSERT INTO livepg.events (seq, topic, type, data, committed_at)
		SELECT g, 't/' || (g % 100), 'message', '{"a": 1}', now() FROM generate_series(1, 50000) AS g;
		ANALYZE livepg.events`); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, s.Pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "next", store.NextSQL); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE next(NULL, 49990, 1000, 4194304)`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	for _, bad := range []string{"Seq Scan on events", "Hash Join", "Merge Join", "Bitmap"} {
		if strings.Contains(plan, bad) {
			t.Errorf("the generic plan of ReadNext's read has a %s:\n%s", bad, plan)
		}
	}
	if !strings.Contains(plan, "Index Cond: (seq > $2)") {
		t.Errorf("the generic plan of ReadNext's read does not walk the seq index from $2:\n%s", plan)
	}
}
