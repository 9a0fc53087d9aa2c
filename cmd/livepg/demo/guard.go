package demo

import (
	"net/http"

	"github.com/livepg/livepg/realtime"
)

// guard refuses what a page on another site could make a visitor's browser
// send to the mutations, cookies and all (a cross-site request forgery): a
// foreign Origin (403), or a body that is not application/json (415). The
// rules are realtime.CheckCrossSite's, which publishing applies to
// cookie-authenticated publishes.
func (a *App) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := realtime.CheckCrossSite(r, a.opts.AllowedOrigins); err != nil {
			realtime.WriteAuthError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
