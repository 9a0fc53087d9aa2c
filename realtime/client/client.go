// Package client holds livepg.js, the page-side client library, and its
// TypeScript declarations, embedded so that every node serves them
// (realtime.Node.Routes mounts them at /livepg.js and /livepg.d.ts). The
// directory is also an npm package a page can vendor: npm pack works here.
package client

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
)

//go:embed livepg.js
var script []byte

//go:embed livepg.d.ts
var declarations []byte

// Script serves livepg.js.
func Script() http.Handler { return serve(script, "text/javascript; charset=utf-8") }

// Declarations serves livepg.d.ts.
func Declarations() http.Handler { return serve(declarations, "application/typescript; charset=utf-8") }

// serve answers with a fixed file: an ETag of its content, so that a page
// revalidates cheaply, and a day's cache (not immutable: the path carries no
// version, and a deploy must reach pages within a day).
func serve(body []byte, contentType string) http.Handler {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "public, max-age=86400")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}
