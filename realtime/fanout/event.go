package fanout

import (
	"encoding/json"
	"strconv"
	"time"
)

// Event is a committed event ready to send. Its SSE frame is encoded once,
// and the same bytes are written to every subscriber.
type Event struct {
	Seq         int64
	Epoch       string // the epoch of the history it was read in (see EventID)
	Topic       string
	CommittedAt time.Time
	Frame       []byte
}

// NewEvent encodes one committed event of the log as an SSE frame:
//
//	id: <seq>-<epoch>
//	event: <type>
//	data: {"topic": <topic>, "data": <payload>}
func NewEvent(id EventID, typ, topic string, data []byte, committedAt time.Time) *Event {
	return &Event{
		Seq:         id.Seq,
		Epoch:       id.Epoch,
		Topic:       topic,
		CommittedAt: committedAt,
		// Made to measure: the frame is kept (in subscribers' queues and in
		// the hub's window) as long as the event.
		Frame: AppendFrame(make([]byte, 0, frameSize(id, typ, topic, data)), id, typ, topic, data),
	}
}

// frameSize is the length of the frame AppendFrame writes for a payload
// without line breaks (the log's JSON has none), or a little more: a
// topic with characters JSON may escape (never a valid topic's) is counted
// at six bytes a byte.
func frameSize(id EventID, typ, topic string, data []byte) int {
	topicJSON := len(topic)
	for i := 0; i < len(topic); i++ {
		if c := topic[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			topicJSON = 6 * len(topic)
			break
		}
	}
	digits := 1
	for n := id.Seq; n >= 10 || n <= -10; n /= 10 {
		digits++
	}
	if id.Seq < 0 {
		digits++
	}
	if id.Epoch != "" {
		digits += len("-") + len(id.Epoch)
	}
	return len("id: ") + digits + len("\n") +
		len("event: \n") + len(typ) +
		len("data: {\"topic\":\"\",\"data\":}\n") + topicJSON + max(len(data), len("null")) +
		len("\n")
}

// OmittedType is the event type of a placeholder: an event of the log that
// is delivered without its data, because it is over the size limit or the
// database could not read it (see store.Event.Omitted). Its id is the
// event's, so a client's resume point moves past it, and its data says what
// was left out: {"topic": <topic>, "data": {"type": <the event's type>,
// "size": <bytes as JSON text, 0 if unknown>, "reason": "too_large" or
// "unreadable"}}.
const OmittedType = "livepg.omitted"

// OmittedData is the data of a placeholder (see OmittedType).
func OmittedData(typ string, size int64, reason string) []byte {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Size   int64  `json:"size"`
		Reason string `json:"reason"`
	}{typ, size, reason})
	return b
}

// AppendFrame appends one event's SSE frame to b: the frame NewEvent makes,
// for a stream that reads the log itself (catch-up).
func AppendFrame(b []byte, id EventID, typ, topic string, data []byte) []byte {
	topicJSON, _ := json.Marshal(topic) // a string always marshals
	if len(data) == 0 {
		data = []byte("null")
	}
	payload := make([]byte, 0, len(topicJSON)+len(data)+20)
	payload = append(payload, `{"topic":`...)
	payload = append(payload, topicJSON...)
	payload = append(payload, `,"data":`...)
	payload = append(payload, data...)
	payload = append(payload, '}')

	b = append(b, "id: "...)
	b = id.Append(b)
	b = append(b, '\n')
	b = appendField(b, "event", typ)
	b = appendData(b, payload)
	return append(b, '\n')
}

// appendField appends "name: value\n". A value cannot start a new field or
// event: CR, LF and NUL are dropped (types are validated long before this,
// so this only guards the framing).
func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	for i := 0; i < len(value); i++ {
		if c := value[i]; c != '\r' && c != '\n' && c != 0 {
			b = append(b, c)
		}
	}
	return append(b, '\n')
}

// appendData appends data as one "data:" line per line of data; a browser
// joins them back with LF. CRLF, CR and LF all end a line in SSE, so each is
// a line break here.
func appendData(b, data []byte) []byte {
	for {
		b = append(b, "data: "...)
		i := 0
		for i < len(data) && data[i] != '\n' && data[i] != '\r' {
			i++
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if i == len(data) {
			return b
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// ResetFrame tells the client its resume point is gone (pruned, or from
// another history of the log: a restored backup, a promoted replica that
// lost the tail, another database) and where the stream continues: the page
// refetches its state.
func ResetFrame(head EventID) []byte {
	b := head.Append([]byte("id: "))
	return append(b, "\nevent: reset\ndata: {}\n\n"...)
}

// RetryFrame sets how long the browser waits before reconnecting.
func RetryFrame(d time.Duration) []byte {
	return []byte("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n")
}

// HeartbeatFrame is a comment line that keeps an idle stream open through
// proxies.
var HeartbeatFrame = []byte(":\n\n")
