package fanout

import (
	"errors"
	"strconv"
	"strings"
)

// EventID is an event's SSE id: its seq and the epoch of the log's history
// it belongs to (see migrations/00006_history.sql), written '<seq>-<epoch>'.
// An id without an epoch ('<seq>') is a plain number from before epochs.
// Clients treat ids as opaque strings.
//
// A head position (livepg.head(), migrations/00008_bus.sql) may also say
// "after seq, and skip the next Skip events": '<seq>.<skip>-<epoch>'. Those
// events were committed, but not yet numbered, in the snapshot it was read
// in; a node resolves it to a plain id before streaming from it. Only head
// positions have a Skip, and always an epoch.
type EventID struct {
	Seq   int64
	Skip  int64  // 0 but for a head position
	Epoch string // 12 lowercase hex digits, or "" for a plain-number id
}

// String is the id as a stream writes it.
func (id EventID) String() string { return string(id.Append(nil)) }

// Append appends the id's text to b.
func (id EventID) Append(b []byte) []byte {
	b = strconv.AppendInt(b, id.Seq, 10)
	if id.Skip > 0 {
		b = append(b, '.')
		b = strconv.AppendInt(b, id.Skip, 10)
	}
	if id.Epoch != "" {
		b = append(b, '-')
		b = append(b, id.Epoch...)
	}
	return b
}

// ErrBadEventID is returned by ParseEventID for text that is not an id.
var ErrBadEventID = errors.New("not an event id: want <seq>, <seq>-<epoch> or <seq>.<skip>-<epoch>")

// ParseEventID reads an id written by EventID.String: a decimal seq >= 0,
// optionally followed by '.' and a decimal skip >= 1 (then the epoch is
// required), and by '-' and an epoch of 12 lowercase hex digits.
func ParseEventID(v string) (EventID, error) {
	position, epoch, hasEpoch := strings.Cut(v, "-")
	if hasEpoch && !validEpoch(epoch) {
		return EventID{}, ErrBadEventID
	}
	seqText, skipText, hasSkip := strings.Cut(position, ".")
	seq, ok := parseCount(seqText)
	if !ok {
		return EventID{}, ErrBadEventID
	}
	var skip int64
	if hasSkip {
		if skip, ok = parseCount(skipText); !ok || skip < 1 || !hasEpoch {
			return EventID{}, ErrBadEventID
		}
	}
	return EventID{Seq: seq, Skip: skip, Epoch: epoch}, nil
}

// parseCount reads 1-19 decimal digits as an int64.
func parseCount(text string) (int64, bool) {
	if text == "" || len(text) > 19 {
		return 0, false
	}
	for i := 0; i < len(text); i++ {
		if text[i] < '0' || text[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	return n, err == nil
}

func validEpoch(e string) bool {
	if len(e) != 12 {
		return false
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
