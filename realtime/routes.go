package realtime

import (
	"context"
	"net"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"

	"github.com/livepg/livepg/realtime/client"
	"github.com/livepg/livepg/realtime/internal/stream"
)

// Handler is the engine's HTTP interface for a Go application to mount in
// its own router: GET /v1/events (the event streams), POST /v1/publish,
// GET /v1/presence (a topic's members), GET /livepg.js and /livepg.d.ts
// (the page-side client library), and the inspector under /inspect (see
// inspectpage.go).
// It answers other paths with 404 and other methods with 405, each with a
// JSON error body. With plain net/http:
//
//	mux := http.NewServeMux()
//	mux.Handle("/v1/", node.Handler())
//	mux.Handle("/livepg.js", node.Handler())
//	mux.Handle("/inspect", node.Handler())  // the inspector page
//	mux.Handle("/inspect/", node.Handler()) // its script, style and data
//
// Serve it from an http.Server without a WriteTimeout (streams set a
// deadline per write) and register node.CloseStreams with its
// RegisterOnShutdown, so that Shutdown does not wait for streams, and set
// ConnContext to realtime.ConnContext (streams served through net/http then
// size their sockets' send buffers as lean streams do). Give the
// server a ReadHeaderTimeout, an IdleTimeout and, if you like, a
// ReadTimeout (net/http lifts it once a request's body is read, so streams
// are not cut; publishes set their own, BodyTimeout), as
// cmd/livepg does: without them a client may hold a connection, and its
// buffers, for as long as it likes. Streams over HTTP/2 (the server's
// Protocols with unencrypted HTTP/2, as cmd/livepg sets them unless
// LIVEPG_H2C is off) share their connection and are served through net/http
// to their end; StreamConnections counts the connections lean streams took.
func (n *Node) Handler() http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not found: livepg serves GET /v1/events and POST /v1/publish")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	n.Routes(r)
	return r
}

// ConnContext is for http.Server's ConnContext field: it keeps each
// request's connection in its context, where a stream served through
// net/http finds it to limit its socket's send buffer, so that the write
// timeout measures what the client accepts (see internal/stream).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return stream.ConnContext(ctx, c)
}

// Routes mounts the node's HTTP interface (the event stream and publishing,
// the page-side client library at /livepg.js with its declarations at
// /livepg.d.ts, and the inspector at /inspect) on a chi router. With CORSOrigins set, pages on those origins (and only
// those) may use both from the browser, with credentials (the token cookie).
func (n *Node) Routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		if len(n.cfg.CORSOrigins) > 0 {
			r.Use(cors.Handler(cors.Options{
				AllowedOrigins:   n.cfg.CORSOrigins,
				AllowedMethods:   []string{http.MethodGet, http.MethodPost},
				AllowedHeaders:   []string{"Authorization", "Content-Type", "Last-Event-ID"},
				AllowCredentials: true,
				MaxAge:           600,
			}))
		}
		r.Get("/v1/events", n.ServeEvents)
		r.Post("/v1/publish", n.ServePublish)
		r.Get("/v1/presence", n.ServePresence)
		r.Options("/v1/events", func(http.ResponseWriter, *http.Request) {})
		r.Options("/v1/publish", func(http.ResponseWriter, *http.Request) {})
		r.Options("/v1/presence", func(http.ResponseWriter, *http.Request) {})
	})
	// The page-side client library and its TypeScript declarations.
	r.Get("/livepg.js", client.Script().ServeHTTP)
	r.Get("/livepg.d.ts", client.Declarations().ServeHTTP)
	// The inspector page and its endpoints (inspectpage.go).
	n.inspectRoutes(r)
}
