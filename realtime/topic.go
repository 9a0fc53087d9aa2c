package realtime

import "github.com/livepg/livepg/realtime/fanout"

// The topic grammar and its segment encoding live in package fanout, with
// the hub that routes by them (fanout/topic.go, fanout/segment.go). These
// names stay here for the programs built on realtime.

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

// NullTopicSegment is what a NULL placeholder value renders as in a tracked
// table's topic.
const NullTopicSegment = fanout.NullTopicSegment

// TopicSegment encodes value as one topic segment exactly as livepg's topic
// templates do (livepg.topic_segment in SQL): an application can compute
// the topic a tracked row is published on. See fanout.TopicSegment.
func TopicSegment(value string) string { return fanout.TopicSegment(value) }
