package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkRead measures the log reads of delivery against a real
// PostgreSQL: the node's read of new events, and a stream's catch-up read
// (by exact topic and by prefix) over 20,000 events on 100 topics.
//
//	go test ./store -run '^$' -bench BenchmarkRead -benchmem
func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	s := storetest.NewStore(b)
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish('t/' || (i % 100), jsonb_build_object('op', 'update', 'i', i, 'text', repeat('x', 100)))
	                                FROM generate_series(1, 20000) i`); err != nil {
		b.Fatal(err)
	}
	storetest.NumberPending(b, s.Pool) // as a node would (migrations/00008_bus.sql)
	bounds, err := s.Bounds(ctx)
	if err != nil {
		b.Fatal(err)
	}
	head := bounds.Head
	cases := []struct {
		name            string
		after           int64
		exact, prefixes []string
		want            int
	}{
		{"after/1000-rows", head - 1000, nil, nil, 1000},
		{"matching/exact/100-of-10000", head - 10000, []string{"t/7"}, nil, 100},
		{"matching/prefix/1000-rows", head - 1000, nil, []string{"t/"}, 1000},
		{"matching/two-exact/20-of-1000", head - 1000, []string{"t/7", "t/8"}, nil, 20},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				var n int
				if c.exact == nil && c.prefixes == nil {
					rows, err := s.ReadAfter(ctx, c.after, 1000, 4<<20)
					if err != nil {
						b.Fatal(err)
					}
					n = len(rows)
				} else {
					rows, err := s.ReadMatching(ctx, c.after, head, c.exact, c.prefixes, 1000, 4<<20)
					if err != nil {
						b.Fatal(err)
					}
					n = len(rows)
				}
				if n != c.want {
					b.Fatalf("read %d rows, want %d", n, c.want)
				}
			}
			b.ReportMetric(float64(c.want), "rows/op")
		})
	}
}

// BenchmarkCatchUpOfEmptySelectors is issue 11's item 3 on a log of
// LIVEPG_BENCH_ROWS events (default 1,000,000, on 100 topics): a catch-up
// from the start of the log for 32 prefixes that match nothing, read as
// ReadMatching reads it ("ranges": a range of the (topic, seq) index per
// selector, planned with its arguments each time) and as it was read before
// ("filter": every row after the cursor, filtered by topic, a cached
// statement). It prints the EXPLAIN ANALYZE of each once.
//
//	go test ./store -run '^$' -bench BenchmarkCatchUpOfEmptySelectors -benchtime 10x
func BenchmarkCatchUpOfEmptySelectors(b *testing.B) {
	ctx := context.Background()
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LIVEPG_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	s := storetest.NewStore(b)
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish_batch(array_agg('t/' || (i % 100)), array_agg('message'::text), array_agg(jsonb_build_object('i', i)))
	                                FROM generate_series(1, $1::int) i`, rows); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `VACUUM ANALYZE livepg.events`); err != nil {
		b.Fatal(err)
	}
	var prefixes []string
	for i := range 32 {
		prefixes = append(prefixes, fmt.Sprintf("none%d/", i))
	}
	lo, hi := store.PrefixRanges(prefixes)
	const filterSQL = `SELECT seq, topic, type, data, committed_at FROM livepg.events
		  WHERE seq > $1 AND seq <= $2
		    AND (topic = ANY($3) OR EXISTS (SELECT 1 FROM unnest($4::text[]) p WHERE starts_with(topic, p)))
		  ORDER BY seq LIMIT $5`
	cases := []struct {
		name string
		sql  string
		args []any
	}{
		{"ranges", store.MatchingSQL, []any{pgx.QueryExecModeExec, 0, rows, []string{}, lo, hi, 1000, int64(4 << 20)}},
		{"filter", filterSQL, []any{0, rows, []string{}, prefixes, 1000}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var plan strings.Builder
			r, err := s.Pool.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+c.sql, c.args...)
			if err != nil {
				b.Fatal(err)
			}
			lines, err := pgx.CollectRows(r, pgx.RowTo[string])
			if err != nil {
				b.Fatal(err)
			}
			for _, l := range lines {
				plan.WriteString(l + "\n")
			}
			fmt.Fprintf(os.Stderr, "%d rows, 32 empty prefixes, %s:\n%s", rows, c.name, plan.String())
			b.ResetTimer()
			for range b.N {
				r, err := s.Pool.Query(ctx, c.sql, c.args...)
				if err != nil {
					b.Fatal(err)
				}
				r.Close()
				if r.Err() != nil {
					b.Fatal(r.Err())
				}
			}
		})
	}
}
