package fanout

// The topic grammar. segment.go, beside it, encodes one template value
// into one segment of it; realtime re-exports what callers outside need
// (see realtime/topic.go).

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// TopicPattern is the grammar of a topic, the same one livepg.publish and the
// events table's CHECK constraint enforce: segments of letters, digits and
// _.:@=+-% separated by single slashes. (% is there for the values a tracked
// table's template fills in, encoded: see TopicSegment.)
const TopicPattern = `^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$`

// MaxTopicLen is the longest topic accepted, in bytes.
const MaxTopicLen = 256

// TypePattern is the grammar of an event type.
const TypePattern = `^[A-Za-z0-9_.:-]{1,64}$`

var (
	topicRE = regexp.MustCompile(TopicPattern)
	typeRE  = regexp.MustCompile(TypePattern)
)

// ValidTopic reports whether s is a topic an event may be published on.
func ValidTopic(s string) bool {
	return len(s) <= MaxTopicLen && topicRE.MatchString(s)
}

// ValidType reports whether s is a valid event type: it can never break the
// SSE framing because it holds no CR, LF or other control character.
func ValidType(s string) bool { return typeRE.MatchString(s) }

// Selector chooses the topics a stream receives: one exact topic, or every
// topic below a prefix ("boards/*" matches "boards/1" and "boards/1/cards"
// but not "boards").
type Selector struct {
	// Topic is the exact topic, or for a prefix selector the prefix with its
	// trailing slash ("boards/").
	Topic  string
	Prefix bool
}

var errSelector = errors.New("invalid topic selector")

// ParseSelector parses an exact topic or a prefix ending in "/*".
func ParseSelector(s string) (Selector, error) {
	if base, ok := strings.CutSuffix(s, "/*"); ok {
		if !ValidTopic(base) {
			return Selector{}, fmt.Errorf("%w %q: the part before /* must be a topic", errSelector, s)
		}
		return Selector{Topic: base + "/", Prefix: true}, nil
	}
	if !ValidTopic(s) {
		return Selector{}, fmt.Errorf("%w %q: a topic is 1-%d characters: segments of letters, digits and _.:@=+-%% separated by single slashes, optionally ending in /*", errSelector, s, MaxTopicLen)
	}
	return Selector{Topic: s}, nil
}

// String returns the selector as it was written.
func (s Selector) String() string {
	if s.Prefix {
		return s.Topic + "*"
	}
	return s.Topic
}

// Match reports whether topic is selected.
func (s Selector) Match(topic string) bool {
	if s.Prefix {
		return strings.HasPrefix(topic, s.Topic)
	}
	return topic == s.Topic
}

// matchAny reports whether any of sels matches topic.
func matchAny(sels []Selector, topic string) bool {
	for _, s := range sels {
		if s.Match(topic) {
			return true
		}
	}
	return false
}
