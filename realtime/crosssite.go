package realtime

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// CheckCrossSite refuses what a page on another site could make a visitor's
// browser send with the visitor's cookies (a cross-site request forgery):
//
//   - an Origin header that is neither the request's own (its scheme and
//     host) nor one of allowed: 403;
//   - no Origin but Sec-Fetch-Site: cross-site: 403;
//   - a body that is not application/json (a form or text/plain post, which
//     a browser sends cross-site without asking first): 415.
//
// A request with no Origin header at all (curl, a script) is not a browser's
// cross-site request and passes. The error is for WriteAuthError. Publishing
// applies it to requests authenticated by the livepg_token cookie (a bearer
// token is not sent by a browser on its own); the demo app to every
// mutation.
func CheckCrossSite(r *http.Request, allowed []string) error {
	if origin := r.Header.Get("Origin"); origin != "" {
		if !originAllowed(r, origin, allowed) {
			return &authError{http.StatusForbidden, "cross-site request refused: origin " + truncate(origin, 100) + " is not allowed (LIVEPG_CORS_ORIGINS lists the origins whose pages may)"}
		}
	} else if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return &authError{http.StatusForbidden, "cross-site request refused"}
	}
	if hasBody(r) {
		ct := r.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &authError{http.StatusUnsupportedMediaType, "the body must be JSON: send Content-Type: application/json (got " + quoteOrNone(truncate(ct, 100)) + ")"}
		}
	}
	return nil
}

// originAllowed reports whether origin is the request's own or allowed.
func originAllowed(r *http.Request, origin string, allowed []string) bool {
	if slices.Contains(allowed, origin) {
		return true
	}
	// The request's own origin, exactly as a browser writes it: "null" (a
	// sandboxed frame, a file) and anything with more than a scheme and a
	// host never match.
	return r.Host != "" && strings.EqualFold(origin, requestScheme(r)+"://"+r.Host)
}

// requestScheme is the scheme the browser used: https when TLS ends here or
// at a proxy in front that says so (Fly's sets X-Forwarded-Proto). A page
// cannot set that header on a cross-site request without a preflight.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		p, _, _ = strings.Cut(p, ",")
		return strings.ToLower(strings.TrimSpace(p))
	}
	return "http"
}

// hasBody reports whether the request carries a body (its length is unknown
// when chunked).
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

func quoteOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return `"` + s + `"`
}

// CheckOrigin reports why s cannot be one of Config.CORSOrigins, or nil. An
// origin is what a browser sends in its Origin header: a scheme (http or
// https), a host and perhaps a port — https://app.example or
// http://localhost:3000 — with no path, and compared as written. "*" is
// refused: browsers refuse a wildcard on requests with credentials, which
// the token cookie needs.
func CheckOrigin(s string) error {
	if s == "*" {
		return errors.New(`origin "*": browsers refuse Access-Control-Allow-Origin: * on requests with credentials (the token cookie); list each origin, such as https://app.example`)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("origin %q: want a scheme and a host, such as https://app.example or http://localhost:3000 (a browser's Origin header always has both, so this would never match)", truncate(s, 100))
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("origin %q: want only a scheme, a host and perhaps a port, such as %s://%s (no path, not even a trailing slash)", truncate(s, 100), u.Scheme, u.Host)
	}
	if strings.ToLower(s) != s {
		return fmt.Errorf("origin %q: write it in lower case, as browsers send it (%s)", truncate(s, 100), strings.ToLower(s))
	}
	return nil
}
