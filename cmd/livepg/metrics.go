package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// startMetrics serves GET /metrics on addr, an address of its own
// (LIVEPG_METRICS_ADDR): loopback for a local scraper, or :PORT on Fly,
// whose scraper reaches a machine over the private network ([metrics] in
// fly.toml) while the public proxy only forwards the service port. With
// addr empty it does nothing: /metrics is then on the service port.
func startMetrics(addr string, metrics http.Handler, logger *slog.Logger, stdout io.Writer) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("LIVEPG_METRICS_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			logger.Error("metrics server", "err", err)
		}
	}()
	fmt.Fprintf(stdout, "metrics serving on http://%s/metrics\n", ln.Addr())
	logger.Info("metrics serving", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
