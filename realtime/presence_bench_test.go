package realtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// BenchmarkPresenceJoins: how fast one node writes its pages' joins and
// leaves, and with how many statements. b.N pages join (as streams would,
// through the node's presence), spread over 100 topics; the clock stops
// when the node has read every join back from the log (so every other node
// could have too), then again for the leaves. Reported: joins/s, leaves/s,
// statements per join (flushes; the lease renewal is one statement per
// LIVEPG_PRESENCE_RENEW whatever the number of members) and the WAL the
// joins wrote (the member rows, their events in the log, the indexes), as
// the database's write load. Other databases of the test cluster may write
// WAL meanwhile: run it alone.
//
//	go test -run '^$' -bench BenchmarkPresenceJoins -benchtime 10000x ./realtime
func BenchmarkPresenceJoins(b *testing.B) {
	st := storetest.NewStore(b)
	defer st.Close()
	cfg := Config{ListenURL: st.Pool.Config().ConnString(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cfg.Presence = PresenceConfig{Grace: time.Millisecond, JoinRate: -1, MaxMembers: 1 << 30}
	n, err := NewNode(st, cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer n.Stop()
	p := n.presence
	total := func() int {
		t := 0
		for _, c := range p.counts() {
			t += c
		}
		return t
	}
	wait := func(want int) {
		deadline := time.Now().Add(5 * time.Minute)
		for total() != want {
			if time.Now().After(deadline) {
				b.Fatalf("the node's mirror holds %d members, want %d", total(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	releases := make([]func(), b.N)
	flushes0 := p.flushes.Load()
	wal := func() int64 {
		var lsn int64
		if err := st.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'::pg_lsn`).Scan(&lsn); err != nil {
			b.Fatal(err)
		}
		return lsn
	}
	wal0 := wal()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		m := store.Member{Topic: fmt.Sprintf("boards/%d", i%100), ID: fmt.Sprintf("m%d", i), Sub: fmt.Sprintf("user%d", i)}
		if releases[i], err = p.join("bench", []store.Member{m}); err != nil {
			b.Fatal(err)
		}
	}
	wait(b.N)
	joined := time.Since(start)
	joinFlushes := p.flushes.Load() - flushes0
	wal1 := wal()
	joinWAL := wal1 - wal0
	start = time.Now()
	for _, r := range releases {
		r()
	}
	wait(0)
	left := time.Since(start)
	b.StopTimer()
	leaveWAL := wal() - wal1
	b.ReportMetric(float64(b.N)/joined.Seconds(), "joins/s")
	b.ReportMetric(float64(b.N)/left.Seconds(), "leaves/s")
	b.ReportMetric(float64(joinFlushes)/float64(b.N), "statements/join")
	b.ReportMetric(float64(joinFlushes), "join-statements")
	b.ReportMetric(float64(joinWAL)/float64(b.N), "WAL-bytes/join")
	b.ReportMetric(float64(leaveWAL)/float64(b.N), "WAL-bytes/leave")
}

// BenchmarkPresenceDeadNode: how long the members of a node that stopped
// renewing its lease (killed) stay, and what removing them costs. A dead
// node's b.N members are written with the default lease (15s); a live node
// with the default renewal (5s) expires it. The clock runs from the dead
// node's last renewal until the live node has read every leave back from
// the log: at most the lease plus one renewal interval, plus the work.
//
//	go test -run '^$' -bench BenchmarkPresenceDeadNode -benchtime 10000x ./realtime
func BenchmarkPresenceDeadNode(b *testing.B) {
	st := storetest.NewStore(b)
	defer st.Close()
	ctx := context.Background()
	d := DefaultConfig.Presence
	if b.N == 1 {
		d.LeaseTTL, d.Renew = time.Second, 200*time.Millisecond // a smoke run (.ci/run's -benchtime=1x) stays short
	}
	members := make([]store.Member, b.N)
	for i := range members {
		members[i] = store.Member{Topic: fmt.Sprintf("boards/%d", i%100), ID: fmt.Sprintf("ghost%d", i), Sub: "ghost"}
	}
	if _, err := st.PresenceRenew(ctx, "dead", d.LeaseTTL); err != nil {
		b.Fatal(err)
	}
	if ok, err := st.PresenceFlush(ctx, "dead", members, nil); err != nil || !ok {
		b.Fatal(ok, err)
	}
	if _, err := st.PresenceRenew(ctx, "dead", d.LeaseTTL); err != nil { // its last renewal
		b.Fatal(err)
	}
	lastRenewal := time.Now()
	b.ResetTimer()
	cfg := Config{ListenURL: st.Pool.Config().ConnString(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cfg.Presence = PresenceConfig{LeaseTTL: d.LeaseTTL, Renew: d.Renew}
	n, err := NewNode(st, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer n.Stop()
	deadline := time.Now().Add(5 * time.Minute)
	for len(n.PresenceCounts()) != 0 {
		if time.Now().After(deadline) {
			b.Fatal("the dead node's members never left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(time.Since(lastRenewal).Seconds(), "s-to-leave")
	b.ReportMetric(d.LeaseTTL.Seconds()+d.Renew.Seconds(), "s-bound")
}

// BenchmarkPresenceJoinsOverHTTP: b.N pages each open a stream that joins
// a board's presence (100 boards), 64 at a time, on one node over loopback
// HTTP, and stay; the clock stops when the node has read every join back
// from the log. Reported: joins/s and statements per join. The pages'
// streams are real (lean) SSE streams; each gets its snapshot first.
//
//	go test -run '^$' -bench BenchmarkPresenceJoinsOverHTTP -benchtime 5000x ./realtime
func BenchmarkPresenceJoinsOverHTTP(b *testing.B) {
	st := storetest.NewStore(b)
	defer st.Close()
	cfg := Config{ListenURL: st.Pool.Config().ConnString(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxStreamsPerClient: -1}
	cfg.Presence = PresenceConfig{JoinRate: -1, MaxMembers: 1 << 30}
	n, err := NewNode(st, cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(n.Handler())
	srv.Config.ConnContext = ConnContext
	srv.Start()
	defer func() { n.CloseStreams(); srv.Close(); n.Stop() }()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
	p := n.presence
	flushes0 := p.flushes.Load()
	b.ResetTimer()
	start := time.Now()
	bodies := make(chan io.Closer, b.N)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range b.N {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			q := url.Values{"topic": {fmt.Sprintf("boards/%d", i%100)}, "presence": {fmt.Sprintf("boards/%d", i%100)},
				"presenceKey": {fmt.Sprintf("page-key-%08d", i)}}
			resp, err := client.Get(srv.URL + "/v1/events?" + q.Encode())
			if err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode != http.StatusOK {
				b.Errorf("stream %d: %s", i, resp.Status)
			}
			bodies <- resp.Body
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		t := 0
		for _, c := range p.counts() {
			t += c
		}
		if t == b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the node's mirror holds %d members, want %d", t, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	joined := time.Since(start)
	b.StopTimer()
	statements := p.flushes.Load() - flushes0
	close(bodies)
	for body := range bodies {
		body.Close()
	}
	b.ReportMetric(float64(b.N)/joined.Seconds(), "joins/s")
	b.ReportMetric(float64(statements)/float64(b.N), "statements/join")
	b.ReportMetric(float64(statements), "join-statements")
}
