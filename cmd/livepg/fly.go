package main

import (
	"encoding/json"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// version is stamped at build time: -ldflags "-X main.version=..." (see the
// Dockerfile).
var version = "dev"

// replayWritesToPrimary is the middleware for Fly.io regions away from the
// primary database. With FLY_REGION and PRIMARY_REGION set and different,
// it answers every request that may write (any method but GET, HEAD and
// OPTIONS: publishing and every mutation route, whoever adds it) with a
// `fly-replay: region=<primary>` header and no side effect; Fly's proxy
// then replays the request on a machine in the primary region. Reads and
// event streams are served where they land. Elsewhere it passes requests
// through untouched.
//
// The pool reaches the primary from any region (the wiring probe insists),
// so a write served here would still be correct, only slower: a request
// that Fly already replayed (it carries Fly-Replay-Src) is served where it
// lands rather than bounced again, so a region without a machine cannot
// make requests loop.
func replayWritesToPrimary(flyRegion, primaryRegion string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if flyRegion == "" || primaryRegion == "" || flyRegion == primaryRegion {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
				next.ServeHTTP(w, r)
				return
			}
			if r.Header.Get("Fly-Replay-Src") != "" {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Fly-Replay", "region="+primaryRegion)
			// Fly's proxy replaces this response; a client that reaches the
			// node some other way gets a clear error instead.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "writes are served in the primary region " +
				primaryRegion + "; this node runs in " + flyRegion + " (Fly's proxy replays the request there)"})
		})
	}
}

// registerProcessMetrics adds to a node's registry what belongs to the
// program rather than the node: the build and the Go runtime and process.
func registerProcessMetrics(reg *prometheus.Registry) {
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "livepg_build_info",
		Help: "Always 1; the labels say which livepg build runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(
		build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}
