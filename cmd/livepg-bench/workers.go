package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Several processes. One process may hold only so many open files (about
// 20,000 here, and the hard limit cannot be raised), so a run with more
// streams than that spreads them over worker processes: the same binary,
// run as `livepg-bench worker`, each opening and reading its share. The
// run's own process then publishes, waits and reports for all of them.
//
// A worker speaks in lines on its standard output:
//
//	connected <streams> <errors> <connections> <streams on topic 0> <on topic 1> ...
//	delivered <deliveries so far>              (every 20 ms)
//	result <JSON: each stream's counts, the latency bins, its CPU time>
//
// and ends its streams when its standard input says "stop" or closes.

// workerEnv marks a process started as a worker, so that a test binary
// (whose TestMain looks for it) can act as one too.
const workerEnv = "LIVEPG_BENCH_WORKER"

// workerResult is what a worker reports when it has stopped.
type workerResult struct {
	Streams []workerStream `json:"streams"`
	Bins    []uint64       `json:"bins"`
	Max     uint64         `json:"max"`
	CPU     time.Duration  `json:"cpu"`
}

type workerStream struct {
	Topic    int   `json:"t"`
	Distinct int64 `json:"d"`
	Dups     int64 `json:"u,omitempty"`
	OutOfOrd int64 `json:"o,omitempty"`
	Resets   int64 `json:"r,omitempty"`
	Closed   bool  `json:"c,omitempty"`
	LastAt   int64 `json:"l"`
}

// processesFor is how many worker processes streams need: 0 when this
// process can hold them all.
func processesFor(streams int, fileLimit uint64) int {
	perProcess := int(fileLimit) - 200 // room for the publishers, logs, /proc
	if perProcess < 1 || streams <= perProcess {
		return 0
	}
	return (streams + perProcess - 1) / perProcess
}

// worker is one worker process, seen from the run.
type worker struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	delivered atomic.Int64
	connected chan workerConnected // one value
	result    chan workerOutcome   // one value, when it has stopped
}

type workerConnected struct {
	streams, errs, conns int
	perTopic             []int
	err                  error
}

type workerOutcome struct {
	res workerResult
	err error
}

// startWorkers starts n workers for cfg's streams, split evenly, and waits
// until each has connected its share.
func startWorkers(ctx context.Context, cfg loadConfig, topics []string, n int) ([]*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("workers: %w", err)
	}
	var workers []*worker
	per := (cfg.Streams + n - 1) / n
	for first := 0; first < cfg.Streams; first += per {
		args := []string{"worker", "--first", strconv.Itoa(first), "--streams", strconv.Itoa(min(per, cfg.Streams-first)),
			"--sources", strconv.Itoa(cfg.Sources), "--connect-concurrency", strconv.Itoa(cfg.Concurrent),
			"--reader", cfg.Reader, "--events", strconv.Itoa(cfg.Events), "--timeout", cfg.Timeout.String(),
			"--backlog", strconv.Itoa(cfg.Backlog), "--last-event-id", cfg.LastEventID,
			"--h2c=" + strconv.FormatBool(cfg.H2C), "--streams-per-conn", strconv.Itoa(cfg.StreamsPerConn)}
		for _, u := range cfg.URLs {
			args = append(args, "--url", u)
		}
		for _, t := range topics {
			args = append(args, "--topic", t)
		}
		w, err := startWorker(ctx, exe, args)
		if err != nil {
			tellWorkersToStop(workers)
			return nil, err
		}
		workers = append(workers, w)
	}
	return workers, nil
}

func startWorker(ctx context.Context, exe string, args []string) (*worker, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &worker{cmd: cmd, stdin: stdin, connected: make(chan workerConnected, 1), result: make(chan workerOutcome, 1)}
	go w.read(stdout)
	return w, nil
}

// read follows the worker's lines until it exits.
func (w *worker) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 256<<20) // the result line is long
	connected, done := false, false
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "connected":
			var c workerConnected
			f := strings.Fields(rest)
			if len(f) < 3 {
				c.err = fmt.Errorf("worker: bad line %q", sc.Text())
			} else {
				c.streams, _ = strconv.Atoi(f[0])
				c.errs, _ = strconv.Atoi(f[1])
				c.conns, _ = strconv.Atoi(f[2])
				for _, v := range f[3:] {
					n, _ := strconv.Atoi(v)
					c.perTopic = append(c.perTopic, n)
				}
			}
			connected = true
			w.connected <- c
		case "delivered":
			n, _ := strconv.ParseInt(rest, 10, 64)
			w.delivered.Store(n)
		case "result":
			var o workerOutcome
			o.err = json.Unmarshal([]byte(rest), &o.res)
			done = true
			w.result <- o
		}
	}
	err := w.cmd.Wait()
	if err == nil {
		err = errors.New("worker ended early")
	}
	if !connected {
		w.connected <- workerConnected{err: fmt.Errorf("worker: %w", err)}
	}
	if !done {
		w.result <- workerOutcome{err: fmt.Errorf("worker: %w", err)}
	}
}

// tellWorkersToStop tells the workers to end their streams.
func tellWorkersToStop(workers []*worker) {
	for _, w := range workers {
		_, _ = io.WriteString(w.stdin, "stop\n")
		w.stdin.Close()
	}
}

// runWorker is `livepg-bench worker`: it opens and reads its share of a
// run's streams and reports on stdout (see above), until stdin says stop.
func runWorker(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var cfg loadConfig
	var urls, topics multiFlag
	var first int
	fs := flag.NewFlagSet("livepg-bench worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&urls, "url", "node base URL (repeatable)")
	fs.Var(&topics, "topic", "the run's topics, in order (repeatable)")
	fs.IntVar(&first, "first", 0, "the run's index of this worker's first stream")
	fs.IntVar(&cfg.Streams, "streams", 0, "streams to open")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses")
	fs.IntVar(&cfg.Concurrent, "connect-concurrency", 256, "connection attempts in flight")
	fs.StringVar(&cfg.Reader, "reader", defaultReader(), "epoll or goroutine")
	fs.IntVar(&cfg.Events, "events", 0, "events the run publishes")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "events the run published before connecting")
	fs.StringVar(&cfg.LastEventID, "last-event-id", "", "the streams' resume point")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "end after this long")
	fs.BoolVar(&cfg.H2C, "h2c", false, "open the streams over HTTP/2 (see the run's --h2c)")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 250, "with --h2c: streams per connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(urls) == 0 || len(topics) == 0 || cfg.Streams < 1 || first < 0 {
		return errors.New("worker: want --url, --topic, --streams >= 1 and --first >= 0")
	}
	cfg.URLs, cfg.Topics = urls, len(topics)
	if cfg.H2C {
		cfg.Reader = "goroutine"
		if cfg.StreamsPerConn < 1 {
			return errors.New("worker: want --streams-per-conn >= 1")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := raiseFileLimit(); err != nil {
		return fmt.Errorf("worker: file limit: %w", err)
	}
	stop := make(chan struct{})
	go func() { // ends when stdin says stop or closes (the run is gone)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() && sc.Text() != "stop" {
		}
		close(stop)
	}()
	connectCtx, stopConnecting := context.WithCancel(ctx)
	defer stopConnecting()
	go func() {
		select {
		case <-stop: // told to stop while still connecting
			stopConnecting()
		case <-connectCtx.Done():
		}
	}()

	self0, _ := readProc(syscall.Getpid())
	r := &load{cfg: cfg, out: stderr, topics: topics, first: first}
	var readers sync.WaitGroup
	if err := r.startReaders(&readers); err != nil {
		return err
	}
	defer r.closeStreams(&readers)
	errs := r.connect(connectCtx, &readers)
	perTopic := make([]int, len(topics))
	for _, s := range r.streams {
		perTopic[s.topic]++
	}
	out := bufio.NewWriter(stdout)
	fmt.Fprintf(out, "connected %d %d %d", len(r.streams), errs, r.conns)
	for _, n := range perTopic {
		fmt.Fprintf(out, " %d", n)
	}
	fmt.Fprintln(out)
	if err := out.Flush(); err != nil {
		return err
	}

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-stop:
			break wait
		case <-ctx.Done():
			break wait
		case <-tick.C:
			fmt.Fprintf(out, "delivered %d\n", r.deliveries.Load())
			if err := out.Flush(); err != nil {
				break wait
			}
		}
	}
	r.closeStreams(&readers)
	sum := r.latency.summary()
	res := workerResult{Bins: sum.bins[:], Max: sum.max}
	for _, s := range r.streams {
		res.Streams = append(res.Streams, workerStream{Topic: s.topic, Distinct: s.distinct, Dups: s.dups,
			OutOfOrd: s.outOfOrd, Resets: s.resets, Closed: s.closedEarly(), LastAt: s.lastAt})
	}
	if self1, err := readProc(syscall.Getpid()); err == nil {
		res.CPU = self1.cpu - self0.cpu
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "result %s\n", b)
	return out.Flush()
}

// absorb adds a stopped worker's streams and latencies to the run.
func (r *load) absorb(res workerResult) {
	for _, ws := range res.Streams {
		s := &stream{topic: ws.Topic, distinct: ws.Distinct, dups: ws.Dups, outOfOrd: ws.OutOfOrd,
			resets: ws.Resets, lastAt: ws.LastAt}
		if ws.Closed {
			s.err = io.EOF
		}
		r.streams = append(r.streams, s)
	}
	var sum summary
	copy(sum.bins[:], res.Bins)
	for _, n := range sum.bins {
		sum.count += n
	}
	sum.max = res.Max
	r.remoteLatency.add(sum)
	r.remoteCPU += res.CPU
}
