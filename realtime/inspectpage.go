package realtime

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The inspector page and its endpoints, served by every node:
//
//	GET /inspect                 the page (HTML; its script and style beside it)
//	GET /inspect/api/nodes       what it shows, as JSON (Inspection)
//	GET /inspect/v1/events?topic=nodes
//	                             the same every second, as a stream livepg.js
//	                             reads (event: nodes), from the node's memory
//	GET /inspect/api/tail?topic=S
//	                             whether the page's token may tail selector S
//	                             (the tail itself is GET /v1/events)
//
// Each needs a token granting inspect ({"inspect": true}), or none on a node
// without an Auth (the local mode). A missing or bad token gets 401, one
// without the grant 403: a JSON error body, or for the page a form to
// paste a token into.

//go:embed inspectweb
var inspectWeb embed.FS

// maxInspectViewers bounds the inspector streams a node serves at once;
// each costs an encoding of the registry a second.
const maxInspectViewers = 16

// inspectCSP keeps the page to its own origin: its own script and style
// files, no inline code, requests only to the node.
const inspectCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (n *Node) inspectRoutes(r chi.Router) {
	r.Get("/inspect", n.serveInspectPage)
	r.Get("/inspect/inspect.js", serveInspectFile("inspect.js", "text/javascript; charset=utf-8"))
	r.Get("/inspect/inspect.css", serveInspectFile("inspect.css", "text/css; charset=utf-8"))
	r.Get("/inspect/api/nodes", n.serveInspectNodes)
	r.Get("/inspect/api/tail", n.serveInspectTail)
	r.Get("/inspect/v1/events", n.serveInspectEvents)
}

func inspectHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", inspectCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer") // the page's URL may carry its token
	h.Set("X-Frame-Options", "DENY")
}

func serveInspectFile(name, contentType string) http.HandlerFunc {
	body, err := inspectWeb.ReadFile("inspectweb/" + name)
	if err != nil {
		panic(err) // embedded: a build without the file is broken
	}
	return func(w http.ResponseWriter, r *http.Request) {
		inspectHeaders(w)
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(body)
	}
}

var inspectDenied = template.Must(template.New("denied").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livepg inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="inspect/inspect.css"></head>
<body><main class="denied"><h1>livepg inspector</h1>
<p class="error">{{.}}</p>
<form method="get" action="inspect"><label>Token granting inspect
<input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Open</button></form>
<p>A token is a JWT signed with the node's key (LIVEPG_TOKEN_KEY) whose claims include <code>"inspect": true</code>: see the README, <em>Inspector</em>.</p>
</main></body></html>
`))

// serveInspectPage is GET /inspect.
func (n *Node) serveInspectPage(w http.ResponseWriter, r *http.Request) {
	inspectHeaders(w)
	if _, err := n.cfg.Auth.AuthorizeInspect(r); err != nil {
		status, msg := authStatus(err)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="livepg"`)
		}
		if !strings.Contains(r.Header.Get("Accept"), "text/html") {
			WriteError(w, status, msg)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_ = inspectDenied.Execute(w, msg)
		return
	}
	body, _ := inspectWeb.ReadFile("inspectweb/index.html")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(body)
}

// authStatus is a refusal's status and message.
func authStatus(err error) (int, string) {
	if ae, ok := err.(*authError); ok {
		return ae.status, ae.msg
	}
	return http.StatusUnauthorized, err.Error()
}

// serveInspectNodes is GET /inspect/api/nodes.
func (n *Node) serveInspectNodes(w http.ResponseWriter, r *http.Request) {
	inspectHeaders(w)
	if _, err := n.cfg.Auth.AuthorizeInspect(r); err != nil {
		WriteAuthError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, n.Inspect())
}

// serveInspectTail is GET /inspect/api/tail?topic=S: it answers whether the
// request's token may tail S, as GET /v1/events would decide, so that the
// page can say why before it opens the stream (an EventSource reads no
// error body).
func (n *Node) serveInspectTail(w http.ResponseWriter, r *http.Request) {
	inspectHeaders(w)
	if _, err := n.cfg.Auth.AuthorizeInspect(r); err != nil {
		WriteAuthError(w, err)
		return
	}
	sels, err := parseSelectors(r.URL.Query()["topic"], n.cfg.MaxTopics)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := n.cfg.Auth.AuthorizeSubscribe(r, sels); err != nil {
		WriteAuthError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// inspectTopic is the one topic of the inspector's stream.
const inspectTopic = "nodes"

// serveInspectEvents is GET /inspect/v1/events?topic=nodes: the
// inspection every second, as livepg.js reads a stream (event: nodes, data
// {"topic": "nodes", "data": <Inspection>}), with no id: each is whole. It
// ends when the client goes, the node shuts down or the token expires
// (event: token-expired, as a stream's).
func (n *Node) serveInspectEvents(w http.ResponseWriter, r *http.Request) {
	inspectHeaders(w)
	expires, err := n.cfg.Auth.AuthorizeInspect(r)
	if err != nil {
		WriteAuthError(w, err)
		return
	}
	if t := r.URL.Query()["topic"]; len(t) != 1 || t[0] != inspectTopic {
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("the inspector's stream has one topic: ?topic=%s", inspectTopic))
		return
	}
	in := n.inspect
	if in.viewers.Add(1) > maxInspectViewers {
		in.viewers.Add(-1)
		w.Header().Set("Retry-After", "10")
		WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("this node serves at most %d inspector streams at once", maxInspectViewers))
		return
	}
	defer in.viewers.Add(-1)
	select {
	case <-n.closing:
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "node is shutting down")
		return
	default:
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	send := func(frame []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		if _, err := w.Write(frame); err != nil {
			return err
		}
		return rc.Flush()
	}
	frame := func() []byte {
		body, _ := json.Marshal(struct {
			Topic string     `json:"topic"`
			Data  Inspection `json:"data"`
		}{inspectTopic, n.Inspect()})
		return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", inspectTopic, body)
	}
	var expiry <-chan time.Time
	if !expires.IsZero() {
		t := time.NewTimer(time.Until(expires))
		defer t.Stop()
		expiry = t.C
	}
	w.WriteHeader(http.StatusOK)
	if send(append(fmt.Appendf(nil, "retry: %d\n\n", n.cfg.Retry.Milliseconds()), frame()...)) != nil {
		return
	}
	tick := time.NewTicker(inspectFresh)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-n.closing:
			return
		case <-expiry:
			_ = send([]byte("event: token-expired\ndata: {\"error\":\"the token of this stream expired: reconnect with a fresh token\"}\n\n"))
			return
		case <-tick.C:
			if send(frame()) != nil {
				return
			}
		}
	}
}
