package realtime

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"::ffff:203.0.113.7":   "203.0.113.7",
		"2001:db8::1":          "2001:db8::/64",
		"2001:db8:0:0:ffff::9": "2001:db8::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not an address":       "not an address",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzClientKey: whatever a client or proxy puts in the address header, the
// key is bounded, and two different IPv4 addresses never share one.
func FuzzClientKey(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "2001:db8::1", "", " 1.2.3.4 ", "fe80::1%25eth0", strings.Repeat("a", 500)} {
		f.Add(s)
	}
	n := &Node{cfg: Config{ClientIPHeader: "Fly-Client-IP"}}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/events", nil)
		r.Header.Set("Fly-Client-IP", h)
		key := n.clientKey(r)
		if len(key) > 67 {
			t.Fatalf("key of %d bytes for %q", len(key), h)
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(h)); err == nil && a.Unmap().Is4() && key != a.Unmap().String() {
			t.Fatalf("IPv4 %q keyed as %q", h, key)
		}
	})
}

// FuzzCheckCrossSite: an Origin header is allowed only when it is listed or
// is the request's own scheme and host; no input panics.
func FuzzCheckCrossSite(f *testing.F) {
	for _, s := range []string{"https://app.example", "http://node.example", "null", "", "https://evil.example", "http://NODE.example", "http://node.example:80", "%"} {
		f.Add(s, "application/json")
	}
	f.Fuzz(func(t *testing.T, origin, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "http://node.example/v1/publish", strings.NewReader("{}"))
		r.Header["Origin"] = []string{origin}
		r.Header["Content-Type"] = []string{contentType}
		err := CheckCrossSite(r, []string{"https://app.example"})
		if err != nil || origin == "" {
			return
		}
		own := strings.EqualFold(origin, "http://node.example")
		if origin != "https://app.example" && !own {
			t.Fatalf("origin %q allowed", origin)
		}
	})
}

func TestCheckOrigin(t *testing.T) {
	for in, ok := range map[string]bool{
		"https://app.example":      true,
		"http://localhost:3000":    true,
		"*":                        false,
		"app.example":              false,
		"https://app.example/":     false,
		"https://app.example/x":    false,
		"https://App.example":      false,
		"ftp://app.example":        false,
		"https://user@app.example": false,
		"https://app.example?x=1":  false,
		"":                         false,
	} {
		if err := CheckOrigin(in); (err == nil) != ok {
			t.Errorf("CheckOrigin(%q) = %v, want ok %v", in, err, ok)
		}
	}
}
