package promptconn_test

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livepg/livepg/store/promptconn"
)

// BenchmarkRoundTripUnderFanOut measures what the package is for: round
// trips to an echo server on a connection, plain and prompt, while the
// process writes a message to each of 6,000 sockets ten times a second
// (a node's fan-out, scaled down), and reports their p50, p90 and p99.
//
//	go test ./store/promptconn -run '^$' -bench RoundTrip -benchtime 2000x
func BenchmarkRoundTripUnderFanOut(b *testing.B) {
	echo := startEcho(b)
	stop := startFanOut(b, 6000)
	defer stop()
	for _, kind := range []string{"plain", "prompt"} {
		b.Run(kind, func(b *testing.B) {
			c, err := net.Dial("tcp", echo)
			if err != nil {
				b.Fatal(err)
			}
			if kind == "prompt" {
				c = promptconn.Wrap(c)
			}
			defer c.Close()
			buf := make([]byte, 1)
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, err := c.Write([]byte{'x'}); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				time.Sleep(2 * time.Millisecond)
			}
			slices.Sort(lat)
			at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(at(0.5), "p50-µs")
			b.ReportMetric(at(0.9), "p90-µs")
			b.ReportMetric(at(0.99), "p99-µs")
		})
	}
}

// startEcho serves an echo on loopback from this process (its one
// goroutine per connection waits as the node's database would not: it is
// on the same busy process, which only makes the plain case look better).
func startEcho(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c = promptconn.Wrap(c) // the echo answers promptly: the client's wait is measured
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// startFanOut runs n goroutines that each write 100 bytes to a socket of
// their own on every tick (10 a second), and goroutines draining them.
func startFanOut(b *testing.B, n int) (stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		r, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, w, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				if _, err := r.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	gen, closed := 0, false
	for i := 0; i < len(conns); i += 2 {
		w := conns[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, 100)
			seen := 0
			for {
				mu.Lock()
				for gen == seen && !closed {
					cond.Wait()
				}
				seen = gen
				if closed {
					mu.Unlock()
					return
				}
				mu.Unlock()
				if _, err := w.Write(msg); err != nil {
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			mu.Lock()
			gen++
			mu.Unlock()
			cond.Broadcast()
		}
	}()
	return func() {
		close(done)
		mu.Lock()
		closed = true
		mu.Unlock()
		cond.Broadcast()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}
}
