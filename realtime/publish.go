package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/livepg/livepg/store"
)

// PublishRequest is the body of POST /v1/publish.
type PublishRequest struct {
	Topic string          `json:"topic"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
}

// ServePublish is POST /v1/publish: it records one event and answers with
// its seq once the event is committed.
//
// The token is checked first, from the headers alone: a request without a
// valid one is refused before a byte of its body is read. A token that came
// in the cookie must come with an allowed Origin and a JSON body
// (CheckCrossSite): a page on another site cannot publish with a visitor's
// cookie. The body is then read (at most MaxBody) and checked in full —
// JSON, topic and type grammar, data size, what PostgreSQL's jsonb would
// refuse (validate.go) — before the event joins a batch, so that a bad
// publish fails alone.
func (n *Node) ServePublish(w http.ResponseWriter, r *http.Request) {
	pub, err := n.cfg.Auth.Publisher(r)
	if err != nil {
		WriteAuthError(w, err)
		return
	}
	if pub.FromCookie {
		if err := CheckCrossSite(r, n.cfg.CORSOrigins); err != nil {
			WriteAuthError(w, err)
			return
		}
	}
	if r.ContentLength > n.cfg.MaxBody {
		WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", n.cfg.MaxBody))
		return
	}
	// A body that trickles in is cut off: it would hold the connection
	// and its buffers for as long as the client likes.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(n.cfg.BodyTimeout))
	req, err := decodePublish(http.MaxBytesReader(w, r.Body, n.cfg.MaxBody), n.cfg.MaxEventSize)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit))
		case errors.Is(err, errEventTooLarge):
			WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			WriteError(w, http.StatusRequestTimeout, fmt.Sprintf("the request body did not arrive within %s", n.cfg.BodyTimeout))
		default:
			WriteError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	if err := pub.Allow(req.Topic); err != nil {
		WriteAuthError(w, err)
		return
	}
	seq, err := n.publish(r.Context(), store.NewEvent{Topic: req.Topic, Type: req.Type, Data: req.Data})
	if errors.Is(err, store.ErrTooLarge) {
		WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if errors.Is(err, store.ErrInvalid) {
		// What the checks above missed. PostgreSQL's words go to the log,
		// not to the client.
		n.log.Warn("publish refused by the database", "topic", req.Topic, "type", req.Type, "err", err)
		WriteError(w, http.StatusBadRequest, "the event was refused: its data cannot be stored")
		return
	}
	if err != nil {
		n.log.Error("publish", "err", err)
		WriteError(w, http.StatusInternalServerError, "publish failed")
		return
	}
	WriteJSON(w, http.StatusOK, map[string]int64{"seq": seq})
}

// errEventTooLarge is event data over MaxEventSize: 413.
var errEventTooLarge = errors.New("event data too large")

// decodePublish reads and checks a publish body: one JSON object with known
// fields only, a valid topic, a valid type (default "message"), data of at
// most maxData bytes that the log can store (checkEventData).
func decodePublish(body io.Reader, maxData int) (PublishRequest, error) {
	var req PublishRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, err
		}
		return req, fmt.Errorf("invalid JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errors.New("invalid JSON body: more than one value")
	}
	if req.Type == "" {
		req.Type = "message"
	}
	if !ValidTopic(req.Topic) {
		return req, fmt.Errorf("invalid topic %q: 1-%d characters, segments of letters, digits and _.:@=+-%% separated by single slashes", truncate(req.Topic, 60), MaxTopicLen)
	}
	if !ValidType(req.Type) {
		return req, fmt.Errorf("invalid type %q: 1-64 letters, digits or _.:-", truncate(req.Type, 60))
	}
	if req.Type == store.PresenceType {
		return req, fmt.Errorf("type %q is reserved for joins and leaves, which nodes publish (see presence)", store.PresenceType)
	}
	if len(req.Data) > maxData {
		return req, fmt.Errorf("%w: %d bytes, at most %d (LIVEPG_MAX_EVENT_SIZE)", errEventTooLarge, len(req.Data), maxData)
	}
	if len(req.Data) == 0 {
		req.Data = json.RawMessage("null")
	}
	if err := checkEventData(req.Data, maxData); err != nil {
		return req, err
	}
	return req, nil
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers with a JSON error body, {"error": "..."}: the one shape
// of every error livepg's HTTP interface returns.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
