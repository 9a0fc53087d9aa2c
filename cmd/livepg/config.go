package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
)

// Config is everything livepg reads from its environment, checked up front.
type Config struct {
	// DatabaseURL is the pool's database. Empty: start a local PostgreSQL in
	// DataDir.
	DatabaseURL string
	// ListenURL is the LISTEN connection's database (default DatabaseURL):
	// it must reach the primary directly, not a replica or a transaction
	// pooler.
	ListenURL string
	Port      string
	// Addr is the HTTP server's address: LIVEPG_ADDR, else 127.0.0.1:PORT
	// in the local mode (loopback only: the demo and publishing are open)
	// and :PORT with a DATABASE_URL (all interfaces, as Fly needs).
	Addr            string
	DataDir         string
	ShutdownTimeout time.Duration
	// PprofAddr, when set, serves Go's profiler there (see pprof.go).
	PprofAddr string
	// HeaderTimeout bounds the reading of a request's headers, IdleTimeout
	// how long a keep-alive connection may wait for its next request;
	// Node.BodyTimeout bounds a body (the server's ReadTimeout is both).
	HeaderTimeout, IdleTimeout time.Duration
	// MaxConnections is the most connections the HTTP server holds; beyond
	// it a new connection gets 503 and is closed (see connlimit.go). 0:
	// derived from the file limit.
	MaxConnections int
	// H2C serves HTTP/2 over cleartext (prior knowledge, as Fly's proxy
	// speaks it with h2_backend) beside HTTP/1.1: many streams then share
	// one connection. H2CMaxStreams is the most streams (requests) one
	// HTTP/2 connection may have open at once.
	H2C           bool
	H2CMaxStreams int
	// MetricsAddr, when set, serves /metrics there instead of on Addr:
	// the build and Go versions stay off the public port.
	MetricsAddr string
	// FlyRegion and PrimaryRegion are set by Fly.io (PRIMARY_REGION from
	// fly.toml's primary_region). When both are set and differ, this node
	// runs away from the primary database and answers writes with a
	// fly-replay header instead (see fly.go).
	FlyRegion, PrimaryRegion string
	// LocalMode is the no-configuration mode: no DATABASE_URL was given.
	LocalMode bool
	// Demo serves the demo app and creates its tables (LIVEPG_DEMO).
	Demo bool
	// TokenKey says a token key is configured: the demo then asks its
	// writers for tokens as publishing does.
	TokenKey bool
	Node     realtime.Config
}

// The program's own defaults; the node's are realtime.DefaultConfig's.
const (
	defaultPort            = "8080"
	defaultDataDir         = ".livepg"
	defaultShutdownTimeout = 10 * time.Second
	defaultTokenAlg        = "HS256"
	defaultHeaderTimeout   = 10 * time.Second
	defaultIdleTimeout     = 2 * time.Minute
	// defaultH2CMaxStreams is Go's own default. A connection from a proxy
	// carries many clients' streams, so this is no per-client bound (the
	// node's stream limits apply to each HTTP/2 stream as to each HTTP/1.1
	// request); what it bounds is the work per frame: Go's HTTP/2 server
	// walks a connection's streams to find the next frame to write, and
	// each connection's frames go through one goroutine. With 100,000
	// streams on one node, 1,000 per connection delivered with a median
	// latency of 13.0 s, 250 with 5.3-9.0 s, for about the same CPU
	// (cmd/livepg-bench/BENCHMARKS.md, "100,000 streams"); 250 needs 400
	// connections for them, far inside the file limit. A client that opens
	// more gets its extra streams refused before any handler runs.
	defaultH2CMaxStreams = 250
	maxH2CMaxStreams     = 100_000
)

// defaultConfig is the configuration with no variable set.
func defaultConfig() Config {
	return Config{
		Port:            defaultPort,
		DataDir:         defaultDataDir,
		ShutdownTimeout: defaultShutdownTimeout,
		HeaderTimeout:   defaultHeaderTimeout,
		IdleTimeout:     defaultIdleTimeout,
		H2C:             true,
		H2CMaxStreams:   defaultH2CMaxStreams,
		Node:            realtime.DefaultConfig,
	}
}

// envVar documents one setting; `livepg help` and the README's table are
// written from the same facts. A default that is a value is shown from
// defaultConfig, never written here again.
type envVar struct {
	name, def, help string
}

func envVars() []envVar {
	d := defaultConfig()
	n := d.Node
	return []envVar{
		{"DATABASE_URL", "(none: start a local PostgreSQL)", "PostgreSQL connection string for the pool"},
		{"LISTEN_DATABASE_URL", "DATABASE_URL", "direct connection to the primary for LISTEN (not a replica, not a transaction-pooling PgBouncer)"},
		{"PORT", d.Port, "HTTP port"},
		{"LIVEPG_ADDR", "127.0.0.1:PORT without DATABASE_URL, :PORT with it", "address the HTTP server listens on, such as 0.0.0.0:8080 (all interfaces) or 127.0.0.1:9000"},
		{"LIVEPG_DATA_DIR", d.DataDir, "where the local PostgreSQL keeps its data when DATABASE_URL is unset"},
		{"LIVEPG_RETENTION", showDuration(n.Retention), "how long events stay in the log; older resume points get event: reset"},
		{"LIVEPG_BUFFER", strconv.Itoa(n.Buffer), "events queued per stream before it catches up from the log instead"},
		{"LIVEPG_HEARTBEAT", showDuration(n.Heartbeat), "comment line interval on idle streams"},
		{"LIVEPG_WRITE_TIMEOUT", showDuration(n.WriteTimeout), "a stream that accepts no bytes for this long is cut off"},
		{"LIVEPG_POLL_INTERVAL", showDuration(n.PollInterval), "read the log this often even without a notification"},
		{"LIVEPG_LISTENER_MAX_LIFETIME", showDuration(n.ListenerMaxLifetime), "reconnect the LISTEN connection after this long"},
		{"LIVEPG_SHUTDOWN_TIMEOUT", showDuration(d.ShutdownTimeout), "how long a graceful shutdown may take"},
		{"LIVEPG_MAX_TOPICS", strconv.Itoa(n.MaxTopics), "most topic selectors per stream"},
		{"LIVEPG_MAX_BODY", strconv.FormatInt(n.MaxBody, 10), "largest publish request body, bytes"},
		{"LIVEPG_METRICS_ADDR", "(none: /metrics on the service port)", "serve /metrics on this address instead, such as 127.0.0.1:9091, or :9091 for Fly's private network ([metrics] in fly.toml); the service port's /metrics is then off"},
		{"LIVEPG_PPROF_ADDR", "(off)", "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6060, for load tests"},
		{"LIVEPG_WRITE_COALESCE", showDuration(n.WriteCoalesce), "when the node is behind, a stream that wrote less than this long ago waits out the rest before writing again, so that fast events share a write; 0 never waits"},
		{"LIVEPG_LEAN_STREAMS", onOff(!n.PlainStreams), "serve each HTTP/1.1 stream on its connection taken from net/http (about 13 KiB per idle stream instead of 36); off: through net/http to the end"},
		{"LIVEPG_PUBLISH_BATCH_WINDOW", showDuration(n.PublishBatchWindow), "POST /v1/publish requests arriving within this window commit in one transaction; 0 commits each alone"},
		{"LIVEPG_MAX_EVENT_SIZE", strconv.Itoa(n.MaxEventSize), "largest event data published over HTTP, bytes; the database's own limit, for every writer, is livepg.limits.max_event_size (same default; keep them equal)"},
		{"LIVEPG_BATCH_BYTES", strconv.FormatInt(n.BatchBytes, 10), "most bytes of event data one log read (the reader's, or a stream's catch-up) holds"},
		{"LIVEPG_WINDOW", strconv.FormatInt(n.Window, 10), "bytes of the last events each node keeps in memory, encoded once: a stream that fell behind or a client resuming from inside it is served without a query; 0: no window"},
		{"LIVEPG_CATCHUP_CONNS", strconv.Itoa(n.CatchUpConns), "connections of the catch-up reads' own pool: as many catch-ups read at once, the others queue"},
		{"LIVEPG_CATCHUP_QUEUE", strconv.Itoa(n.CatchUpQueue), "streams that may wait for a catch-up read; beyond it a resuming stream gets 503 with Retry-After"},
		{"LIVEPG_MAX_STREAMS", strconv.Itoa(n.MaxStreams), "most open streams per node; beyond it 503 with Retry-After"},
		{"LIVEPG_MAX_STREAMS_PER_CLIENT", strconv.Itoa(n.MaxStreamsPerClient), "most open streams per client address (an IPv6 /64) on a node; beyond it 429. Behind Fly's proxy (FLY_REGION set) the address is Fly-Client-IP's, else the connection's"},
		{"LIVEPG_MAX_CONNECTIONS", "(the file limit less 128)", "most HTTP connections the node holds; beyond it a new connection gets 503 and is closed"},
		{"LIVEPG_H2C", onOff(d.H2C), "serve HTTP/2 over cleartext (h2c, prior knowledge: what Fly's proxy speaks with h2_backend = true) beside HTTP/1.1, so that many streams share one connection and the node's file limit no longer bounds its streams; off: HTTP/1.1 only"},
		{"LIVEPG_H2C_MAX_STREAMS", strconv.Itoa(d.H2CMaxStreams), "most streams (requests) open at once on one HTTP/2 connection; beyond it the client's new ones are refused"},
		{"LIVEPG_HEADER_TIMEOUT", showDuration(d.HeaderTimeout), "a request's headers must arrive within this"},
		{"LIVEPG_BODY_TIMEOUT", showDuration(n.BodyTimeout), "a request's body must arrive within this (after its headers)"},
		{"LIVEPG_IDLE_TIMEOUT", showDuration(d.IdleTimeout), "a keep-alive connection waiting for its next request is closed after this"},
		{"LIVEPG_TOKEN_ALG", defaultTokenAlg, "signing algorithm tokens must use: HS256, RS256 or ES256"},
		{"LIVEPG_TOKEN_KEY", "(none)", "HS256 secret (32+ bytes), or the PEM public key for RS256/ES256"},
		{"LIVEPG_TOKEN_KEY_FILE", "(none)", "a file holding the token key, instead of LIVEPG_TOKEN_KEY"},
		{"LIVEPG_TOKEN_AUDIENCE", "(none)", "when set, tokens must carry this aud claim"},
		{"LIVEPG_TOKEN_ISSUER", "(none)", "when set, tokens must carry this iss claim"},
		{"LIVEPG_PRIVATE_TOPICS", "(none)", "comma-separated selectors whose topics need a token to subscribe"},
		{"LIVEPG_CORS_ORIGINS", "(none)", "comma-separated origins whose pages may stream and publish, with credentials"},
		{"LIVEPG_BUS", "(the database's mode, livepg.bus)", "the bus mode the node expects: default, or logical (writers do not NOTIFY; one elected node decodes the WAL: needs wal_level=logical and a LISTEN_DATABASE_URL role with REPLICATION). A node that owns the schema switches the database to it; another refuses to start when they differ. See `livepg bus`"},
		{"LIVEPG_PRESENCE_TTL", showDuration(n.Presence.LeaseTTL), "presence: a node's lease on its members runs this long after each renewal; a killed node's members leave within this plus LIVEPG_PRESENCE_RENEW"},
		{"LIVEPG_PRESENCE_RENEW", showDuration(n.Presence.Renew), "presence: how often each node renews its lease (one statement for all its members) and expires dead nodes'"},
		{"LIVEPG_PRESENCE_GRACE", showDuration(n.Presence.Grace), "presence: a member whose stream ended leaves after this, unless its page reconnected (to any node)"},
		{"LIVEPG_PRESENCE_FLUSH", showDuration(n.Presence.Flush), "presence: how often a node writes its pages' joins and leaves, in one statement"},
		{"LIVEPG_PRESENCE_MAX_MEMBERS", strconv.Itoa(n.Presence.MaxMembers), "presence: most members per topic; beyond it a join gets 409"},
		{"LIVEPG_PRESENCE_JOIN_RATE", strconv.Itoa(n.Presence.JoinRate), "presence: most joins per client address per second on a node; beyond it 429; 0: no limit"},
		{"LIVEPG_PRESENCE_ANONYMOUS", "on without a token key, off with one", "presence: on lets a page without a token's sub join, anonymously; off needs a token with a sub"},
		{"LIVEPG_DEMO", "on without DATABASE_URL, off with it", "on: serve the demo board (its pages, /api/boards, its tables in schema livepg_demo); off: none of it"},
		{"FLY_REGION", "(set by Fly.io)", "the region this machine runs in"},
		{"FLY_MACHINE_ID", "(set by Fly.io)", "this machine's id: the node's name in the node registry and the inspector (elsewhere: the host's name and a random suffix)"},
		{"PRIMARY_REGION", "(set by Fly.io from primary_region)", "the primary database's region; elsewhere, writes are replayed there with fly-replay"},
	}
}

// showDuration writes d as one would set it: 24h, 10m, 25ms.
func showDuration(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func loadConfig(getenv func(string) string) (Config, error) {
	c := defaultConfig()
	c.DatabaseURL = getenv("DATABASE_URL")
	c.ListenURL = getenv("LISTEN_DATABASE_URL")
	c.PprofAddr = getenv("LIVEPG_PPROF_ADDR")
	c.FlyRegion = getenv("FLY_REGION")
	if c.FlyRegion != "" {
		// Behind Fly's proxy, which sets Fly-Client-IP to the client's
		// address whatever the client sent: the peer is the proxy.
		c.Node.ClientIPHeader = "Fly-Client-IP"
	}
	c.PrimaryRegion = getenv("PRIMARY_REGION")
	c.Node.NodeRegion = c.FlyRegion
	c.Node.NodeID = getenv("FLY_MACHINE_ID")
	c.LocalMode = c.DatabaseURL == ""
	if s := getenv("PORT"); s != "" {
		c.Port = s
	}
	if p, err := strconv.Atoi(c.Port); err != nil || p < 0 || p > 65535 {
		return c, fmt.Errorf("PORT=%q: want a port number", c.Port)
	}
	switch c.Addr = getenv("LIVEPG_ADDR"); {
	case c.Addr != "":
		_, port, err := net.SplitHostPort(c.Addr)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
			return c, fmt.Errorf("LIVEPG_ADDR=%q: want host:port, such as 127.0.0.1:8080 or 0.0.0.0:8080", c.Addr)
		}
	case c.DatabaseURL == "":
		c.Addr = net.JoinHostPort("127.0.0.1", c.Port)
	default:
		c.Addr = ":" + c.Port
	}
	if s := getenv("LIVEPG_DATA_DIR"); s != "" {
		c.DataDir = s
	}
	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{"LIVEPG_RETENTION", &c.Node.Retention},
		{"LIVEPG_HEARTBEAT", &c.Node.Heartbeat},
		{"LIVEPG_WRITE_TIMEOUT", &c.Node.WriteTimeout},
		{"LIVEPG_POLL_INTERVAL", &c.Node.PollInterval},
		{"LIVEPG_LISTENER_MAX_LIFETIME", &c.Node.ListenerMaxLifetime},
		{"LIVEPG_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout},
		{"LIVEPG_HEADER_TIMEOUT", &c.HeaderTimeout},
		{"LIVEPG_BODY_TIMEOUT", &c.Node.BodyTimeout},
		{"LIVEPG_IDLE_TIMEOUT", &c.IdleTimeout},
		{"LIVEPG_PRESENCE_TTL", &c.Node.Presence.LeaseTTL},
		{"LIVEPG_PRESENCE_RENEW", &c.Node.Presence.Renew},
		{"LIVEPG_PRESENCE_GRACE", &c.Node.Presence.Grace},
		{"LIVEPG_PRESENCE_FLUSH", &c.Node.Presence.Flush},
	}
	for _, v := range durations {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		dur, err := time.ParseDuration(s)
		if err != nil || dur <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive duration such as 30s or 24h", v.name, s)
		}
		*v.dst = dur
	}
	if s := getenv("LIVEPG_WRITE_COALESCE"); s != "" {
		dur, err := time.ParseDuration(s)
		if err != nil || dur < 0 || dur > time.Second {
			return c, fmt.Errorf("LIVEPG_WRITE_COALESCE=%q: want a duration from 0 (never wait) to 1s, such as 25ms", s)
		}
		if dur == 0 {
			dur = -1 // off; a zero field would take the default
		}
		c.Node.WriteCoalesce = dur
	}
	switch s := getenv("LIVEPG_LEAN_STREAMS"); s {
	case "", "on":
	case "off":
		c.Node.PlainStreams = true
	default:
		return c, fmt.Errorf("LIVEPG_LEAN_STREAMS=%q: want on or off", s)
	}
	switch s := getenv("LIVEPG_H2C"); s {
	case "", "on":
	case "off":
		c.H2C = false
	default:
		return c, fmt.Errorf("LIVEPG_H2C=%q: want on or off", s)
	}
	if s := getenv("LIVEPG_PUBLISH_BATCH_WINDOW"); s != "" {
		dur, err := time.ParseDuration(s)
		if err != nil || dur < 0 || dur > time.Second {
			return c, fmt.Errorf("LIVEPG_PUBLISH_BATCH_WINDOW=%q: want a duration from 0 (no batching) to 1s, such as 1ms", s)
		}
		if dur == 0 {
			dur = -1 // off; a zero field would take the default
		}
		c.Node.PublishBatchWindow = dur
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{"LIVEPG_BUFFER", &c.Node.Buffer},
		{"LIVEPG_MAX_TOPICS", &c.Node.MaxTopics},
		{"LIVEPG_MAX_EVENT_SIZE", &c.Node.MaxEventSize},
		{"LIVEPG_MAX_STREAMS", &c.Node.MaxStreams},
		{"LIVEPG_MAX_STREAMS_PER_CLIENT", &c.Node.MaxStreamsPerClient},
		{"LIVEPG_MAX_CONNECTIONS", &c.MaxConnections},
		{"LIVEPG_H2C_MAX_STREAMS", &c.H2CMaxStreams},
		{"LIVEPG_CATCHUP_CONNS", &c.Node.CatchUpConns},
		{"LIVEPG_CATCHUP_QUEUE", &c.Node.CatchUpQueue},
		{"LIVEPG_PRESENCE_MAX_MEMBERS", &c.Node.Presence.MaxMembers},
	}
	for _, v := range ints {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive integer", v.name, s)
		}
		*v.dst = n
	}
	if c.H2CMaxStreams > maxH2CMaxStreams {
		return c, fmt.Errorf("LIVEPG_H2C_MAX_STREAMS=%d: want at most %d (each stream of a connection may hold a handler of the node)", c.H2CMaxStreams, maxH2CMaxStreams)
	}
	if s := getenv("LIVEPG_PRESENCE_JOIN_RATE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return c, fmt.Errorf("LIVEPG_PRESENCE_JOIN_RATE=%q: want a number of joins per second, 0 for no limit", s)
		}
		if n == 0 {
			n = -1 // no limit; a zero field would take the default
		}
		c.Node.Presence.JoinRate = n
	}
	if p := c.Node.Presence; p.LeaseTTL > time.Hour || p.Grace > time.Hour {
		return c, fmt.Errorf("LIVEPG_PRESENCE_TTL (%s) and LIVEPG_PRESENCE_GRACE (%s): at most 1h each (livepg.presence_renew refuses longer leases)", p.LeaseTTL, p.Grace)
	}
	if p := c.Node.Presence; p.Renew >= p.LeaseTTL {
		return c, fmt.Errorf("LIVEPG_PRESENCE_RENEW (%s) must be shorter than LIVEPG_PRESENCE_TTL (%s): a lease renewed no sooner than it ends lets live nodes' members leave", p.Renew, p.LeaseTTL)
	}
	if s := getenv("LIVEPG_BATCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("LIVEPG_BATCH_BYTES=%q: want a positive number of bytes", s)
		}
		c.Node.BatchBytes = n
	}
	if s := getenv("LIVEPG_WINDOW"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return c, fmt.Errorf("LIVEPG_WINDOW=%q: want a number of bytes, such as 67108864 (64 MiB), or 0 for no window", s)
		}
		if n == 0 {
			n = -1 // off; a zero field would take the default
		}
		c.Node.Window = n
	}
	if s := getenv("LIVEPG_MAX_BODY"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("LIVEPG_MAX_BODY=%q: want a positive number of bytes", s)
		}
		c.Node.MaxBody = n
	}
	if s := getenv("LIVEPG_CORS_ORIGINS"); s != "" {
		c.Node.CORSOrigins = splitList(s)
		for _, o := range c.Node.CORSOrigins {
			if err := realtime.CheckOrigin(o); err != nil {
				return c, fmt.Errorf("LIVEPG_CORS_ORIGINS: %w", err)
			}
		}
	}
	if c.MetricsAddr = getenv("LIVEPG_METRICS_ADDR"); c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
			return c, fmt.Errorf("LIVEPG_METRICS_ADDR=%q: want host:port, such as 127.0.0.1:9091, or :9091 for Fly's private network", c.MetricsAddr)
		}
	}
	switch s := getenv("LIVEPG_BUS"); s {
	case "", store.BusDefault, store.BusLogical:
		c.Node.Bus = s
	default:
		return c, fmt.Errorf("LIVEPG_BUS=%q: want %s or %s", s, store.BusDefault, store.BusLogical)
	}
	switch s := getenv("LIVEPG_DEMO"); s {
	case "":
		c.Demo = c.LocalMode
	case "on":
		c.Demo = true
	case "off":
	default:
		return c, fmt.Errorf("LIVEPG_DEMO=%q: want on or off", s)
	}
	auth, hasKey, err := loadAuth(getenv, c.LocalMode)
	if err != nil {
		return c, err
	}
	c.Node.Auth, c.TokenKey = auth, hasKey
	switch s := getenv("LIVEPG_PRESENCE_ANONYMOUS"); s {
	case "":
		c.Node.Presence.Anonymous = !hasKey // no token could carry a sub
	case "on":
		c.Node.Presence.Anonymous = true
	case "off":
	default:
		return c, fmt.Errorf("LIVEPG_PRESENCE_ANONYMOUS=%q: want on or off", s)
	}
	return c, nil
}

// loadAuth reads the token settings. With none of them and no DATABASE_URL
// (the local, no-configuration mode) everything is open; otherwise
// publishing over HTTP needs a token, and so do the private topics. hasKey
// says whether a key to verify tokens with is configured.
func loadAuth(getenv func(string) string, local bool) (auth *realtime.Auth, hasKey bool, err error) {
	alg, key, private := getenv("LIVEPG_TOKEN_ALG"), getenv("LIVEPG_TOKEN_KEY"), getenv("LIVEPG_PRIVATE_TOPICS")
	aud, iss := getenv("LIVEPG_TOKEN_AUDIENCE"), getenv("LIVEPG_TOKEN_ISSUER")
	if file := getenv("LIVEPG_TOKEN_KEY_FILE"); file != "" {
		if key != "" {
			return nil, false, errors.New("set LIVEPG_TOKEN_KEY or LIVEPG_TOKEN_KEY_FILE, not both")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, false, fmt.Errorf("LIVEPG_TOKEN_KEY_FILE: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if alg == "" {
		alg = defaultTokenAlg
	}
	switch alg {
	case "HS256", "RS256", "ES256":
	default:
		// Even with no key: a node told to accept "none" must not start.
		return nil, false, fmt.Errorf("LIVEPG_TOKEN_ALG=%q: want HS256, RS256 or ES256 (unsigned tokens, none, are never accepted)", alg)
	}
	if (aud != "" || iss != "") && key == "" {
		return nil, false, errors.New("LIVEPG_TOKEN_AUDIENCE and LIVEPG_TOKEN_ISSUER need LIVEPG_TOKEN_KEY (or LIVEPG_TOKEN_KEY_FILE): without a key no token is checked")
	}
	if local && key == "" && private == "" {
		return nil, false, nil
	}
	var sels []realtime.Selector
	for _, p := range splitList(private) {
		sel, err := realtime.ParseSelector(p)
		if err != nil {
			return nil, false, fmt.Errorf("LIVEPG_PRIVATE_TOPICS: %w", err)
		}
		sels = append(sels, sel)
	}
	if len(sels) > 0 && key == "" {
		return nil, false, errors.New("LIVEPG_PRIVATE_TOPICS needs LIVEPG_TOKEN_KEY (or LIVEPG_TOKEN_KEY_FILE) to verify tokens")
	}
	auth, err = realtime.NewAuth(alg, key, sels)
	if err != nil {
		return nil, false, fmt.Errorf("LIVEPG_TOKEN_KEY: %w", err)
	}
	auth.Audience, auth.Issuer = aud, iss
	return auth, key != "", nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
