package realtime

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"
)

// Routes mounts the node's HTTP interface: the event stream and publishing.
// With CORSOrigins set, pages on those origins (and only those) may use both
// from the browser, with credentials (the token cookie).
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
		r.Options("/v1/events", func(http.ResponseWriter, *http.Request) {})
		r.Options("/v1/publish", func(http.ResponseWriter, *http.Request) {})
	})
}
