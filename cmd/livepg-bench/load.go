package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loadConfig is one run of the load generator.
type loadConfig struct {
	URLs       []string // nodes to stream from
	Streams    int
	Topics     int
	TopicBase  string // topics are TopicBase/0, TopicBase/1, ...
	Sources    int    // source addresses 127.0.0.1 .. 127.0.0.Sources
	Concurrent int    // connection attempts in flight
	Reader     string // epoll or goroutine
	Procs      int    // worker processes for the streams; 0: as many as the file limit needs
	// H2C opens the streams as HTTP/2 streams over cleartext,
	// StreamsPerConn on each connection (see h2c.go).
	H2C            bool
	StreamsPerConn int

	Mode        string // sql, http, table, feed or none
	DatabaseURL string // for sql and table
	PublishURL  string // for http; default URLs[0]
	Feed        string // for feed: the ceiling's feed address
	Rate        float64
	Events      int
	Publishers  int

	// Backlog events are published before the streams connect; the
	// streams then resume from just before them (Last-Event-ID), as
	// browsers reconnecting after a deploy do. Their numbers are 0 ..
	// Backlog-1, the live events' Backlog onwards.
	Backlog     int
	LastEventID string   // the resume point (set by the run, passed to workers)
	Metrics     []string // the nodes' /metrics URLs, for their catch-up reads

	Idle    time.Duration // hold the streams idle before publishing
	Drain   time.Duration // wait at most this long for deliveries after the last publish
	Timeout time.Duration // the whole run
	PIDs    []int

	CPUProfile string // write the generator's own CPU profile here
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type pidFlag []int

func (p *pidFlag) String() string { return fmt.Sprint(*p) }
func (p *pidFlag) Set(v string) error {
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		return fmt.Errorf("want a process id, got %q", v)
	}
	*p = append(*p, n)
	return nil
}

func parseLoadFlags(args []string, stderr io.Writer) (loadConfig, error) {
	var c loadConfig
	fs := flag.NewFlagSet("livepg-bench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls multiFlag
	var pids pidFlag
	fs.Var(&urls, "url", "node base URL to open streams on (repeatable; default http://127.0.0.1:8080)")
	fs.IntVar(&c.Streams, "streams", 100, "SSE streams to open")
	fs.IntVar(&c.Topics, "topics", 1, "topics; stream i subscribes to topic i mod topics, event n goes to topic n mod topics")
	fs.StringVar(&c.TopicBase, "topic-base", "bench", "topics are <base>/0, <base>/1, ... (mode table: boards/<id> of boards it creates)")
	fs.IntVar(&c.Sources, "sources", 4, "spread connections over source addresses 127.0.0.1 .. 127.0.0.N")
	fs.IntVar(&c.Concurrent, "connect-concurrency", 256, "connection attempts in flight")
	fs.IntVar(&c.Procs, "procs", 0, "worker processes to open and read the streams (0: this process, or as many as its open-file limit needs)")
	fs.BoolVar(&c.H2C, "h2c", false, "open the streams as HTTP/2 streams over cleartext (prior knowledge; the node serves it unless LIVEPG_H2C=off), --streams-per-conn on each connection, each read on a goroutine of its own")
	fs.IntVar(&c.StreamsPerConn, "streams-per-conn", 250, "with --h2c: streams per HTTP/2 connection (at most the node's LIVEPG_H2C_MAX_STREAMS)")
	fs.StringVar(&c.Reader, "reader", defaultReader(), "how streams are read: epoll (one epoll set per core, Linux) or goroutine (one goroutine per stream)")
	fs.StringVar(&c.Mode, "mode", "sql", "how to publish: sql (livepg.publish), http (POST /v1/publish), table (UPDATE of the demo's cards), feed (the ceiling's --feed), none")
	fs.StringVar(&c.Feed, "feed", "", "for --mode feed: the ceiling's feed address (host:port)")
	fs.IntVar(&c.Backlog, "backlog", 0, "publish this many events before the streams connect, and have every stream resume from just before them (Last-Event-ID); reports the time to serve them all and the nodes' catch-up reads")
	var metrics multiFlag
	fs.Var(&metrics, "metrics", "a node's /metrics URL, for its catch-up reads during a --backlog resume (repeatable; default: each --url's /metrics)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL for modes sql and table")
	fs.StringVar(&c.PublishURL, "publish-url", "", "base URL for mode http (default: the first --url)")
	fs.Float64Var(&c.Rate, "rate", 10, "events per second offered, over all publishers (0: as fast as they go)")
	fs.IntVar(&c.Events, "events", 100, "events to publish in all")
	fs.IntVar(&c.Publishers, "publishers", 1, "concurrent publishers (connections or HTTP clients)")
	fs.DurationVar(&c.Idle, "idle", 0, "hold the streams idle this long after connecting, before publishing")
	fs.DurationVar(&c.Drain, "drain", 30*time.Second, "after the last publish, wait at most this long for every delivery")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "end the whole run after this long, whatever it is doing")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	fs.Var(&pids, "pid", "server process id, for memory per stream and CPU per delivery (repeatable)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.URLs, c.PIDs, c.Metrics = urls, pids, metrics
	if len(c.URLs) == 0 {
		c.URLs = []string{"http://127.0.0.1:8080"}
	}
	if c.Backlog > 0 && len(c.Metrics) == 0 {
		for _, u := range c.URLs {
			c.Metrics = append(c.Metrics, strings.TrimRight(u, "/")+"/metrics")
		}
	}
	return c, c.check()
}

func (c *loadConfig) check() error {
	if c.Reader == "" {
		c.Reader = defaultReader()
	}
	if c.H2C {
		c.Reader = "goroutine" // an HTTP/2 body is read through net/http
		if c.StreamsPerConn < 1 {
			return errors.New("--streams-per-conn: want 1 or more")
		}
	}
	switch {
	case c.Reader != "epoll" && c.Reader != "goroutine":
		return fmt.Errorf("--reader %q: want epoll or goroutine", c.Reader)
	case c.Streams < 0 || c.Topics < 1 || c.Sources < 1 || c.Sources > 254 || c.Concurrent < 1 || c.Procs < 0:
		return errors.New("want --streams >= 0, --topics >= 1, 1 <= --sources <= 254, --connect-concurrency >= 1, --procs >= 0")
	case c.Events < 0 || c.Events > 10_000_000 || c.Backlog < 0 || c.Backlog > 1_000_000 || c.Rate < 0 || c.Publishers < 1:
		return errors.New("want 0 <= --events <= 10000000, 0 <= --backlog <= 1000000, --rate >= 0, --publishers >= 1")
	case c.Backlog > 0 && (c.Mode == "none" || c.Mode == "feed"):
		return errors.New("--backlog needs a node that resumes: --mode sql, http or table")
	case strings.ContainsAny(c.LastEventID, "\r\n"):
		return errors.New("a resume point may not hold a line break")
	case c.Streams > 0 && int64(c.Streams)*int64(c.numbered())/int64(c.Topics) > 4_000_000_000:
		return errors.New("streams x events per topic above 4e9: the generator would need too much memory")
	case c.Timeout <= 0 || c.Drain < 0 || c.Idle < 0:
		return errors.New("want --timeout > 0, --drain >= 0, --idle >= 0")
	}
	switch c.Mode {
	case "sql", "table":
		if c.DatabaseURL == "" {
			return fmt.Errorf("--mode %s needs --database-url", c.Mode)
		}
	case "http":
		if c.PublishURL == "" {
			c.PublishURL = c.URLs[0]
		}
	case "feed":
		if err := checkLoopback(c.Feed); c.Feed == "" || err != nil {
			return fmt.Errorf("--mode feed needs --feed, a loopback host:port")
		}
	case "none":
		c.Events = 0
	default:
		return fmt.Errorf("unknown --mode %q: want sql, http, table, feed or none", c.Mode)
	}
	for _, u := range append(append(append([]string{}, c.URLs...), c.PublishURL), c.Metrics...) {
		if u == "" {
			continue
		}
		parsed, err := url.Parse(u)
		if err != nil || parsed.Scheme != "http" || parsed.Host == "" {
			return fmt.Errorf("url %q: want http://host:port", u)
		}
		if err := checkLoopback(parsed.Host); err != nil {
			return fmt.Errorf("url %q: %w", u, err)
		}
	}
	return nil
}

// checkLoopback refuses a host:port that is not on a loopback address:
// the load generator and the ceiling stay on this machine.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
		return errors.New("the load generator targets loopback addresses only")
	}
	return nil
}

// numbered is how many events of the run carry a number: the backlog's and
// the live ones.
func (c *loadConfig) numbered() int { return c.Backlog + c.Events }

// connections is how many connections the streams need: one each over
// HTTP/1.1, one per StreamsPerConn over HTTP/2.
func (c *loadConfig) connections() int {
	if c.H2C {
		return (c.Streams + c.StreamsPerConn - 1) / c.StreamsPerConn
	}
	return c.Streams
}

// load is one run in progress.
type load struct {
	cfg        loadConfig
	out        io.Writer
	topics     []string
	streams    []*stream
	latency    histogram
	pubLatency histogram
	// committed holds, per event number, when its publish returned (unix
	// nanoseconds; 0 before); afterCommit is each delivery's latency from
	// then (0 for one that arrived before it), so that a run on a machine
	// whose commits stall shows the node's own part. This process's
	// streams only: a worker does not know the commit times.
	committed   []atomic.Int64
	afterCommit histogram
	deliveries  atomic.Int64
	published   []atomic.Int64 // per topic, publishes that succeeded
	pubErrors   atomic.Int64
	firstErr    atomic.Pointer[error]
	pollers     []*poller         // with --reader epoll
	transports  []*http.Transport // with --h2c: one per connection
	conns       int               // connections opened (this process's)
	first       int               // the run's index of this process's first stream (a worker's)

	// With worker processes (see workers.go): the workers, their streams
	// per topic, and once they have stopped, their latencies and CPU time.
	workers        []*worker
	remotePerTopic []int
	remoteLatency  summary
	remoteCPU      time.Duration
}

func defaultReader() string {
	if runtime.GOOS == "linux" {
		return "epoll"
	}
	return "goroutine"
}

// startReaders starts the pollers (--reader epoll); readers waits for them.
func (r *load) startReaders(readers *sync.WaitGroup) error {
	if r.cfg.Reader != "epoll" {
		return nil
	}
	for range max(runtime.GOMAXPROCS(0), 1) {
		p, err := newPoller()
		if err != nil {
			r.closeStreams(readers)
			return err
		}
		r.pollers = append(r.pollers, p)
		readers.Add(1)
		go func() {
			defer readers.Done()
			p.run(r)
		}()
	}
	return nil
}

// closeStreams closes every stream and waits for the readers to end.
func (r *load) closeStreams(readers *sync.WaitGroup) {
	for _, p := range r.pollers {
		p.stop()
	}
	for _, s := range r.streams {
		if s.conn != nil {
			s.conn.Close()
		}
		if s.body != nil {
			s.closing.Store(true)
			s.cancel()
			s.body.Close()
		}
	}
	readers.Wait()
	for _, tr := range r.transports {
		tr.CloseIdleConnections()
	}
}

// result is what a run measured.
type result struct {
	Streams, Connected, ConnectErrors int
	Conns                             int // connections the streams were opened over
	ConnectTime                       time.Duration
	ServerFDs                         int // the servers' (--pid) open files once connected, -1 unknown
	Published, PublishErrors          int64
	PublishTime                       time.Duration
	Deliveries, Expected              int64
	DeliveryTime                      time.Duration // first publish to last receipt
	Latency, PublishLatency           summary
	AfterCommit                       summary // this process's streams' latencies from the publish's return
	Lost, Dups, OutOfOrder, Resets    int64
	Closed                            int // streams that ended before the run closed them
	RSSBeforeKiB, RSSAfterKiB         int64
	ServerCPU                         time.Duration // during publishing and delivery
	ServerWrites                      int64         // write system calls then, -1 if unknown
	ServerWakeups                     int64         // the server's threads' voluntary context switches then, -1 if unknown
	// MachineBusy and MachineTotal are the whole machine's CPU time, busy
	// and in all, over publishing and delivery; OtherCPU is what neither the
	// servers (--pid) nor this generator used of it.
	MachineBusy, MachineTotal, OtherCPU time.Duration
	GeneratorCPU                        time.Duration

	// With --backlog: the resume phase, from the first connection attempt
	// until every stream has every backlog event (ResumeTime, 0 if not
	// all did before the drain ran out), and the nodes' catch-up reads
	// meanwhile (-1 unknown; CatchUpMetric the counter read).
	ResumeTime    time.Duration
	ResumeCPU     time.Duration // the servers' (--pid), over the resume
	ResumeServed  bool
	CatchUpReads  float64
	CatchUpMetric string
}

func runLoad(ctx context.Context, cfg loadConfig, out io.Writer) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	procs := cfg.Procs
	if lim, err := raiseFileLimit(); err != nil {
		fmt.Fprintf(out, "file limit: %v\n", err)
	} else if need := processesFor(cfg.connections(), lim); procs == 0 {
		procs = need
	} else if procs == 1 && need > 0 {
		return nil, fmt.Errorf("%d streams need more open files than one process may have (%d): leave --procs at 0, or give %d or more", cfg.Streams, lim, need)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	r := &load{cfg: cfg, out: out}
	pub, err := newPublisher(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	if r.topics, err = pub.prepare(ctx, cfg.Topics); err != nil {
		return nil, err
	}
	r.published = make([]atomic.Int64, len(r.topics))
	r.committed = make([]atomic.Int64, cfg.numbered())
	res := &result{Streams: cfg.Streams}

	before, err := readProcs(cfg.PIDs)
	if err != nil {
		return nil, err
	}
	res.RSSBeforeKiB = sumRSS(before)
	selfBefore, _ := readProc(syscall.Getpid())

	if cfg.Backlog > 0 {
		if err := r.publishBacklog(ctx, pub, res); err != nil {
			return nil, err
		}
		cfg = r.cfg // with the resume point
	}

	var readers sync.WaitGroup
	if err := r.startReaders(&readers); err != nil {
		return nil, err
	}
	defer r.closeStreams(&readers)
	var reads0 float64
	var resumeCPU0 []procSample
	if cfg.Backlog > 0 {
		reads0, res.CatchUpMetric = scrapeCatchUpReads(ctx, cfg.Metrics)
		if resumeCPU0, err = readProcs(cfg.PIDs); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if procs > 1 {
		defer r.stopWorkers()
		res.Connected, res.ConnectErrors, res.Conns, err = r.connectWorkers(ctx, procs)
		if err != nil {
			return nil, err
		}
	} else {
		res.ConnectErrors = r.connect(ctx, &readers)
		res.Connected, res.Conns = len(r.streams), r.conns
	}
	res.ConnectTime = time.Since(start)
	fmt.Fprintf(out, "connected %d/%d streams in %s (%d errors) over %d connections", res.Connected, cfg.Streams, res.ConnectTime.Round(time.Millisecond), res.ConnectErrors, res.Conns)
	if cfg.H2C {
		fmt.Fprintf(out, " (HTTP/2, up to %d streams each)", cfg.StreamsPerConn)
	}
	if len(r.workers) > 0 {
		fmt.Fprintf(out, " through %d worker processes", len(r.workers))
	}
	fmt.Fprintln(out)
	if cfg.Backlog > 0 {
		if err := r.awaitResume(ctx, start, reads0, resumeCPU0, res); err != nil {
			return nil, err
		}
	}

	if len(cfg.PIDs) > 0 {
		// Let the servers settle (and the generator's own bursts end)
		// before reading their memory.
		if err := sleep(ctx, time.Second); err != nil {
			return nil, err
		}
		after, err := readProcs(cfg.PIDs)
		if err != nil {
			return nil, err
		}
		res.RSSAfterKiB = sumRSS(after)
		res.ServerFDs = countFDs(cfg.PIDs)
	}
	if err := sleep(ctx, cfg.Idle); err != nil {
		return nil, err
	}

	if cfg.Events > 0 {
		cpuBefore, err := readProcs(cfg.PIDs)
		if err != nil {
			return nil, err
		}
		busy0, total0, _ := machineCPU()
		self0, _ := readProc(syscall.Getpid())
		pubStart := time.Now()
		r.publish(ctx, pub, int64(cfg.Backlog), int64(cfg.Events), cfg.Rate)
		res.PublishTime = time.Since(pubStart)
		res.Expected = r.expected()
		fmt.Fprintf(out, "published %d events in %s (%d errors); waiting for %d deliveries\n",
			r.publishedTotal(), res.PublishTime.Round(time.Millisecond), r.pubErrors.Load(), res.Expected)
		deadline := time.Now().Add(cfg.Drain)
		for r.delivered() < res.Expected && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		cpuAfter, err := readProcs(cfg.PIDs)
		if err != nil {
			return nil, err
		}
		res.ServerCPU = sumCPU(cpuAfter) - sumCPU(cpuBefore)
		if busy1, total1, err := machineCPU(); err == nil && len(cfg.PIDs) > 0 {
			self1, _ := readProc(syscall.Getpid())
			res.MachineBusy, res.MachineTotal = busy1-busy0, total1-total0
			res.OtherCPU = max(res.MachineBusy-res.ServerCPU-(self1.cpu-self0.cpu), 0)
		}
		res.ServerWrites = -1
		if a, b := sumWrites(cpuAfter), sumWrites(cpuBefore); a >= 0 && b >= 0 {
			res.ServerWrites = a - b
		}
		res.ServerWakeups = -1
		if a, b := sumWakeups(cpuAfter), sumWakeups(cpuBefore); a >= 0 && b >= 0 {
			res.ServerWakeups = a - b
		}
		if err := r.end(&readers); err != nil {
			return nil, err
		}
		// The workers' CPU time is their whole life's, connecting included:
		// "other" comes out a little low with workers.
		res.OtherCPU = max(res.OtherCPU-r.remoteCPU, 0)
		var last int64
		for _, s := range r.streams {
			last = max(last, s.lastAt)
		}
		if last > 0 {
			res.DeliveryTime = time.Unix(0, last).Sub(pubStart)
		}
	} else {
		res.Expected = r.expected()
		if err := r.end(&readers); err != nil {
			return nil, err
		}
	}
	selfAfter, _ := readProc(syscall.Getpid())
	res.GeneratorCPU = selfAfter.cpu - selfBefore.cpu + r.remoteCPU
	r.collect(res)
	res.report(out, cfg)
	if p := r.firstErr.Load(); p != nil {
		fmt.Fprintf(out, "first publish error: %v\n", *p)
	}
	return res, nil
}

// connect opens the streams, Concurrent at a time, and starts their
// readers; it sets r.conns.
func (r *load) connect(ctx context.Context, readers *sync.WaitGroup) (errs int) {
	cfg := r.cfg
	if cfg.H2C {
		errs, r.conns = r.connectH2C(ctx, readers)
		return errs
	}
	defer func() { r.conns = len(r.streams) }()
	urls := make([]*url.URL, len(cfg.URLs))
	for i, u := range cfg.URLs {
		urls[i], _ = url.Parse(u)
	}
	dialers := make([]*net.Dialer, cfg.Sources)
	for i := range dialers {
		dialers[i] = &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))},
			Timeout:   30 * time.Second,
		}
	}
	var mu sync.Mutex
	var errCount int
	var firstErr error
	sem := make(chan struct{}, cfg.Concurrent)
	var wg sync.WaitGroup
	words := (cfg.numbered() + 63) / 64
	for i := range cfg.Streams {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errCount + cfg.Streams - i
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g := r.first + i // the stream's index in the whole run
			s := &stream{index: g, topic: g % len(r.topics), seen: make([]uint64, words)}
			q := "topic=" + url.QueryEscape(r.topics[s.topic])
			dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			conn, body, chunked, err := dialStream(dctx, dialers[g%len(dialers)], urls[g%len(urls)], q, cfg.LastEventID)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				s.conn, s.parse.chunked = conn, chunked
				if len(r.pollers) > 0 {
					err = r.pollers[g%len(r.pollers)].add(s, body, r)
					if err != nil {
						conn.Close()
					}
				}
			}
			if err != nil {
				errCount++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			r.streams = append(r.streams, s)
			if len(r.pollers) == 0 {
				readers.Add(1)
				go func() {
					defer readers.Done()
					s.readLoop(body, r)
				}()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintf(r.out, "first connect error: %v\n", firstErr)
	}
	return errCount
}

// publish offers count events numbered from first at rate from
// cfg.Publishers publishers: event first+k is due at k/rate seconds after
// the start.
func (r *load) publish(ctx context.Context, pub publisher, first, count int64, rate float64) {
	var next atomic.Int64
	next.Store(first)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range r.cfg.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				n := next.Add(1) - 1
				if n >= first+count || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					due := start.Add(time.Duration(float64(n-first) / rate * float64(time.Second)))
					if sleep(ctx, time.Until(due)) != nil {
						return
					}
				}
				topic := int(n % int64(len(r.topics)))
				sent := time.Now()
				buf = appendStamp(buf[:0], n, sent)
				if err := pub.publish(ctx, w, topic, r.topics[topic], buf); err != nil {
					if r.pubErrors.Add(1) == 1 {
						r.firstErr.Store(&err)
					}
					continue
				}
				done := time.Now()
				r.pubLatency.record(w, done.Sub(sent))
				if n < int64(len(r.committed)) {
					r.committed[n].Store(done.UnixNano())
				}
				r.published[topic].Add(1)
			}
		}()
	}
	wg.Wait()
}

func (r *load) publishedTotal() (n int64) {
	for i := range r.published {
		n += r.published[i].Load()
	}
	return n
}

// expected is the number of deliveries that make the run complete: every
// published event to every stream on its topic.
func (r *load) expected() (n int64) {
	for _, s := range r.streams {
		n += r.published[s.topic].Load()
	}
	for t, streams := range r.remotePerTopic {
		n += int64(streams) * r.published[t].Load()
	}
	return n
}

// delivered counts the deliveries so far, the workers' included.
func (r *load) delivered() int64 {
	n := r.deliveries.Load()
	for _, w := range r.workers {
		n += w.delivered.Load()
	}
	return n
}

// connectWorkers starts procs workers for the streams and waits until each
// has connected its share.
func (r *load) connectWorkers(ctx context.Context, procs int) (connected, errs, conns int, err error) {
	r.workers, err = startWorkers(ctx, r.cfg, r.topics, procs)
	if err != nil {
		return 0, 0, 0, err
	}
	r.remotePerTopic = make([]int, len(r.topics))
	for _, w := range r.workers {
		select {
		case c := <-w.connected:
			if c.err != nil {
				return 0, 0, 0, c.err
			}
			connected += c.streams
			errs += c.errs
			conns += c.conns
			for t, n := range c.perTopic {
				if t < len(r.remotePerTopic) {
					r.remotePerTopic[t] += n
				}
			}
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
	}
	return connected, errs, conns, nil
}

// end closes the streams, this process's and the workers'.
func (r *load) end(readers *sync.WaitGroup) error {
	r.closeStreams(readers)
	return r.stopWorkers()
}

// stopWorkers ends the workers' streams and takes in what they measured;
// the deliveries they counted become the run's. Once done, it does nothing.
func (r *load) stopWorkers() error {
	workers := r.workers
	r.workers = nil
	if len(workers) == 0 {
		return nil
	}
	tellWorkersToStop(workers)
	var errs []error
	for _, w := range workers {
		o := <-w.result
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		r.absorb(o.res)
	}
	r.remotePerTopic = nil // now in r.streams
	return errors.Join(errs...)
}

func (r *load) collect(res *result) {
	res.Published = r.publishedTotal()
	res.PublishErrors = r.pubErrors.Load()
	res.Latency = r.latency.summary()
	res.Latency.add(r.remoteLatency)
	res.PublishLatency = r.pubLatency.summary()
	res.AfterCommit = r.afterCommit.summary()
	for _, s := range r.streams { // the workers' among them, once they have stopped
		res.Deliveries += s.distinct
		res.Lost += max(r.published[s.topic].Load()-s.distinct, 0)
		res.Dups += s.dups
		res.OutOfOrder += s.outOfOrd
		res.Resets += s.resets
		if s.closedEarly() {
			res.Closed++
		}
	}
}

func (res *result) report(out io.Writer, cfg loadConfig) {
	w := bufio.NewWriter(out)
	defer w.Flush()
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
	fmt.Fprintf(w, "mode=%s urls=%s topics=%d rate=%g/s publishers=%d\n", cfg.Mode, strings.Join(cfg.URLs, ","), cfg.Topics, cfg.Rate, cfg.Publishers)
	if res.Published > 0 && res.PublishTime > 0 {
		fmt.Fprintf(w, "publish: %d ok, %d failed, %.0f/s, latency ms p50=%s p99=%s max=%s\n",
			res.Published, res.PublishErrors, float64(res.Published)/res.PublishTime.Seconds(),
			ms(res.PublishLatency.quantile(0.5)), ms(res.PublishLatency.quantile(0.99)), ms(res.PublishLatency.maxDuration()))
	}
	var perStream, cpuPerM float64
	if len(cfg.PIDs) > 0 && res.Connected > 0 {
		perStream = float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(res.Connected)
		fmt.Fprintf(w, "server rss: %d KiB before, %d KiB after connecting: %.1f KiB per stream\n", res.RSSBeforeKiB, res.RSSAfterKiB, perStream)
		if res.ServerFDs >= 0 {
			fmt.Fprintf(w, "server open files once connected: %d (%d connections from the generator)\n", res.ServerFDs, res.Conns)
		}
	}
	if len(cfg.PIDs) > 0 && res.Deliveries > 0 && cfg.Events > 0 { // measured over the live events
		cpuPerM = res.ServerCPU.Seconds() / float64(res.Deliveries) * 1e6
		fmt.Fprintf(w, "server cpu: %.2fs for %d deliveries: %.2fs per million\n", res.ServerCPU.Seconds(), res.Deliveries, cpuPerM)
		if res.MachineTotal > 0 {
			fmt.Fprintf(w, "machine: %.0f%% busy meanwhile; other processes (PostgreSQL, anything else) took %.1fs of %.1fs\n",
				100*res.MachineBusy.Seconds()/res.MachineTotal.Seconds(), res.OtherCPU.Seconds(), res.MachineTotal.Seconds())
		}
		if res.ServerWrites >= 0 {
			fmt.Fprintf(w, "server writes: %d system calls, %.3f per delivery\n", res.ServerWrites, float64(res.ServerWrites)/float64(res.Deliveries))
		}
		if res.ServerWakeups >= 0 {
			fmt.Fprintf(w, "server wake-ups: %d voluntary context switches of its threads, %.4f per delivery\n", res.ServerWakeups, float64(res.ServerWakeups)/float64(res.Deliveries))
		}
	}
	if a := res.AfterCommit; a.count > 0 && cfg.Events > 0 {
		fmt.Fprintf(w, "after the publish returned (%d deliveries of this process): latency ms p50=%s p90=%s p99=%s max=%s\n",
			a.count, ms(a.quantile(0.5)), ms(a.quantile(0.9)), ms(a.quantile(0.99)), ms(a.maxDuration()))
	}
	rate := 0.0
	if res.DeliveryTime > 0 {
		rate = float64(res.Deliveries) / res.DeliveryTime.Seconds()
	}
	if cfg.Backlog > 0 {
		fmt.Fprintf(w, "livepg-bench resume: streams=%d backlog=%d served_all=%v resume_s=%.2f server_cpu_s=%.2f catchup_reads=%.0f (%s)\n",
			res.Connected, cfg.Backlog, res.ResumeServed && res.Lost == 0 && res.Dups == 0 && res.OutOfOrder == 0,
			res.ResumeTime.Seconds(), res.ResumeCPU.Seconds(), res.CatchUpReads, res.CatchUpMetric)
	}
	fmt.Fprintf(w, "livepg-bench: streams=%d/%d connect=%ss published=%d deliveries=%d/%d delivered/s=%.0f latency_ms p50=%s p90=%s p99=%s max=%s lost=%d dup=%d ooo=%d resets=%d closed=%d rss_kib/stream=%.1f cpu_s/M=%.2f gen_cpu_s=%.1f conns=%d\n",
		res.Connected, res.Streams, fmt.Sprintf("%.2f", res.ConnectTime.Seconds()), res.Published, res.Deliveries, res.Expected, rate,
		ms(res.Latency.quantile(0.5)), ms(res.Latency.quantile(0.9)), ms(res.Latency.quantile(0.99)), ms(res.Latency.maxDuration()),
		res.Lost, res.Dups, res.OutOfOrder, res.Resets, res.Closed, perStream, cpuPerM, res.GeneratorCPU.Seconds(), res.Conns)
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns it.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
