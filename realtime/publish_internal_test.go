package realtime

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

func TestParseEventID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5", 0, false},
		{" 1", 0, false},
		{"0x10", 0, false},
		{"abc", 0, false},
	} {
		got, ok, err := ParseEventID(tc.in)
		if ok != tc.ok || got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseEventID(%q) = %d, %v, %v; want %d, %v", tc.in, got, ok, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"0", "1", "-1", "+5", "99999999999999999999", "1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, ok, err := ParseEventID(s)
		if ok != (err == nil) {
			t.Fatalf("ok=%v err=%v", ok, err)
		}
		if ok && (seq < 0 || strings.TrimLeft(s, "0") != strings.TrimLeft(fmtInt(seq), "0")) {
			t.Fatalf("%q parsed as %d", s, seq)
		}
	})
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

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
