package realtime

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseEventID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want EventID
		ok   bool
	}{
		{"0", EventID{}, true},
		{"42", EventID{Seq: 42}, true},
		{"9223372036854775807", EventID{Seq: 9223372036854775807}, true},
		{"42-0123456789ab", EventID{Seq: 42, Epoch: "0123456789ab"}, true},
		{"0-ffffffffffff", EventID{Seq: 0, Epoch: "ffffffffffff"}, true},
		{"9223372036854775808", EventID{}, false},
		{"-1", EventID{}, false},
		{"+1", EventID{}, false},
		{"1.5", EventID{}, false},
		{" 1", EventID{}, false},
		{"0x10", EventID{}, false},
		{"abc", EventID{}, false},
		{"42-", EventID{}, false},
		{"-0123456789ab", EventID{}, false},
		{"42-0123456789AB", EventID{}, false},
		{"42-0123456789a", EventID{}, false},
		{"42-0123456789abc", EventID{}, false},
		{"42-0123456789ab-1", EventID{}, false},
	} {
		got, ok, err := ParseEventID(tc.in)
		if ok != tc.ok || got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseEventID(%q) = %+v, %v, %v; want %+v, %v", tc.in, got, ok, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"0", "1", "-1", "+5", "99999999999999999999", "1\n", "7-0123456789ab"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok, err := ParseEventID(s)
		if ok != (err == nil) {
			t.Fatalf("ok=%v err=%v", ok, err)
		}
		// An accepted id is written back as it came, up to leading zeros.
		if ok && (id.Seq < 0 || strings.TrimLeft(s, "0") != strings.TrimLeft(id.String(), "0")) {
			t.Fatalf("%q parsed as %+v", s, id)
		}
	})
}

func FuzzDecodePublish(f *testing.F) {
	for _, s := range []string{`{"topic":"a","type":"b","data":{"x":1}}`, `{"topic":"a"}`, `{`, `[]`, `{"topic":"a","x":1}`, `{"topic":"a"} {}`, `{"topic":"a","type":"a\nb"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodePublish(bytes.NewReader(body))
		if err != nil {
			return
		}
		if !ValidTopic(req.Topic) || !ValidType(req.Type) || len(req.Data) == 0 {
			t.Fatalf("accepted %+v from %q", req, body)
		}
	})
}
