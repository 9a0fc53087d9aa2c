package realtime

import "github.com/livepg/livepg/realtime/fanout"

// The topic grammar lives in package fanout, with the hub that routes by it
// (segment.go, issue 10 item 4, belongs there too: see fanout/topic.go).
// These names stay here for the programs built on realtime.

// TopicPattern is the grammar of a topic, the same one livepg.publish and the
// events table's CHECK constraint enforce.
const TopicPattern = fanout.TopicPattern

// MaxTopicLen is the longest topic accepted, in bytes.
const MaxTopicLen = fanout.MaxTopicLen

// TypePattern is the grammar of an event type.
const TypePattern = fanout.TypePattern

// Selector chooses the topics a stream receives: one exact topic, or every
// topic below a prefix ("boards/*").
type Selector = fanout.Selector

// ParseSelector parses an exact topic or a prefix ending in "/*".
func ParseSelector(s string) (Selector, error) { return fanout.ParseSelector(s) }

// ValidTopic reports whether s is a topic an event may be published on.
func ValidTopic(s string) bool { return fanout.ValidTopic(s) }

// ValidType reports whether s is a valid event type.
func ValidType(s string) bool { return fanout.ValidType(s) }
