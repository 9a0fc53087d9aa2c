package fanout

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// NullTopicSegment is what a NULL placeholder value (SQL NULL, JSON null, a
// missing column) renders as in a tracked table's topic. No value from the
// database encodes to it: PostgreSQL text cannot hold a NUL byte (a Go string
// can: TopicSegment("\x00") is NullTopicSegment too).
const NullTopicSegment = "%00"

// maxPlainSegment is the longest encoding kept whole; a longer one is
// shortened to a prefix of at most hashedPrefix bytes, "%%" and 32 hex
// digits of its value's sha256: at most 66 bytes.
const (
	maxPlainSegment = 64
	hashedPrefix    = 32
)

// TopicSegment encodes value as one topic segment exactly as livepg's topic
// templates do (livepg.topic_segment in SQL, migrations/00005): an
// application can compute the topic a tracked row is published on.
//
// The bytes of value that are in A-Za-z0-9_.:@=+- are kept and every other
// byte becomes %XX (uppercase hex); a value made only of dots is encoded
// entirely; the empty string is "%%"; an encoding longer than 64 bytes
// becomes its first 32 bytes or fewer (never cutting an escape), "%%" and the
// first 32 hex digits of sha256(value).
func TopicSegment(value string) string {
	if value == "" {
		return "%%"
	}
	var b strings.Builder
	if strings.Trim(value, ".") == "" {
		b.WriteString(strings.Repeat("%2E", len(value)))
	} else {
		const hexDigits = "0123456789ABCDEF"
		for i := 0; i < len(value); i++ {
			c := value[i]
			if segmentByte(c) {
				b.WriteByte(c)
				continue
			}
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xF])
		}
	}
	encoded := b.String()
	if len(encoded) <= maxPlainSegment {
		return encoded
	}
	keep := hashedPrefix
	switch {
	case encoded[hashedPrefix-2] == '%':
		keep = hashedPrefix - 2
	case encoded[hashedPrefix-1] == '%':
		keep = hashedPrefix - 1
	}
	sum := sha256.Sum256([]byte(value))
	return encoded[:keep] + "%%" + hex.EncodeToString(sum[:16])
}

// segmentByte reports whether c stands for itself in an encoded segment.
func segmentByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("_.:@=+-", c) >= 0
}
