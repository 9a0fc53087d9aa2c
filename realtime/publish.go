package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

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
func (n *Node) ServePublish(w http.ResponseWriter, r *http.Request) {
	req, err := decodePublish(http.MaxBytesReader(w, r.Body, n.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit))
			return
		}
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := n.cfg.Auth.AuthorizePublish(r, req.Topic); err != nil {
		WriteAuthError(w, err)
		return
	}
	if len(req.Data) > n.cfg.MaxEventSize {
		WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("event data larger than %d bytes", n.cfg.MaxEventSize))
		return
	}
	seq, err := n.publish(r.Context(), store.NewEvent{Topic: req.Topic, Type: req.Type, Data: req.Data})
	if errors.Is(err, store.ErrTooLarge) {
		WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if errors.Is(err, store.ErrInvalid) {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		n.log.Error("publish", "err", err)
		WriteError(w, http.StatusInternalServerError, "publish failed")
		return
	}
	WriteJSON(w, http.StatusOK, map[string]int64{"seq": seq})
}

// decodePublish reads and checks a publish body: one JSON object with known
// fields only, a valid topic, a valid type (default "message").
func decodePublish(body io.Reader) (PublishRequest, error) {
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
	if len(req.Data) == 0 {
		req.Data = json.RawMessage("null")
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
