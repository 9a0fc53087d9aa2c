package fanout

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFrameSplitsDataLines(t *testing.T) {
	got := string(AppendFrame(nil, EventID{Seq: 42}, "update", "boards/1", []byte("{\"a\":\n1,\r\n\"b\":\r2}")))
	want := "id: 42\nevent: update\n" +
		"data: {\"topic\":\"boards/1\",\"data\":{\"a\":\n" +
		"data: 1,\n" +
		"data: \"b\":\n" +
		"data: 2}}\n\n"
	if got != want {
		t.Fatalf("frame:\n%q\nwant:\n%q", got, want)
	}
	if got := string(AppendFrame(nil, EventID{Seq: 1}, "message", "t", nil)); got != "id: 1\nevent: message\ndata: {\"topic\":\"t\",\"data\":null}\n\n" {
		t.Fatalf("empty data frame: %q", got)
	}
}

// parseFrames reads frames as a browser would and returns, per dispatched
// event, its id, type and data.
func parseFrames(b []byte) (events [][3]string, fields int) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	sc.Split(splitSSELines)
	var id, typ string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data != nil {
				events = append(events, [3]string{id, typ, strings.Join(data, "\n")})
			}
			typ, data = "", nil
			continue
		}
		fields++
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			id = value
		case "event":
			typ = value
		case "data":
			data = append(data, value)
		}
	}
	return events, fields
}

// splitSSELines splits on CRLF, CR or LF, as the event stream format does.
func splitSSELines(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		if c == '\n' {
			return i + 1, data[:i], nil
		}
		if c == '\r' {
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// FuzzFrame: whatever the type and data, a frame is exactly one event with
// the right id, and its data reads back as the payload with line breaks
// normalised to LF.
func FuzzFrame(f *testing.F) {
	f.Add("message", []byte(`{"a":1}`))
	f.Add("x\ny", []byte("a\r\nb\rc\nd"))
	f.Add("evil\r\nid: 9\r\n\r\ndata: x", []byte("\n\nid: 7\n\ndata: y\r\r"))
	f.Add("", []byte{})
	f.Add("t\x00", []byte("\x00\r"))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		frame := AppendFrame(nil, EventID{Seq: 7}, typ, "t/1", data)
		events, _ := parseFrames(frame)
		if len(events) != 1 {
			t.Fatalf("%d events from one frame %q", len(events), frame)
		}
		ev := events[0]
		if ev[0] != "7" {
			t.Fatalf("id %q", ev[0])
		}
		if strings.ContainsAny(ev[1], "\r\n\x00") {
			t.Fatalf("type %q", ev[1])
		}
		payload := data
		if len(payload) == 0 {
			payload = []byte("null")
		}
		norm := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(payload))
		if want := `{"topic":"t/1","data":` + norm + `}`; ev[2] != want {
			t.Fatalf("data %q, want %q", ev[2], want)
		}
	})
}

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		matches []string
		misses  []string
	}{
		{"boards/42", true, []string{"boards/42"}, []string{"boards/4", "boards/42/cards", "boards"}},
		{"boards/*", true, []string{"boards/1", "boards/1/cards"}, []string{"boards", "boardsx/1", "board/1"}},
		{"a.b:c@d=e+f-g_h", true, []string{"a.b:c@d=e+f-g_h"}, nil},
		{"*", false, nil, nil},
		{"", false, nil, nil},
		{"/a", false, nil, nil},
		{"a/", false, nil, nil},
		{"a//b", false, nil, nil},
		{"a/**", false, nil, nil},
		{"a/*/b", false, nil, nil},
		{"a b", false, nil, nil},
		{"a\nb", false, nil, nil},
		{"caf\u00e9", false, nil, nil},
		{strings.Repeat("a", MaxTopicLen), true, nil, nil},
		{strings.Repeat("a", MaxTopicLen+1), false, nil, nil},
	} {
		sel, err := ParseSelector(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSelector(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err == nil && sel.String() != tc.in {
			t.Errorf("ParseSelector(%q).String() = %q", tc.in, sel.String())
		}
		for _, m := range tc.matches {
			if !sel.Match(m) {
				t.Errorf("%q does not match %q", tc.in, m)
			}
		}
		for _, m := range tc.misses {
			if sel.Match(m) {
				t.Errorf("%q matches %q", tc.in, m)
			}
		}
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"boards/1", "boards/*", "*", "a//b", "a/*/*", "\xff", "a/\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		if sel.String() != s {
			t.Fatalf("round trip %q -> %q", s, sel.String())
		}
		if strings.ContainsAny(s, " \r\n\x00\"\\") || len(s) > MaxTopicLen+2 {
			t.Fatalf("accepted %q", s)
		}
		if !sel.Prefix && !sel.Match(s) {
			t.Fatalf("exact selector %q does not match itself", s)
		}
	})
}

// A frame is made to measure: it is kept as long as its event, so its
// memory is what it holds, not what appending grew it to.
func TestNewEventFrameIsMadeToMeasure(t *testing.T) {
	for _, data := range []string{``, `null`, `{"n":1}`, `"` + strings.Repeat("x", 500_000) + `"`} {
		for _, topic := range []string{"a", "boards/42/cards", strings.Repeat("é", 60), "a<b"} {
			for _, id := range []EventID{{Seq: 9_223_372_036_854_775_807, Epoch: "0123456789ab"}, {Seq: 0}, {Seq: 10, Epoch: "0123456789ab"}} {
				ev := NewEvent(id, "message", topic, []byte(data), time.Now())
				want := AppendFrame(nil, id, "message", topic, []byte(data))
				if !bytes.Equal(ev.Frame, want) {
					t.Fatalf("frame %q, want %q", ev.Frame, want)
				}
				// Exact for a valid topic; a few bytes over for one JSON escapes.
				if valid := ValidTopic(topic); valid && cap(ev.Frame) != len(ev.Frame) || !valid && cap(ev.Frame) > len(ev.Frame)+6*len(topic) {
					t.Errorf("id %s, data of %d bytes, topic %q: frame of %d bytes holds %d", id, len(data), topic, len(ev.Frame), cap(ev.Frame))
				}
			}
		}
	}
}
