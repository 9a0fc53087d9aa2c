package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A resume run (--backlog N): browsers reconnecting at once after a deploy,
// each from the same point N events back. Before the streams connect the
// run opens one probe stream, publishes a marker event and takes its SSE id
// as the resume point, then publishes the N backlog events and waits until
// the probe has them (so the node has routed them). Every stream then
// connects with Last-Event-ID set to the marker's id and must receive the N
// events, in order, once; the run reports how long it took until every
// stream had all of them, and the database reads the nodes made for them.
//
// The reads are counted from each node's /metrics: livepg_catchup_reads_total
// when the node has it, else the count of the livepg_catchup_batch_events
// histogram (one observation per catch-up read of the log). PostgreSQL's
// own counts (pg_stat_database) were tried and left out: a backend
// publishes them up to about 10 s late, and the nodes' listener polls and
// probes land in the same counters.

// resumeMarker is in the data of the event whose id is the resume point;
// it is not a stamp (parseStamp does not find it), so no stream counts it.
const resumeMarker = "lpgb-resume-point"

// publishBacklog finds the resume point and publishes the backlog; it sets
// r.cfg.LastEventID.
func (r *load) publishBacklog(ctx context.Context, pub publisher, res *result) error {
	cfg := r.cfg
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	probe, err := openProbe(pctx, cfg.URLs[0], r.topics[0])
	if err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	defer probe.close()
	mark := []byte(resumeMarker + ":" + strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := pub.publish(pctx, 0, 0, r.topics[0], mark); err != nil {
		return fmt.Errorf("backlog: publish the resume point: %w", err)
	}
	id, err := probe.waitFor(pctx, func(e probeEvent) bool { return bytes.Contains(e.data, mark) })
	if err != nil {
		return fmt.Errorf("backlog: the resume point's event: %w", err)
	}
	if strings.ContainsAny(id, "\r\n") || id == "" {
		return fmt.Errorf("backlog: the node gave the resume point the id %q", id)
	}
	r.cfg.LastEventID = id
	start := time.Now()
	r.publish(pctx, pub, 0, int64(cfg.Backlog), 0)
	if n := r.publishedTotal(); n != int64(cfg.Backlog) {
		return fmt.Errorf("backlog: %d of %d events published (first error: %v)", n, cfg.Backlog, r.firstPublishError())
	}
	// The last backlog event on the probe's topic: once the probe has it,
	// the node has routed the whole backlog (the log is in commit order
	// and every publish above has committed).
	last := int64((cfg.Backlog - 1) / cfg.Topics * cfg.Topics)
	if _, err := probe.waitFor(pctx, func(e probeEvent) bool { return e.stamped && e.n == last }); err != nil {
		return fmt.Errorf("backlog: the probe stream did not get event %d: %w", last, err)
	}
	fmt.Fprintf(r.out, "backlog: %d events published in %s; the streams resume from id %s\n",
		cfg.Backlog, time.Since(start).Round(time.Millisecond), id)
	return nil
}

// awaitResume waits, after the streams have connected, until every one has
// every backlog event or the drain runs out, and reads the catch-up reads
// the nodes made meanwhile.
func (r *load) awaitResume(ctx context.Context, start time.Time, reads0 float64, cpu0 []procSample, res *result) error {
	want := int64(res.Connected) * int64(r.cfg.Backlog) / int64(r.cfg.Topics)
	if r.cfg.Topics > 1 { // exactly: per topic
		want = 0
		perTopic := make([]int64, len(r.topics))
		for n := 0; n < r.cfg.Backlog; n++ {
			perTopic[n%len(r.topics)]++
		}
		counts := r.streamsPerTopic()
		for t := range perTopic {
			want += perTopic[t] * int64(counts[t])
		}
	}
	deadline := time.Now().Add(r.cfg.Drain)
	for r.delivered() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	got := r.delivered()
	if cpu1, err := readProcs(r.cfg.PIDs); err == nil {
		res.ResumeCPU = sumCPU(cpu1) - sumCPU(cpu0)
	}
	res.ResumeServed = got >= want && res.ConnectErrors == 0
	if got >= want {
		res.ResumeTime = time.Since(start)
	}
	res.CatchUpReads = -1
	if reads1, name := scrapeCatchUpReads(ctx, r.cfg.Metrics); name != "" && res.CatchUpMetric == name {
		res.CatchUpReads = reads1 - reads0
	}
	fmt.Fprintf(r.out, "resume: %d of %d deliveries (%d streams x %d events back) ", got, want, res.Connected, r.cfg.Backlog)
	if res.ResumeTime > 0 {
		fmt.Fprintf(r.out, "all served %s after the first connection attempt", res.ResumeTime.Round(time.Millisecond))
	} else {
		fmt.Fprintf(r.out, "NOT all served within %s", r.cfg.Drain)
	}
	if res.CatchUpReads >= 0 {
		fmt.Fprintf(r.out, "; catch-up reads (%s): %.0f", res.CatchUpMetric, res.CatchUpReads)
	}
	fmt.Fprintln(r.out)
	return nil
}

// streamsPerTopic counts the run's streams per topic, the workers' too.
func (r *load) streamsPerTopic() []int {
	n := make([]int, len(r.topics))
	for _, s := range r.streams {
		n[s.topic]++
	}
	for t, k := range r.remotePerTopic {
		n[t] += k
	}
	return n
}

func (r *load) firstPublishError() error {
	if p := r.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// catchUpCounters are the metrics that count a node's catch-up reads, best
// first: the window's counter, then the count of reads' batch sizes.
var catchUpCounters = []string{"livepg_catchup_reads_total", "livepg_catchup_batch_events_count"}

// scrapeCatchUpReads sums the first of catchUpCounters that every node's
// /metrics has; name is "" when none could be read.
func scrapeCatchUpReads(ctx context.Context, urls []string) (total float64, name string) {
	if len(urls) == 0 {
		return 0, ""
	}
	pages := make([][]byte, len(urls))
	client := &http.Client{Timeout: 10 * time.Second}
	for i, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0, ""
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, ""
		}
		pages[i], err = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, ""
		}
	}
next:
	for _, metric := range catchUpCounters {
		total = 0
		for _, page := range pages {
			v, ok := metricSum(page, metric)
			if !ok {
				continue next
			}
			total += v
		}
		return total, metric
	}
	return 0, ""
}

// metricSum adds up the samples of one metric (any labels) in a Prometheus
// text exposition.
func metricSum(page []byte, metric string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			i := strings.IndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// probe is one stream read through net/http, for the resume point.
type probe struct {
	resp   *http.Response
	events chan probeEvent
	done   chan struct{}
}

type probeEvent struct {
	id      string
	data    []byte
	stamped bool
	n       int64
}

func openProbe(ctx context.Context, base, topic string) (*probe, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/v1/events?topic="+topic, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("probe stream: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("probe stream: %s", resp.Status)
	}
	p := &probe{resp: resp, events: make(chan probeEvent, 1024), done: make(chan struct{})}
	go p.read()
	return p, nil
}

// read parses the probe's stream until it ends (close ends it).
func (p *probe) read() {
	defer close(p.done)
	defer close(p.events)
	sc := bufio.NewScanner(p.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var e probeEvent
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if e.id != "" {
				p.events <- e
			}
			e = probeEvent{}
		case bytes.HasPrefix(line, []byte("id:")):
			e.id = string(bytes.TrimSpace(line[3:]))
		case bytes.HasPrefix(line, []byte("data:")):
			e.data = bytes.Clone(line)
			e.n, _, e.stamped = parseStamp(line)
		}
	}
}

// waitFor returns the id of the first event that matches.
func (p *probe) waitFor(ctx context.Context, match func(probeEvent) bool) (string, error) {
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				return "", errors.New("the probe stream ended")
			}
			if match(e) {
				return e.id, nil
			}
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (p *probe) close() {
	p.resp.Body.Close()
	go func() { // let the reader end, should it be blocked on a send
		for range p.events {
		}
	}()
	<-p.done
}
