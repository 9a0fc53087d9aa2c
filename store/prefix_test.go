package store

import (
	"strings"
	"testing"
)

// FuzzPrefixRange: the range [p, prefixEnd(p)) that a catch-up reads for
// the prefix p (compared bytewise, as the index's C collation does) holds
// exactly the topics that start with p. Prefixes are ASCII and end with
// '/' (fanout.Selector); the property holds for any prefix whose last byte
// is below 0xFF.
func FuzzPrefixRange(f *testing.F) {
	for _, seed := range [][2]string{
		{"boards/", "boards/1"}, {"boards/", "boards0"}, {"boards/", "boards"}, {"boards/", "boards/"},
		{"a/", "a/b/c"}, {"a/", "a."}, {"a/", "a0"}, {"x%2F/", "x%2F/1"}, {"t/1/", "t/10"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, p, topic string) {
		if p == "" || p[len(p)-1] == 0xFF {
			return // not a prefix a selector makes
		}
		lo, hi := p, prefixEnd(p)
		inRange := lo <= topic && topic < hi
		if inRange != strings.HasPrefix(topic, p) {
			t.Fatalf("prefix %q, topic %q: in [%q, %q) = %v, HasPrefix = %v", p, topic, lo, hi, inRange, !inRange)
		}
	})
}
