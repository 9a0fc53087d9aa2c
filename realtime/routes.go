package realtime

import "github.com/go-chi/chi/v5"

// Routes mounts the node's HTTP interface: the event stream and publishing.
func (n *Node) Routes(r chi.Router) {
	r.Get("/v1/events", n.ServeEvents)
	r.Post("/v1/publish", n.ServePublish)
}
