package stream

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Topics keeps the limit selectors the most streams name, as sorting them
// all would, and counts a selector a stream names twice once; a stream's
// end takes its selectors away.
func TestTopicsAreTheMostNamedSelectors(t *testing.T) {
	e := &Engine{}
	rng := rand.New(rand.NewPCG(1, 2))
	var streams [][]string
	for range 2000 {
		var sels []string
		for range 1 + rng.IntN(4) {
			sels = append(sels, fmt.Sprintf("t/%d", rng.IntN(300)))
		}
		streams = append(streams, sels)
		e.topics.add(sels, 1)
	}
	for _, sels := range streams[:500] {
		e.topics.add(sels, -1)
	}
	want := map[string]int{}
	for _, sels := range streams[500:] {
		for i, s := range sels {
			if !slices.Contains(sels[:i], s) {
				want[s]++
			}
		}
	}
	var all []TopicCount
	for s, n := range want {
		all = append(all, TopicCount{s, n})
	}
	slices.SortFunc(all, func(a, b TopicCount) int {
		return cmp.Or(cmp.Compare(b.Streams, a.Streams), cmp.Compare(a.Selector, b.Selector))
	})
	for _, limit := range []int{0, 1, 20, len(all), len(all) + 5} {
		top, distinct := e.Topics(limit)
		if distinct != len(all) || len(top) != min(limit, len(all)) || !slices.Equal(top, all[:len(top)]) {
			t.Fatalf("Topics(%d): %d distinct, %v; want %d, %v", limit, distinct, top, len(all), all[:min(limit, len(all))])
		}
	}
	for _, sels := range streams[500:] {
		e.topics.add(sels, -1)
	}
	if top, distinct := e.Topics(20); len(top) != 0 || distinct != 0 {
		t.Fatalf("after every stream ended: %v, %d", top, distinct)
	}
}
