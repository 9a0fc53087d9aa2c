package realtime

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/livepg/livepg/store/storetest"
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
		// The logical bus mode's page positions carry a snapshot.
		{"42~900:905:900,903-0123456789ab", EventID{Seq: 42, Epoch: "0123456789ab", Snap: "900:905:900,903"}, true},
		{"42~900:900:-0123456789ab", EventID{Seq: 42, Epoch: "0123456789ab", Snap: "900:900:"}, true},
		{"42~900:905:900,903", EventID{}, false},         // no epoch
		{"42~900:905-0123456789ab", EventID{}, false},    // not a snapshot
		{"42~900:905:9a-0123456789ab", EventID{}, false}, // not decimal
		{"42~900:905:,1-0123456789ab", EventID{}, false}, // empty xid
		{"42.3~900:905:-0123456789ab", EventID{}, false}, // a skip and a snapshot
		{"42~" + strings.Repeat("1", 4097) + "-0123456789ab", EventID{}, false},
		// Head positions (livepg.head(), migrations/00008_bus.sql): after
		// seq, skip the next events; always with an epoch.
		{"3.4-0123456789ab", EventID{Seq: 3, Skip: 4, Epoch: "0123456789ab"}, true},
		{"0.9223372036854775807-0123456789ab", EventID{Seq: 0, Skip: 9223372036854775807, Epoch: "0123456789ab"}, true},
		{"3.0-0123456789ab", EventID{}, false},
		{"3.4", EventID{}, false},
		{"3.-0123456789ab", EventID{}, false},
		{".4-0123456789ab", EventID{}, false},
		{"3.4.5-0123456789ab", EventID{}, false},
		{"3.-4-0123456789ab", EventID{}, false},
		{"3.9223372036854775808-0123456789ab", EventID{}, false},
	} {
		got, ok, err := ParseEventID(tc.in)
		if ok != tc.ok || got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseEventID(%q) = %+v, %v, %v; want %+v, %v", tc.in, got, ok, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"0", "1", "-1", "+5", "99999999999999999999", "1\n", "7-0123456789ab", "7.3-0123456789ab", "7~5:9:6,7-0123456789ab"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok, err := ParseEventID(s)
		if ok != (err == nil) {
			t.Fatalf("ok=%v err=%v", ok, err)
		}
		// An accepted id is written back as an id that parses to the same,
		// and as it came when it had no leading zeros.
		if !ok {
			return
		}
		again, ok2, _ := ParseEventID(id.String())
		if id.Seq < 0 || id.Skip < 0 || !ok2 || again != id {
			t.Fatalf("%q parsed as %+v, written %q", s, id, id.String())
		}
		if id.Skip == 0 && strings.TrimLeft(s, "0") != strings.TrimLeft(id.String(), "0") {
			t.Fatalf("%q parsed as %+v", s, id)
		}
	})
}

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
	compactOnes := "[" + strings.TrimSuffix(strings.Repeat("1,", 1000), ",") + "]" // 2,001 bytes sent, 3,000 printed
	for _, tc := range []struct {
		data    string
		maxSize int
		want    string // "" for accepted, "invalid" or "too large"
	}{
		{`{"a":"b"}`, 100, ""},
		{`"\\u0000"`, 100, ""}, // an escaped backslash, then the text u0000
		{`[true,false,1e5,-2.5E+10,1e-300]`, 1000, ""},
		{`"\u0000"`, 100, "invalid"},
		{`{"\u0000":1}`, 100, "invalid"},
		{`"a\u0000b"`, 100, "invalid"},
		{"\"\xff\"", 100, "invalid"},
		{`"1e99999"`, 100, ""}, // a string, not a number
		// Numbers print in full: 1e16001 is 16,002 digits.
		{`1e16001`, 16002, ""},
		{`1e16001`, 16001, "too large"},
		{`123456e15999`, 1 << 20, ""},
		{`-1.5e-3`, 7, ""}, // -0.0015
		{`-1.5e-3`, 6, "too large"},
		{`[1E+99999]`, 1 << 20, ""},
		{`[1e131071,1e131071]`, 1 << 18, "too large"},
		{`1e131071`, 1 << 20, ""},
		{`1e131072`, 1 << 30, "invalid"}, // past numeric's 131,072 digits before the point
		{`1e-16384`, 1 << 30, "invalid"}, // past its 16,383 after
		// jsonb spaces its separators: "[1, 1, ...]".
		{compactOnes, 3000, ""},
		{compactOnes, 2999, "too large"},
	} {
		err := checkEventData([]byte(tc.data), tc.maxSize)
		switch {
		case tc.want == "" && err != nil,
			tc.want == "invalid" && (err == nil || errors.Is(err, errEventTooLarge)),
			tc.want == "too large" && !errors.Is(err, errEventTooLarge):
			t.Errorf("checkEventData(%.40q, %d) = %v, want %s", tc.data, tc.maxSize, err, cmp.Or(tc.want, "accepted"))
		}
	}
}

// The size checkEventData measures is never below what the log measures
// (octet_length(data::text) of the stored jsonb), so a publish the node lets
// into a batch is never refused there for its size; and it is exactly that
// for data without escapes, duplicate keys or negative zeros.
func TestCheckEventDataMeasuresAsTheLogDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.NewStore(t)
	for _, tc := range []struct {
		data  string
		exact bool
	}{
		{`null`, true}, {`true`, true}, {`[1,2,3]`, true},
		{`{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, true},
		{`[1e5, -2.5E+10, 1e-30, 0.0, 12.340, 1.5e-3, 123456e3]`, true},
		{`{"k" : [ 1 , 2 ] , "l" : "x y" }`, true}, {`[1e3000]`, true}, {`[[[[[]]]],{}]`, true},
		{`-0`, false}, {`"é and \u00e9 and \n and \\"`, false}, {`{"a":1,"a":2}`, false},
	} {
		var printed int
		if err := st.Pool.QueryRow(ctx, `SELECT octet_length($1::jsonb::text)`, tc.data).Scan(&printed); err != nil {
			t.Fatalf("%s: %v", tc.data, err)
		}
		if err := checkEventData([]byte(tc.data), printed-1); !errors.Is(err, errEventTooLarge) {
			t.Errorf("%s prints as %d bytes, but checkEventData with a limit of %d says %v", tc.data, printed, printed-1, err)
		}
		if err := checkEventData([]byte(tc.data), printed); tc.exact && err != nil {
			t.Errorf("%s prints as %d bytes, but checkEventData with that limit says %v", tc.data, printed, err)
		}
	}
}
