package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/livepg/livepg/cmd/livepg/demo"
	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		// A run's worker process: this binary stands in for livepg-bench.
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "livepg-bench worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	storetest.Main(m)
}

// checkComplete fails unless every published event reached every stream on
// its topic once, in order.
func checkComplete(t *testing.T, res *result, out string) {
	t.Helper()
	if res.Connected != res.Streams || res.Published == 0 || res.PublishErrors != 0 ||
		res.Deliveries != res.Expected || res.Lost != 0 || res.Dups != 0 || res.OutOfOrder != 0 || res.Closed != 0 {
		t.Fatalf("incomplete run: %+v\n%s", res, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "livepg-bench: streams=") {
		t.Fatalf("the summary is not the last line:\n%s", out)
	}
}

func TestLoadAgainstCeiling(t *testing.T) {
	t.Parallel()
	// Chunked bodies (net/http) and plain ones (hijacked), read both ways.
	for _, tc := range []struct {
		hijack bool
		reader string
	}{{false, "epoll"}, {true, "epoll"}, {false, "goroutine"}, {true, "goroutine"}} {
		srv := httptest.NewServer(newCeiling(ceilingConfig{Buffer: 1024, Heartbeat: time.Second, Hijack: tc.hijack}).routes())
		t.Cleanup(srv.Close)
		cfg := loadConfig{URLs: []string{srv.URL}, Streams: 30, Topics: 3, TopicBase: "c", Sources: 2, Concurrent: 8,
			Mode: "http", Rate: 0, Events: 60, Publishers: 4, Drain: 30 * time.Second, Timeout: time.Minute, Reader: tc.reader}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := runLoad(context.Background(), cfg, &out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("hijack %v, reader %s", tc.hijack, tc.reader)
		checkComplete(t, res, out.String())
	}
}

// The ceiling's feed: events written as lines, published a read at a time
// as batches, reach every stream on their topic once, in order, on both of
// its stream paths; a bad line ends only its own feed connection.
func TestLoadThroughTheCeilingsFeed(t *testing.T) {
	t.Parallel()
	for _, hijack := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		// Listeners made here, on ports of their own: a port picked and
		// let go first could be taken by a parallel test meanwhile.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr, feed := ln.Addr().String(), fln.Addr().String()
		done := make(chan error, 1)
		go func() {
			done <- serveCeilingOn(ctx, ceilingConfig{Addr: addr, Feed: feed, Buffer: 256, Heartbeat: time.Second, Lifetime: time.Minute, Hijack: hijack}, ln, fln, io.Discard)
		}()
		// A bad line first, on a connection of its own: the ceiling drops it.
		if c, err := net.Dial("tcp", feed); err == nil {
			fmt.Fprintf(c, "no-type-or-data\nf/0 bench {\"b\":\"%s\"}\n", appendStamp(nil, 0, time.Now()))
			c.Close()
		}
		cfg := loadConfig{URLs: []string{"http://" + addr}, Streams: 30, Topics: 3, TopicBase: "f", Sources: 2, Concurrent: 8,
			Mode: "feed", Feed: feed, Rate: 0, Events: 600, Publishers: 2, Drain: 30 * time.Second, Timeout: time.Minute}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := runLoad(ctx, cfg, &out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("hijack %v", hijack)
		checkComplete(t, res, out.String())
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestFeedLines(t *testing.T) {
	t.Parallel()
	for line, ok := range map[string]bool{
		"t/1 bench {\"b\":1}\n": true, "t/1 bench null\r\n": true, "t/1 bench\n": false, "t/1 bench {\n": false,
		" bench {}\n": false, "t/1  {}\n": false, "\n": false,
	} {
		if _, got := parseFeedLine([]byte(line)); got != ok {
			t.Errorf("parseFeedLine(%q) ok = %v, want %v", line, got, ok)
		}
	}
}

// startTestNode starts a livepg node on db behind a test server, with its
// /metrics, and returns the server's URL. window is realtime.Config.Window
// (0: the default, negative: none).
func startTestNode(t *testing.T, db string, window int64) string {
	t.Helper()
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Window: window, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	node.Routes(r)
	r.Method(http.MethodGet, "/metrics", node.MetricsHandler())
	srv := httptest.NewUnstartedServer(r)
	// HTTP/1.1 and HTTP/2 over cleartext, as cmd/livepg serves.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	srv.Start()
	t.Cleanup(func() { node.CloseStreams(); srv.Close(); node.Stop() })
	deadline := time.Now().Add(30 * time.Second)
	for node.Ready(context.Background()) != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return srv.URL
}

// --h2c: streams opened as HTTP/2 streams, --streams-per-conn on each
// connection, in this process and through worker processes, get every
// event once, in order, and a resume from a backlog too.
func TestLoadOverH2C(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	url := startTestNode(t, db, 0)
	for _, tc := range []struct {
		name           string
		procs, backlog int
		conns          int
	}{{"one process", 0, 0, 3}, {"two workers", 2, 0, 4}, {"resume", 0, 30, 3}} {
		cfg := loadConfig{URLs: []string{url}, Streams: 40, Topics: 2, TopicBase: "h2c-" + strings.ReplaceAll(tc.name, " ", "-"), Sources: 2, Concurrent: 8,
			Procs: tc.procs, H2C: true, StreamsPerConn: 15, Mode: "sql", DatabaseURL: db, Rate: 200, Events: 20, Backlog: tc.backlog,
			Publishers: 2, Drain: time.Minute, Timeout: 2 * time.Minute}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := runLoad(context.Background(), cfg, &out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out.String())
		}
		checkComplete(t, res, out.String())
		if res.Conns != tc.conns || res.Deliveries != int64(40*(20+tc.backlog)/2) {
			t.Fatalf("%s: %d deliveries over %d connections, want %d over %d:\n%s", tc.name, res.Deliveries, res.Conns, 40*(20+tc.backlog)/2, tc.conns, out.String())
		}
	}
}

// A resume run: streams that connect from a point before a backlog get
// all of it once, in order, then the live events; the run counts the
// node's catch-up reads for them and reports the resume. With no window
// the node reads the log for them; with its window (the default) at most
// a handful of reads serve all 40.
func TestResumeFromABacklog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		window int64
	}{{"no window", -1}, {"window", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testResumeFromABacklog(t, tc.window)
		})
	}
}

func testResumeFromABacklog(t *testing.T, window int64) {
	db := storetest.NewDatabase(t)
	url := startTestNode(t, db, window)
	cfg := loadConfig{URLs: []string{url}, Streams: 40, Topics: 2, TopicBase: "resume", Sources: 2, Concurrent: 40,
		Mode: "sql", DatabaseURL: db, Rate: 200, Events: 20, Backlog: 300, Publishers: 4,
		Metrics: []string{url + "/metrics"}, Drain: time.Minute, Timeout: 3 * time.Minute}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := runLoad(context.Background(), cfg, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkComplete(t, res, out.String())
	if res.Published != 320 || res.Deliveries != 40*320/2 || !res.ResumeServed || res.ResumeTime <= 0 {
		t.Fatalf("resume not served: %+v\n%s", res, out.String())
	}
	if res.CatchUpMetric != "livepg_catchup_reads_total" {
		t.Fatalf("catch-up reads counted with %q, want livepg_catchup_reads_total:\n%s", res.CatchUpMetric, out.String())
	}
	if window < 0 && res.CatchUpReads < 40 {
		t.Fatalf("%v catch-up reads for 40 resuming streams with no window, want one or more each:\n%s", res.CatchUpReads, out.String())
	}
	if window >= 0 && res.CatchUpReads > 5 {
		t.Fatalf("%v catch-up reads for 40 streams resuming inside the window, want at most 5:\n%s", res.CatchUpReads, out.String())
	}
	if res.Latency.count != 40*20/2 { // the live events' latencies only
		t.Fatalf("%d latencies for %d live deliveries:\n%s", res.Latency.count, 40*20/2, out.String())
	}
	// Each live delivery's latency after its commit returned is part of
	// its latency from the send.
	if res.AfterCommit.count != res.Latency.count || res.AfterCommit.maxDuration() > res.Latency.maxDuration() {
		t.Fatalf("after the commit: %d latencies, max %s; from the send: %d, max %s",
			res.AfterCommit.count, res.AfterCommit.maxDuration(), res.Latency.count, res.Latency.maxDuration())
	}
	if !strings.Contains(out.String(), "livepg-bench resume: streams=40 backlog=300 served_all=true") {
		t.Fatalf("no resume summary:\n%s", out.String())
	}
}

func TestLoadAgainstLivepgInEveryMode(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	migrateDemo(t, db) // the table mode updates the demo's cards
	var urls []string
	for range 2 { // two nodes on one database
		st, err := store.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		node, err := realtime.NewNode(st, realtime.Config{ListenURL: db, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		r := chi.NewRouter()
		node.Routes(r)
		srv := httptest.NewServer(r)
		t.Cleanup(func() { node.CloseStreams(); srv.Close(); node.Stop() })
		deadline := time.Now().Add(30 * time.Second)
		for node.Ready(context.Background()) != nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		urls = append(urls, srv.URL)
	}
	for _, mode := range []string{"sql", "http", "table"} {
		cfg := loadConfig{URLs: urls, Streams: 20, Topics: 2, TopicBase: "bench-" + mode, Sources: 3, Concurrent: 8,
			Mode: mode, DatabaseURL: db, Rate: 200, Events: 40, Publishers: 2, Drain: 30 * time.Second, Timeout: time.Minute}
		if err := cfg.check(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := runLoad(context.Background(), cfg, &out)
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		checkComplete(t, res, out.String())
	}
}

func TestStampRoundTrip(t *testing.T) {
	t.Parallel()
	sent := time.Unix(1700000000, 123456789)
	line := append([]byte(`data: {"topic":"x","data":{"new":{"text":"`), appendStamp(nil, 4711, sent)...)
	line = append(line, `"}}}`...)
	n, ns, ok := parseStamp(line)
	if !ok || n != 4711 || ns != sent.UnixNano() {
		t.Fatalf("parseStamp = %d, %d, %v", n, ns, ok)
	}
	if _, _, ok := parseStamp([]byte("data: {}")); ok {
		t.Fatal("found a stamp where there is none")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(i, time.Duration(i)*time.Millisecond)
	}
	s := h.summary()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got := s.quantile(c.q)
		if got < c.want*96/100 || got > c.want*104/100 {
			t.Errorf("quantile(%g) = %s, want about %s", c.q, got, c.want)
		}
	}
	if s.maxDuration() != time.Second {
		t.Errorf("max = %s", s.maxDuration())
	}
}

// The parser gives the same events however the body is cut into reads,
// chunked or not: every stamped event once, in order, resets counted, and
// the end of a chunked body noticed.
func TestParserIsIndifferentToReadBoundaries(t *testing.T) {
	var body bytes.Buffer
	body.WriteString("retry: 1000\n\n: livepg\n\n")
	for n := range 12 {
		fmt.Fprintf(&body, "id: %d\nevent: message\ndata: {\"topic\":\"t\",\"data\":\"%s\"}\n\n", 100+n,
			appendStamp(nil, int64(n), time.Now()))
		if n == 5 {
			body.WriteString("id: 105\nevent: reset\ndata: {}\n\n: heartbeat\n\n")
		}
	}
	plain := body.Bytes()
	var chunked bytes.Buffer
	for rest := plain; len(rest) > 0; {
		k := min(len(rest), 37)
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", k, rest[:k])
		rest = rest[k:]
	}
	chunked.WriteString("0\r\n\r\n")

	for _, tc := range []struct {
		name    string
		body    []byte
		chunked bool
	}{{"plain", plain, false}, {"chunked", chunked.Bytes(), true}} {
		for _, size := range []int{1, 2, 3, 7, 64, 1 << 20} {
			r := &load{published: make([]atomic.Int64, 1)}
			s := &stream{seen: make([]uint64, 1)}
			s.parse.chunked = tc.chunked
			ended := false
			for rest := tc.body; len(rest) > 0 && !ended; {
				k := min(len(rest), size)
				ended = !s.feed(rest[:k], time.Now(), r)
				rest = rest[k:]
			}
			if s.distinct != 12 || s.dups != 0 || s.outOfOrd != 0 || s.resets != 1 || s.lastSeq != 111 {
				t.Errorf("%s in reads of %d: distinct %d dups %d out of order %d resets %d last %d",
					tc.name, size, s.distinct, s.dups, s.outOfOrd, s.resets, s.lastSeq)
			}
			if tc.chunked && (!ended || s.err != io.EOF) {
				t.Errorf("%s in reads of %d: end not seen (err %v)", tc.name, size, s.err)
			}
		}
	}
}

// A run spread over worker processes (as one with more streams than a
// process may hold open is) delivers and counts as one that is not.
func TestLoadThroughWorkerProcesses(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newCeiling(ceilingConfig{Buffer: 1024, Heartbeat: time.Second, Hijack: true}).routes())
	t.Cleanup(srv.Close)
	cfg := loadConfig{URLs: []string{srv.URL}, Streams: 41, Topics: 3, TopicBase: "w", Sources: 2, Concurrent: 8, Procs: 3,
		Mode: "http", Rate: 0, Events: 60, Publishers: 4, Drain: 30 * time.Second, Timeout: time.Minute}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := runLoad(context.Background(), cfg, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkComplete(t, res, out.String())
	if !strings.Contains(out.String(), "through 3 worker processes") || res.Latency.count != uint64(res.Deliveries) {
		t.Fatalf("latencies %d for %d deliveries:\n%s", res.Latency.count, res.Deliveries, out.String())
	}
}

func TestProcessesForTheFileLimit(t *testing.T) {
	for _, c := range []struct {
		streams int
		limit   uint64
		want    int
	}{{100, 20000, 0}, {19800, 20000, 0}, {19801, 20000, 2}, {45000, 20000, 3}, {10, 100, 0}} {
		if got := processesFor(c.streams, c.limit); got != c.want {
			t.Errorf("processesFor(%d, %d) = %d, want %d", c.streams, c.limit, got, c.want)
		}
	}
}

// migrateDemo creates the demo's tables on db.
func migrateDemo(t *testing.T, db string) {
	t.Helper()
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := demo.Migrate(context.Background(), st.Pool); err != nil {
		t.Fatal(err)
	}
}

// The wake-ups a run reports are every thread's, not only the main
// thread's: a process whose threads sleep and wake counts them.
func TestWakeupsCountEveryThread(t *testing.T) {
	before, err := readProc(os.Getpid())
	if err != nil || before.wakeups < 0 {
		t.Fatalf("read wake-ups: %v, %d", err, before.wakeups)
	}
	for range 20 {
		time.Sleep(5 * time.Millisecond) // every thread idle: they sleep, and wake for the next
	}
	after, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.wakeups <= before.wakeups {
		t.Fatalf("wake-ups %d then %d: sleeping threads were not counted", before.wakeups, after.wakeups)
	}
}
