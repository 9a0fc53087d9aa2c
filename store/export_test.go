package store

// For the tests in package store_test: the catch-up query, to EXPLAIN it.
var MatchingSQL = matchingSQL

// PrefixRanges are the [lo, hi) topic ranges of prefixes, as ReadMatching
// passes them to MatchingSQL.
func PrefixRanges(prefixes []string) (lo, hi []string) { return prefixRanges(prefixes) }

// NextSQL is ReadNext's read, to EXPLAIN it.
var NextSQL = nextSQL
