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
//
// In the logical bus mode (migrations/00009_logical.sql) a page's position
// carries the snapshot its state was read in instead, written
// '<seq>~<snapshot>-<epoch>' (snapshot as pg_snapshot's text,
// xmin:xmax:xip,...): the page has every event through seq, and also the
// events after it whose writers' commits that snapshot sees (committed, not
// numbered yet when the page read). A stream resumed from it writes its
// ids in that form until it is past those events.
type EventID struct {
	Seq   int64
	Skip  int64  // 0 but for a head position
	Epoch string // 12 lowercase hex digits, or "" for a plain-number id
	// Snap is a pg_snapshot in text form, or "" (see above).
	Snap string
}

// MaxSnapLen bounds the snapshot an id may carry (its in-progress list is
// bounded by the server's max_connections).
const MaxSnapLen = 4096

// String is the id as a stream writes it.
func (id EventID) String() string { return string(id.Append(nil)) }

// Append appends the id's text to b.
func (id EventID) Append(b []byte) []byte {
	b = strconv.AppendInt(b, id.Seq, 10)
	if id.Skip > 0 {
		b = append(b, '.')
		b = strconv.AppendInt(b, id.Skip, 10)
	}
	if id.Snap != "" {
		b = append(b, '~')
		b = append(b, id.Snap...)
	}
	if id.Epoch != "" {
		b = append(b, '-')
		b = append(b, id.Epoch...)
	}
	return b
}

// ErrBadEventID is returned by ParseEventID for text that is not an id.
var ErrBadEventID = errors.New("not an event id: want <seq>, <seq>-<epoch>, <seq>.<skip>-<epoch> or <seq>~<snapshot>-<epoch>")

// ParseEventID reads an id written by EventID.String: a decimal seq >= 0,
// optionally followed by '.' and a decimal skip >= 1 (then the epoch is
// required), or by '~' and a snapshot (then too), and by '-' and an epoch
// of 12 lowercase hex digits.
func ParseEventID(v string) (EventID, error) {
	position, epoch, hasEpoch := strings.Cut(v, "-")
	if hasEpoch && !validEpoch(epoch) {
		return EventID{}, ErrBadEventID
	}
	position, snap, hasSnap := strings.Cut(position, "~")
	if hasSnap && (!hasEpoch || !ValidSnapshot(snap)) {
		return EventID{}, ErrBadEventID
	}
	seqText, skipText, hasSkip := strings.Cut(position, ".")
	seq, ok := parseCount(seqText)
	if !ok {
		return EventID{}, ErrBadEventID
	}
	var skip int64
	if hasSkip {
		if skip, ok = parseCount(skipText); !ok || skip < 1 || !hasEpoch || hasSnap {
			return EventID{}, ErrBadEventID
		}
	}
	return EventID{Seq: seq, Skip: skip, Epoch: epoch, Snap: snap}, nil
}

// ValidSnapshot reports whether s has pg_snapshot's text form
// (xmin:xmax:xip,xip,... in decimal), within MaxSnapLen. The database has
// the last word on its values.
func ValidSnapshot(s string) bool {
	if s == "" || len(s) > MaxSnapLen {
		return false
	}
	parts := strings.SplitN(s, ":", 4)
	if len(parts) != 3 || !decimal(parts[0]) || !decimal(parts[1]) {
		return false
	}
	if parts[2] == "" {
		return true
	}
	for _, x := range strings.Split(parts[2], ",") {
		if !decimal(x) {
			return false
		}
	}
	return true
}

func decimal(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
