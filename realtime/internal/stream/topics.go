package stream

import (
	"cmp"
	"slices"
	"sync"
)

// topicCounts counts the open streams by selector, for the inspector: a
// stream adds its selectors when it starts running and takes them away when
// it ends. Opening and closing a stream touches it once; the event path
// never does.
type topicCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *topicCounts) add(selectors []string, d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	for i, s := range selectors {
		if slices.Contains(selectors[:i], s) {
			continue // named twice by one stream: it counts once
		}
		if c.n[s] += d; c.n[s] <= 0 {
			delete(c.n, s)
		}
	}
}

// TopicCount is how many open streams name a selector.
type TopicCount struct {
	Selector string `json:"selector"`
	Streams  int    `json:"streams"`
}

// Topics returns the limit selectors the most open streams name, most
// first (ties by name), and how many distinct selectors open streams name
// in all. It keeps only the limit best while it looks (a node may hold
// hundreds of thousands of distinct selectors).
func (e *Engine) Topics(limit int) (top []TopicCount, distinct int) {
	better := func(a, b TopicCount) int {
		return cmp.Or(cmp.Compare(b.Streams, a.Streams), cmp.Compare(a.Selector, b.Selector))
	}
	c := &e.topics
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit <= 0 {
		return nil, len(c.n)
	}
	top = make([]TopicCount, 0, min(limit, len(c.n)))
	for s, n := range c.n {
		tc := TopicCount{Selector: s, Streams: n}
		if len(top) == limit && better(tc, top[len(top)-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, tc, better)
		if len(top) == limit {
			top = top[:limit-1]
		}
		top = slices.Insert(top, i, tc)
	}
	return top, len(c.n)
}
