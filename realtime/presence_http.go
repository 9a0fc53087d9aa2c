package realtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/livepg/livepg/realtime/fanout"
	"github.com/livepg/livepg/store"
)

// The query parameters of a stream that joins presence:
//
//	presence=<topic>      a topic to be a member of (repeatable, at most
//	                      PresenceConfig.MaxTopics); each must be matched
//	                      by one of the stream's topic selectors
//	presenceKey=<key>     the page's own key, 8-64 of A-Za-z0-9_-, the same
//	                      across its reconnects (livepg.js makes one per
//	                      page): the member's id is derived from it and the
//	                      identity, so a reconnect is the same member
//	presenceMeta=<json>   a JSON object of the page's own, at most
//	                      PresenceConfig.MaxMeta bytes, shown to the others
//
// The identity is the token's sub claim, or, where anonymous members are
// allowed, none (sub ""). The stream's first frames are one snapshot per
// presence topic:
//
//	event: presence
//	data: {"topic":"boards/42","data":{"op":"sync","at":"<id>","members":[{"id","sub","meta"}...]}}
//
// then, among the stream's events, the log's presence events of those
// topics (and of any other topic the stream selects):
//
//	id: <id>
//	event: presence
//	data: {"topic":"boards/42","data":{"op":"join","id","sub","meta"}}   (or "op":"leave")
//
// A page applies the snapshot, then each join and leave whose id's seq is
// higher than the snapshot's at (one at or below it is in the snapshot
// already).
const (
	PresenceParam     = "presence"
	PresenceKeyParam  = "presenceKey"
	PresenceMetaParam = "presenceMeta"
)

// presenceRequest is a stream's presence, parsed and checked.
type presenceRequest struct {
	members []store.Member
}

// parsePresence reads a stream request's presence parameters; nil when it
// joins none. An error is the client's: its status and message.
func (n *Node) parsePresence(r *http.Request, selectors []Selector) (*presenceRequest, *authError) {
	q := r.URL.Query()
	topics := q[PresenceParam]
	if len(topics) == 0 {
		return nil, nil
	}
	cfg := n.cfg.Presence
	if len(topics) > cfg.MaxTopics {
		return nil, &authError{http.StatusBadRequest, fmt.Sprintf("too many presence topics: %d, at most %d", len(topics), cfg.MaxTopics)}
	}
	key := q.Get(PresenceKeyParam)
	if key == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		key = hex.EncodeToString(b[:]) // a member for this stream only
	} else if !validPresenceKey(key) {
		return nil, &authError{http.StatusBadRequest, "invalid presenceKey: 8-64 letters, digits, _ or -"}
	}
	var meta json.RawMessage
	if raw := q.Get(PresenceMetaParam); raw != "" {
		if len(raw) > cfg.MaxMeta {
			return nil, &authError{http.StatusRequestEntityTooLarge, fmt.Sprintf("presenceMeta is %d bytes, at most %d", len(raw), cfg.MaxMeta)}
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(raw), &obj); err != nil || obj == nil {
			return nil, &authError{http.StatusBadRequest, "invalid presenceMeta: want a JSON object"}
		}
		if err := checkEventData([]byte(raw), cfg.MaxMeta); err != nil {
			return nil, &authError{http.StatusBadRequest, "invalid presenceMeta: " + err.Error()}
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(raw)); err != nil {
			return nil, &authError{http.StatusBadRequest, "invalid presenceMeta: want a JSON object"}
		}
		meta = buf.Bytes()
	}
	sub, aerr := n.presenceIdentity(r)
	if aerr != nil {
		return nil, aerr
	}
	id := memberID(sub, key)
	pr := &presenceRequest{}
	for _, t := range topics {
		sel, err := ParseSelector(t)
		if err != nil || sel.Prefix {
			return nil, &authError{http.StatusBadRequest, fmt.Sprintf("invalid presence topic %q: an exact topic, not a selector", truncate(t, 60))}
		}
		matched := false
		for _, s := range selectors {
			matched = matched || s.Match(t)
		}
		if !matched {
			return nil, &authError{http.StatusBadRequest, fmt.Sprintf("presence topic %s is not among the stream's topics: a member sees the others' joins and leaves through its stream", t)}
		}
		pr.members = append(pr.members, store.Member{Topic: t, ID: id, Sub: sub, Meta: meta})
	}
	return pr, nil
}

// presenceIdentity is the sub of the request's token, or "" for an
// anonymous member where those are allowed.
func (n *Node) presenceIdentity(r *http.Request) (string, *authError) {
	a := n.cfg.Auth
	if a == nil {
		return "", nil // the local mode: everyone is anonymous
	}
	c, err := a.claims(r)
	if err != nil {
		if n.cfg.Presence.Anonymous {
			return "", nil // as a public topic's stream ignores a token it cannot use
		}
		var ae *authError
		if errors.As(err, &ae) {
			return "", ae
		}
		return "", &authError{http.StatusUnauthorized, err.Error()}
	}
	if c != nil && c.Subject != "" {
		if len(c.Subject) > 256 {
			return "", &authError{http.StatusBadRequest, "the token's sub is longer than 256 bytes"}
		}
		return c.Subject, nil
	}
	if n.cfg.Presence.Anonymous {
		return "", nil
	}
	return "", &authError{http.StatusUnauthorized, "joining presence needs a token with a sub claim (the member's identity); this node allows no anonymous members (LIVEPG_PRESENCE_ANONYMOUS)"}
}

func validPresenceKey(k string) bool {
	if len(k) < 8 || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// memberID is a member's id: the same for the same identity and page key,
// and telling neither (the key stays the page's).
func memberID(sub, key string) string {
	h := sha256.Sum256([]byte(sub + "\x00" + key))
	return hex.EncodeToString(h[:16])
}

// presenceSync is a snapshot's data.
type presenceSync struct {
	Op      string         `json:"op"`
	At      string         `json:"at"`
	Members []store.Member `json:"members"`
}

// admitPresence joins pr's members for a stream that starts after start:
// it waits until the mirror has read the log that far (so that the
// snapshot misses no join or leave the stream will not carry), takes the
// snapshots and joins. It returns the snapshot frames and the function to
// call when the stream ends.
func (n *Node) admitPresence(ctx context.Context, client string, pr *presenceRequest, start fanout.EventID) ([][]byte, func(), *authError) {
	p := n.presence
	if start.Epoch == "" || start.Epoch == n.hub.Load().View().Epoch {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.waitFor(wctx, start.Seq)
		cancel()
		if err != nil {
			n.log.Warn("presence: snapshot", "err", err)
			return nil, nil, &authError{http.StatusServiceUnavailable, "presence is not ready on this node"}
		}
	}
	release, err := p.join(client, pr.members)
	switch {
	case errors.Is(err, errJoinTooFast):
		return nil, nil, &authError{http.StatusTooManyRequests, fmt.Sprintf("this client (%s) joins presence faster than %d per second on this node (LIVEPG_PRESENCE_JOIN_RATE)", client, n.cfg.Presence.JoinRate)}
	case errors.Is(err, errTopicFull):
		return nil, nil, &authError{http.StatusConflict, err.Error() + " (LIVEPG_PRESENCE_MAX_MEMBERS)"}
	case err != nil:
		return nil, nil, &authError{http.StatusServiceUnavailable, err.Error()}
	}
	frames := make([][]byte, 0, len(pr.members))
	for _, m := range pr.members {
		members, at := p.snapshot(m.Topic)
		frames = append(frames, syncFrame(m.Topic, members, at))
	}
	return frames, release, nil
}

func syncFrame(topic string, members []store.Member, at fanout.EventID) []byte {
	data, _ := json.Marshal(struct {
		Topic string       `json:"topic"`
		Data  presenceSync `json:"data"`
	}{topic, presenceSync{Op: "sync", At: at.String(), Members: members}})
	frame := make([]byte, 0, len(data)+40)
	frame = append(frame, "event: "+store.PresenceType+"\ndata: "...)
	frame = append(frame, data...)
	return append(frame, "\n\n"...)
}

// PresenceSnapshot is GET /v1/presence's answer: a topic's members and the
// log position they reflect.
type PresenceSnapshot struct {
	Topic   string         `json:"topic"`
	At      string         `json:"at"`
	Members []store.Member `json:"members"`
}

// ServePresence is GET /v1/presence?topic=<topic>: the topic's current
// members, authorised as subscribing to the topic is. Joins and leaves
// after At come as presence events on the topic's stream.
func (n *Node) ServePresence(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	sel, err := ParseSelector(topic)
	if err != nil || sel.Prefix {
		WriteError(w, http.StatusBadRequest, "name one exact topic: ?topic=boards/42")
		return
	}
	if _, err := n.cfg.Auth.authorizeStream(r, []Selector{sel}); err != nil {
		WriteAuthError(w, err)
		return
	}
	if n.hub.Load() == nil {
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "node is not started")
		return
	}
	members, at := n.presence.snapshot(topic)
	WriteJSON(w, http.StatusOK, PresenceSnapshot{Topic: topic, At: at.String(), Members: members})
}

// PresenceCounts is how many members each topic with any has now, across
// every node (as this node has read the log): for an inspector.
func (n *Node) PresenceCounts() map[string]int { return n.presence.counts() }

// PresenceMembers is topic's members now, across every node, and the log
// position that set reflects.
func (n *Node) PresenceMembers(topic string) PresenceSnapshot {
	members, at := n.presence.snapshot(topic)
	return PresenceSnapshot{Topic: topic, At: at.String(), Members: members}
}
