package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Streams over HTTP/2 (--h2c). A run with --h2c opens its streams as
// HTTP/2 streams over cleartext (prior knowledge, as Fly's proxy speaks to
// an app with h2_backend), --streams-per-conn of them on each connection:
// 100,000 streams over a few hundred connections, where HTTP/1.1 needs a
// connection, so a descriptor in the node, for each. Each connection is one
// net/http Transport of its own (so that its streams stay on it), bound to
// one source address and one node; the first stream of a connection opens
// it, the others follow once it is up. Each stream's body is read on a
// goroutine of its own through the same incremental parser as the
// HTTP/1.1 path (an HTTP/2 body has no chunked encoding), counting
// deliveries, losses, duplicates and order alike.

// h2cReadBuffer is each stream's read buffer: events are small, and a
// 100,000-stream run keeps one per stream.
const h2cReadBuffer = 2 << 10

// connectH2C opens the streams over HTTP/2 connections, Concurrent
// attempts at a time, and starts their readers. It returns the failed
// attempts and the connections opened.
func (r *load) connectH2C(ctx context.Context, readers *sync.WaitGroup) (errs, conns int) {
	cfg := r.cfg
	urls := make([]*url.URL, len(cfg.URLs))
	for i, u := range cfg.URLs {
		urls[i], _ = url.Parse(u)
	}
	per := cfg.StreamsPerConn
	var mu sync.Mutex // guards errCount, firstErr, r.streams, r.transports, dials
	var errCount, dials int
	var firstErr error
	sem := make(chan struct{}, cfg.Concurrent)
	words := (cfg.numbered() + 63) / 64
	var wg sync.WaitGroup

	// open opens stream i (this process's index) on client.
	open := func(client *http.Client, u *url.URL, i int) {
		g := r.first + i // the stream's index in the whole run
		s := &stream{index: g, topic: g % len(r.topics), seen: make([]uint64, words)}
		err := s.openH2C(ctx, client, u, "topic="+url.QueryEscape(r.topics[s.topic]), cfg.LastEventID)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errCount++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		r.streams = append(r.streams, s)
		readers.Add(1)
		go func() {
			defer readers.Done()
			s.readBody(r)
		}()
	}

	for first := 0; first < cfg.Streams; first += per {
		n := min(per, cfg.Streams-first)
		gi := r.first/per + first/per // the connection's index in the whole run
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(gi%cfg.Sources+1))}, Timeout: 30 * time.Second}
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{
			Protocols: &protocols,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dials++
				mu.Unlock()
				return d.DialContext(ctx, network, addr)
			},
		}
		mu.Lock()
		r.transports = append(r.transports, tr)
		mu.Unlock()
		client := &http.Client{Transport: tr}
		u := urls[gi%len(urls)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The connection's first stream opens it; the others share it.
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				errCount += n
				mu.Unlock()
				return
			}
			open(client, u, first)
			<-sem
			var group sync.WaitGroup
			for k := 1; k < n; k++ {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					mu.Lock()
					errCount += n - k
					mu.Unlock()
					group.Wait()
					return
				}
				group.Add(1)
				go func() {
					defer group.Done()
					defer func() { <-sem }()
					open(client, u, first+k)
				}()
			}
			group.Wait()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintf(r.out, "first connect error: %v\n", firstErr)
	}
	return errCount, dials
}

// openH2C sends the stream's request through client and waits for its
// answer's head, at most a minute (or until ctx ends); the stream then
// lives until the run closes it.
func (s *stream) openH2C(ctx context.Context, client *http.Client, u *url.URL, query, lastEventID string) error {
	path := u.Path
	if path == "" || path == "/" {
		path = "/v1/events"
	}
	// The stream's own context, which only the run ends; the wait for the
	// head follows the connect deadline.
	sctx, cancel := context.WithCancel(context.Background())
	dctx, dcancel := context.WithTimeout(ctx, 60*time.Second)
	defer dcancel()
	stopWatch := context.AfterFunc(dctx, cancel)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, u.Scheme+"://"+u.Host+path+"?"+query, nil)
	if err != nil {
		cancel()
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", "livepg-bench")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := client.Do(req)
	if !stopWatch() && err == nil {
		err = dctx.Err() // the deadline fired as the head arrived
		resp.Body.Close()
	}
	if err != nil {
		cancel()
		return err
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		resp.Body.Close()
		cancel()
		return fmt.Errorf("status %q over %s", resp.Status, resp.Proto)
	}
	s.body, s.cancel = resp.Body, cancel
	return nil
}

// readBody reads the stream's HTTP/2 body on its own goroutine until it
// ends or the run closes it.
func (s *stream) readBody(r *load) {
	buf := make([]byte, h2cReadBuffer)
	for {
		n, err := s.body.Read(buf)
		if n > 0 {
			s.feed(buf[:n], time.Now(), r)
		}
		if err != nil {
			if s.closing.Load() {
				err = net.ErrClosed // the run closed it: not cut
			}
			s.err = err
			return
		}
	}
}
