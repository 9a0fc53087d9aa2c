// Command livepg is the livepg server: live web pages over Server-Sent
// Events, with PostgreSQL as the only infrastructure.
//
//	livepg                     serve (the default)
//	livepg serve
//	livepg migrate up|down|status
//	livepg bus default|logical|status
//	livepg tail --url URL --topic SELECTOR [--topic ...] [--last-event-id N]
//	livepg version
//
// With no DATABASE_URL it starts its own PostgreSQL from the machine's server
// binaries, in a data folder under the working directory.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/livepg/livepg/cmd/livepg/demo"
	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
)

func main() {
	// A closed stdout or stderr (the reader of `livepg | tee log` gone at
	// Ctrl-C) must not kill livepg before it has stopped in order, its
	// local PostgreSQL included: writes there fail instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), shutdownSignals...)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "livepg:", err)
		os.Exit(1)
	}
}

const usage = `usage: livepg [serve | migrate up|down|status | bus default|logical|status | tail --url URL --topic SELECTOR... | version | help]`

// shutdownSignals start a graceful shutdown (fly.toml's kill_signal is one).
var shutdownSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

// run is the whole program; ctx ends on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// Client commands need none of the server's configuration.
	if len(args) > 0 && args[0] == "tail" {
		return tail(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintf(stdout, "livepg %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	logger := newLogger(stderr)
	cfg.Node.Logger = logger
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		if len(args) != 0 {
			return errors.New(usage)
		}
		return serve(ctx, cfg, logger, stdout)
	case "migrate":
		// Arguments first: a typo must not start a local PostgreSQL.
		if len(args) != 1 {
			return errors.New(usage)
		}
		switch args[0] {
		case "up", "down", "status":
		default:
			return fmt.Errorf("unknown migrate direction %q\n%s", args[0], usage)
		}
		return migrate(ctx, cfg, args[0], stdout)
	case "bus":
		if len(args) != 1 {
			return errors.New(usage)
		}
		switch args[0] {
		case store.BusDefault, store.BusLogical, "status":
		default:
			return fmt.Errorf("unknown bus mode %q\n%s", args[0], usage)
		}
		return bus(ctx, cfg, args[0], stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		fmt.Fprintln(stdout, "\nenvironment:")
		for _, v := range envVars() {
			fmt.Fprintf(stdout, "  %-30s %s (default %s)\n", v.name, v.help, v.def)
		}
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

// newLogger logs text to a terminal and JSON lines elsewhere.
func newLogger(w io.Writer) *slog.Logger {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return newLoggerFor(w, true)
		}
	}
	return newLoggerFor(w, false)
}

func newLoggerFor(w io.Writer, text bool) *slog.Logger {
	opts := &slog.HandlerOptions{ReplaceAttr: durationsAsText}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationsAsText writes durations as people read them ("1.5s"), where
// JSON would give nanoseconds.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// database resolves the database to use: DATABASE_URL's, or a local
// PostgreSQL started for this process. stop stops what was started.
func database(ctx context.Context, cfg *Config, stdout io.Writer) (stop func(), err error) {
	if cfg.DatabaseURL != "" {
		if cfg.ListenURL == "" {
			cfg.ListenURL = cfg.DatabaseURL
		}
		return func() {}, nil
	}
	// The local cluster runs the bus at NOTIFY's cost (bus mode
	// commit_timestamp, migrations/00008_bus.sql): track_commit_timestamp is
	// on in the configuration it is created with.
	cluster, err := localpg.Start(ctx, filepath.Join(cfg.DataDir, "pgdata"), localpg.Options{
		InitSettings: map[string]string{"track_commit_timestamp": "on"},
	})
	if err != nil {
		return nil, err
	}
	if cluster.Reused {
		fmt.Fprintf(stdout, "DATABASE_URL is not set: using the local PostgreSQL already running in %s\n", cfg.DataDir)
	} else {
		fmt.Fprintf(stdout, "DATABASE_URL is not set: started a local PostgreSQL in %s\n", cfg.DataDir)
	}
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintln(stdout, "stop local PostgreSQL:", err)
		}
	}
	if err := ensureDatabase(ctx, cluster.URL(), "livepg"); err != nil {
		stop()
		return nil, err
	}
	cfg.DatabaseURL = cluster.DatabaseURL("livepg")
	cfg.ListenURL = cfg.DatabaseURL
	fmt.Fprintf(stdout, "local PostgreSQL: psql %s\n", shellQuote(cfg.DatabaseURL))
	return stop, nil
}

// shellQuote quotes s for bash and zsh alike (a URL's ? and & are special
// to both).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func ensureDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	if !exists {
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" {
			err = nil // another node, starting at the same time, created it
		}
		if err != nil {
			return fmt.Errorf("local postgres: create database: %w", err)
		}
	}
	return nil
}

// openStore opens the pool on the database resolved by database; closeAll
// closes the pool, then stops a local database it started.
func openStore(ctx context.Context, cfg *Config, stdout io.Writer) (st *store.Store, closeAll func(), err error) {
	stopDB, err := database(ctx, cfg, stdout)
	if err != nil {
		return nil, nil, err
	}
	st, err = store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		stopDB()
		if errors.Is(err, store.ErrReplica) {
			err = fmt.Errorf("DATABASE_URL points at a read replica: point it at the primary: %w", err)
		}
		return nil, nil, err
	}
	return st, func() { st.Close(); stopDB() }, nil
}

func migrate(ctx context.Context, cfg Config, direction string, stdout io.Writer) error {
	st, closeAll, err := openStore(ctx, &cfg, stdout)
	if err != nil {
		return err
	}
	defer closeAll()
	switch direction {
	case "up":
		if err := st.MigrateUp(ctx); err != nil {
			return err
		}
		if cfg.Demo {
			return demo.Migrate(ctx, st.Pool)
		}
		return nil
	case "down":
		return st.MigrateDown(ctx)
	default: // "status": run checked the direction
		return st.MigrateStatus(ctx, stdout)
	}
}

// serve runs the server until ctx ends, then shuts down in order: stop
// accepting and end streams with a retry hint (browsers resume on another
// node), stop the listener, close the pool, stop the local database.
func serve(ctx context.Context, cfg Config, logger *slog.Logger, stdout io.Writer) error {
	// The address first: a port in use is reported before any database
	// work.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (PORT or LIVEPG_ADDR chooses another): %w", cfg.Addr, err)
	}
	defer ln.Close()
	local := cfg.DatabaseURL == ""
	st, closeAll, err := openStore(ctx, &cfg, stdout)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := st.MigrateUp(ctx); err != nil {
		return err
	}
	if err := followBus(ctx, st, cfg.Node.Bus, logger); err != nil {
		return err
	}
	app, err := startDemo(ctx, cfg, st, logger)
	if err != nil {
		return err
	}
	cfg.Node.ListenURL = cfg.ListenURL
	cfg.Node.NodeAddress = ln.Addr().String()
	node, err := realtime.NewNode(st, cfg.Node)
	if err != nil {
		return err
	}
	if err := node.Start(ctx); err != nil {
		return err
	}
	defer node.Stop()
	registerProcessMetrics(node.Metrics())
	stopPprof, err := startPprof(cfg.PprofAddr, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	stopMetrics, err := startMetrics(cfg.MetricsAddr, node.MetricsHandler(), logger, stdout)
	if err != nil {
		return err
	}
	defer stopMetrics()

	conns := &connCounter{}
	srv := &http.Server{
		Handler: newRouter(node, app, cfg.MetricsAddr == ""),
		// Headers, then the body (publishes also bound theirs), then the
		// wait for a keep-alive connection's next request: no client holds
		// a connection, or its buffers, for as long as it likes. No
		// WriteTimeout: it would cut every stream; streams set a deadline
		// per write instead. (net/http lifts the read deadline once a
		// request's body is read: streams are not cut by it.)
		ReadHeaderTimeout: cfg.HeaderTimeout,
		ReadTimeout:       cfg.HeaderTimeout + cfg.Node.BodyTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnState:         conns.track,
		// Streams served through net/http size their sockets' send
		// buffers as lean streams do (see realtime.ConnContext).
		ConnContext: realtime.ConnContext,
	}
	configureProtocols(srv, cfg)
	maxConns := cfg.MaxConnections
	if maxConns == 0 {
		maxConns = defaultMaxConnections()
	}
	served := &limitListener{
		Listener: ln,
		open:     func() int64 { return conns.n.Load() + node.StreamConnections() },
		max:      int64(maxConns),
		log:      logger,
	}
	srv.Handler = replayWritesToPrimary(cfg.FlyRegion, cfg.PrimaryRegion)(srv.Handler)
	srv.RegisterOnShutdown(node.CloseStreams)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(served) }()
	addr := ln.Addr().(*net.TCPAddr)
	host := "localhost"
	if !addr.IP.IsLoopback() && !addr.IP.IsUnspecified() {
		host = addr.IP.String()
	}
	fmt.Fprintf(stdout, "livepg serving on http://%s\n", net.JoinHostPort(host, strconv.Itoa(addr.Port)))
	logger.Info("serving", "addr", addr.String())
	if local && cfg.Node.Auth == nil && !addr.IP.IsLoopback() {
		logger.Warn("the local mode (no DATABASE_URL) serves publishing and the demo with no token, and LIVEPG_ADDR opens them beyond this machine", "addr", addr.String())
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("shutdown: streams still open at the deadline", "err", err)
		srv.Close()
	}
	node.Stop()
	logger.Info("stopped")
	return nil
}

// configureProtocols serves HTTP/1.1 and, unless LIVEPG_H2C is off,
// HTTP/2 over cleartext with prior knowledge (Go's own, no Upgrade: h2c):
// what Fly's proxy speaks to an app with h2_backend, and what any proxy
// that multiplexes does. Many streams then share one connection: a node
// holds more streams than its file limit allows connections. Each HTTP/2
// stream is a request of its own to the node: admitted, counted and bounded
// (LIVEPG_MAX_STREAMS, LIVEPG_MAX_STREAMS_PER_CLIENT) as an HTTP/1.1 one
// is, served through net/http (an HTTP/2 connection cannot be taken), and
// cut off after LIVEPG_WRITE_TIMEOUT when its client grants it no flow-
// control window, without stopping the other streams of its connection.
func configureProtocols(srv *http.Server, cfg Config) {
	var p http.Protocols
	p.SetHTTP1(true)
	if cfg.H2C {
		p.SetUnencryptedHTTP2(true)
		srv.HTTP2 = &http.HTTP2Config{
			MaxConcurrentStreams: cfg.H2CMaxStreams,
			// A connection that accepts no bytes at all (its client stopped
			// reading every stream) is closed after the write timeout, as a
			// stuck HTTP/1.1 stream is; a single stuck stream is cut by its
			// own deadline.
			WriteByteTimeout: cfg.Node.WriteTimeout,
		}
	}
	srv.Protocols = &p
}

// startDemo migrates the demo app's tables and builds its handlers when
// LIVEPG_DEMO is on; off, it returns nil and creates nothing.
func startDemo(ctx context.Context, cfg Config, st *store.Store, logger *slog.Logger) (*demo.App, error) {
	if !cfg.Demo {
		return nil, nil
	}
	if err := demo.Migrate(ctx, st.Pool); err != nil {
		return nil, err
	}
	opts := demo.Options{AllowedOrigins: cfg.Node.CORSOrigins, Logger: logger,
		AnonymousPresence: cfg.Node.Auth == nil || cfg.Node.Presence.Anonymous}
	switch {
	case cfg.TokenKey:
		opts.Auth = cfg.Node.Auth
	case !cfg.LocalMode:
		logger.Warn("the demo is on with no token key (LIVEPG_TOKEN_KEY): anyone who reaches this node can read and change its boards; set LIVEPG_DEMO=off, or a token key")
	}
	return demo.New(ctx, st.Pool, opts)
}

// newRouter mounts the node's endpoints, health, metrics (unless they are
// served on an address of their own) and, when app is not nil, the demo app.
func newRouter(node *realtime.Node, app *demo.App, metrics bool) http.Handler {
	r := chi.NewRouter()
	node.Routes(r)
	if metrics {
		r.Method(http.MethodGet, "/metrics", node.MetricsHandler())
	}
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := node.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
		fmt.Fprintln(w, "bus:", node.Bus())
	})
	if app != nil {
		app.Routes(r)
	}
	return r
}
