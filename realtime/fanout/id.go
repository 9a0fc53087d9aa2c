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
type EventID struct {
	Seq   int64
	Epoch string // 12 lowercase hex digits, or "" for a plain-number id
}

// String is the id as a stream writes it.
func (id EventID) String() string { return string(id.Append(nil)) }

// Append appends the id's text to b.
func (id EventID) Append(b []byte) []byte {
	b = strconv.AppendInt(b, id.Seq, 10)
	if id.Epoch != "" {
		b = append(b, '-')
		b = append(b, id.Epoch...)
	}
	return b
}

// ErrBadEventID is returned by ParseEventID for text that is not an id.
var ErrBadEventID = errors.New("not an event id: want <seq> or <seq>-<epoch>")

// ParseEventID reads an id written by EventID.String: a decimal seq >= 0,
// optionally followed by '-' and an epoch of 12 lowercase hex digits.
func ParseEventID(v string) (EventID, error) {
	seqText, epoch, hasEpoch := strings.Cut(v, "-")
	if hasEpoch && !validEpoch(epoch) {
		return EventID{}, ErrBadEventID
	}
	if seqText == "" || len(seqText) > 19 {
		return EventID{}, ErrBadEventID
	}
	for i := 0; i < len(seqText); i++ {
		if seqText[i] < '0' || seqText[i] > '9' {
			return EventID{}, ErrBadEventID
		}
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil {
		return EventID{}, ErrBadEventID
	}
	return EventID{Seq: seq, Epoch: epoch}, nil
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
