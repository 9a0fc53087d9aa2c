package store_test

import (
	"context"
	"testing"

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
