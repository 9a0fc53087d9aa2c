package realtime

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
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
	for _, s := range []string{`{"topic":"a","type":"b","data":{"x":1}}`, `{"topic":"a","data":"\\u0000"}`, `{"topic":"a","data":{"\u0000":1}}`, "{\"topic\":\"a\",\"data\":\"\xff\"}", `{"topic":"a","data":[1e99999,true,false]}`, `{"topic":"a"}`, `{`, `[]`, `{"topic":"a","x":1}`, `{"topic":"a"} {}`, `{"topic":"a","type":"a\nb"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodePublish(bytes.NewReader(body), 1<<10)
		if err != nil {
			return
		}
		if !ValidTopic(req.Topic) || !ValidType(req.Type) || len(req.Data) == 0 || len(req.Data) > 1<<10 {
			t.Fatalf("accepted %+v from %q", req, body)
		}
		// What is accepted, jsonb can store: valid UTF-8, no NUL in any
		// string.
		if !utf8.Valid(req.Data) {
			t.Fatalf("accepted invalid UTF-8 data %q", req.Data)
		}
		var v any
		if err := json.Unmarshal(req.Data, &v); err != nil {
			t.Fatalf("accepted invalid JSON data %q: %v", req.Data, err)
		}
		if holdsNUL(v) {
			t.Fatalf("accepted data holding NUL: %q", req.Data)
		}
	})
}

// holdsNUL reports whether a decoded JSON value has NUL in a string or key.
func holdsNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		return slices.ContainsFunc(v, holdsNUL)
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || holdsNUL(e) {
				return true
			}
		}
	}
	return false
}

func TestCheckEventData(t *testing.T) {
	for _, tc := range []struct {
		data string
		ok   bool
	}{
		{`{"a":"b"}`, true},
		{`"\\u0000"`, true}, // an escaped backslash, then the text u0000
		{`[true,false,1e5,-2.5E+10,1e-300]`, true},
		{`"\u0000"`, false},
		{`{"\u0000":1}`, false},
		{`"a\u0000b"`, false},
		{"\"\xff\"", false},
		{`1e16001`, false},
		{`[1E+99999]`, false},
		{`123456e15999`, false},
		{`"1e99999"`, true}, // a string, not a number
	} {
		if err := checkEventData([]byte(tc.data)); (err == nil) != tc.ok {
			t.Errorf("checkEventData(%q) = %v, want ok %v", tc.data, err, tc.ok)
		}
	}
}
