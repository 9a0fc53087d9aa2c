package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepg/livepg/realtime/ssetest"
	"github.com/livepg/livepg/store/storetest"
)

// Connection floods before authentication (issue 11 item 2), against the
// whole server with short timeouts: 200 connections that each announce a
// 1 MiB publish without a token, send all of it but one byte and stall, and
// 500 keep-alive connections that make one request and then sit idle. The
// node's heap stays within a generous bound (the bodies are never read:
// the token is checked first), /healthz answers throughout, and every one
// of the 700 connections is closed by the server (a refused body, the idle
// timeout).
func TestConnectionFloodsStayBoundedAndAreClosed(t *testing.T) {
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{
		"DATABASE_URL": db, "PORT": "0",
		"LIVEPG_HEADER_TIMEOUT": "1s", "LIVEPG_BODY_TIMEOUT": "1s", "LIVEPG_IDLE_TIMEOUT": "1s",
	})
	waitReady(t, base)
	host := strings.TrimPrefix(base, "http://")

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // the test's own: stopped below
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	const flooders, idlers, bodySize = 200, 500, 1 << 20
	body := []byte(`{"topic":"x","data":"` + strings.Repeat("a", bodySize) + `"}`)[:bodySize-1]
	var open atomic.Int64
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	dial := func() net.Conn {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Error(err)
			return nil
		}
		connsMu.Lock()
		conns = append(conns, c)
		connsMu.Unlock()
		open.Add(1)
		return c
	}
	// waitClosed reads c until the server closes it; the client never does.
	waitClosed := func(r io.Reader) {
		defer open.Add(-1)
		_, _ = io.Copy(io.Discard, r)
	}
	for range flooders {
		wg.Go(func() {
			c := dial()
			if c == nil {
				return
			}
			fmt.Fprintf(c, "POST /v1/publish HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", host, bodySize)
			go func() { _, _ = c.Write(body) }() // ends when the server closes c
			waitClosed(c)
		})
	}
	for range idlers {
		wg.Go(func() {
			c := dial()
			if c == nil {
				return
			}
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("idle connection's request: %v", err)
				open.Add(-1)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			waitClosed(br) // keep-alive: open until the idle timeout
		})
	}
	// While the flood is on, the node answers.
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the flood: %d %s", code, body)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute): // generous: the timeouts are 1s
		t.Errorf("connections still open after 3 minutes: %d of %d", open.Load(), flooders+idlers)
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		<-done
	}
	close(stopSampling)
	<-sampled
	connsMu.Lock()
	for _, c := range conns {
		c.Close()
	}
	connsMu.Unlock()
	// The bodies alone would be 200 MiB if they were read; the bound is
	// generous for the connections' own buffers (and the test's client).
	const bound = 96 << 20
	if grew := int64(peak.Load()) - int64(before); grew > bound {
		t.Errorf("heap in use grew by %d MiB under the flood, more than %d MiB", grew>>20, bound>>20)
	}
	t.Logf("heap in use: %d MiB before, %d MiB at the peak", before>>20, peak.Load()>>20)
}

// Beyond LIVEPG_MAX_CONNECTIONS a new connection is answered 503 with
// Retry-After and closed, at once, rather than waiting in the backlog or
// costing the node a descriptor; once a connection closes, new ones are
// served again.
func TestConnectionsBeyondTheBoundAreRefused(t *testing.T) {
	t.Parallel()
	db := storetest.NewDatabase(t)
	base, _ := startServer(t, map[string]string{"DATABASE_URL": db, "PORT": "0", "LIVEPG_MAX_CONNECTIONS": "8", "LIVEPG_IDLE_TIMEOUT": "1h"})
	u, _ := url.Parse(base)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// request sends one request on c and returns the answer's status.
	request := func(c net.Conn) (int, http.Header, error) {
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, nil
	}
	for i := range 8 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if code, _, err := request(c); code != http.StatusOK {
			t.Fatalf("connection %d of 8: %d %v", i+1, code, err)
		}
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	code, h, err := request(c)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("connection 9 of 8: %d %v (Retry-After %q), want 503 with Retry-After", code, err, h.Get("Retry-After"))
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection 9 left open (read %d bytes)", n)
	}
	c.Close()
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		code, _, _ := request(c)
		if code == http.StatusOK {
			held = append(held, c)
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("after one of 8 closed, a new connection still gets %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The server's read and idle timeouts do not touch streams: a stream,
// lean or served through net/http, still gets an event published well
// after every timeout (1s each) has passed.
func TestStreamsOutliveTheServersTimeouts(t *testing.T) {
	t.Parallel()
	for _, lean := range []string{"on", "off"} {
		t.Run("lean="+lean, func(t *testing.T) {
			t.Parallel()
			db := storetest.NewDatabase(t)
			base, _ := startServer(t, map[string]string{
				"DATABASE_URL": db, "PORT": "0", "LIVEPG_LEAN_STREAMS": lean,
				"LIVEPG_HEADER_TIMEOUT": "1s", "LIVEPG_BODY_TIMEOUT": "1s", "LIVEPG_IDLE_TIMEOUT": "1s",
			})
			waitReady(t, base)
			s := ssetest.Open(t, base+"/v1/events?topic=slow", "")
			time.Sleep(4 * time.Second) // past every timeout: a wait, not a measure
			if resp, body := post(t, base+"/v1/publish", `{"topic":"slow","data":1}`, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("publish: %d %s", resp.StatusCode, body)
			}
			ev := s.Next(t, 60*time.Second)
			if ev.Type != "message" || !strings.Contains(ev.Data, `"slow"`) {
				t.Fatalf("got %+v, want the event", ev)
			}
		})
	}
}
