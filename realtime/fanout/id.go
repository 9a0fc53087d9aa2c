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
// In the logical bus mode (migrations/00009_logical.sql) a page's position
// may also carry the snapshot its state was read in, written
// '<seq>~<snapshot>-<epoch>' (snapshot as pg_snapshot's text,
// xmin:xmax:xip,...): the page has every event through seq, and also the
// events after it whose writers' commits that snapshot sees (committed, not
// numbered yet when the page read).
type EventID struct {
	Seq   int64
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
var ErrBadEventID = errors.New("not an event id: want <seq> or <seq>-<epoch>")

// ParseEventID reads an id written by EventID.String: a decimal seq >= 0,
// optionally followed by '~' and a snapshot, optionally followed by '-' and
// an epoch of 12 lowercase hex digits.
func ParseEventID(v string) (EventID, error) {
	seqText, epoch, hasEpoch := strings.Cut(v, "-")
	if hasEpoch && !validEpoch(epoch) {
		return EventID{}, ErrBadEventID
	}
	seqText, snap, hasSnap := strings.Cut(seqText, "~")
	if hasSnap && !ValidSnapshot(snap) {
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
	return EventID{Seq: seq, Epoch: epoch, Snap: snap}, nil
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
