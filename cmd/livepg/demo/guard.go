package demo

import (
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/livepg/livepg/realtime"
)

// guard refuses what a page on another site could make a visitor's browser
// send to the mutations, cookies and all (a cross-site request forgery):
//
//   - an Origin header that is neither the app's own (the request's scheme
//     and host) nor one of the allowed origins: 403;
//   - no Origin but Sec-Fetch-Site: cross-site: 403;
//   - a body that is not application/json (a form or text/plain post, which
//     a browser sends cross-site without asking first): 415.
//
// A request with no Origin header at all (curl, a script) is not a browser's
// cross-site request and passes.
func (a *App) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			if !a.originAllowed(r, origin) {
				realtime.WriteError(w, http.StatusForbidden, "cross-site request refused: origin "+origin+" may not change this app's data")
				return
			}
		} else if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			realtime.WriteError(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		if hasBody(r) {
			ct := r.Header.Get("Content-Type")
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				realtime.WriteError(w, http.StatusUnsupportedMediaType, "the body must be JSON: send Content-Type: application/json (got "+quoteOrNone(ct)+")")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// originAllowed reports whether origin is the request's own or allowed.
func (a *App) originAllowed(r *http.Request, origin string) bool {
	if slices.Contains(a.opts.AllowedOrigins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" (a sandboxed frame, a file) or garbage
	}
	return strings.EqualFold(u.Scheme, requestScheme(r)) && strings.EqualFold(u.Host, r.Host)
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
