package client_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/livepg/livepg/realtime/client"
)

// The library is served as a JavaScript module (a browser refuses to run a
// module of another type), cached, and revalidated by its ETag.
func TestScriptIsServedAsACachedModule(t *testing.T) {
	for name, h := range map[string]http.Handler{"livepg.js": client.Script(), "livepg.d.ts": client.Declarations()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+name, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "export") {
			t.Fatalf("%s: %d %q", name, rec.Code, rec.Body.String()[:min(80, rec.Body.Len())])
		}
		ct := rec.Header().Get("Content-Type")
		if name == "livepg.js" && !strings.HasPrefix(ct, "text/javascript") {
			t.Fatalf("%s: Content-Type %q", name, ct)
		}
		if !strings.Contains(rec.Header().Get("Cache-Control"), "max-age=") || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: headers %v", name, rec.Header())
		}
		req := httptest.NewRequest(http.MethodGet, "/"+name, nil)
		req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
		again := httptest.NewRecorder()
		h.ServeHTTP(again, req)
		if again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Fatalf("%s with its ETag: %d, %d bytes", name, again.Code, again.Body.Len())
		}
	}
}
