package stream

import (
	"net"
	"sync"
	"testing"
	"time"
)

// The watcher calls a connection's gone function when its client closes,
// also when the client closed before the connection was watched, and never
// for a client that stays or a connection no longer watched.
func TestClientWatchNoticesClientsThatLeave(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := newClientWatch()
	if err != nil {
		t.Fatal(err)
	}

	const n = 40
	var mu sync.Mutex
	gone := map[int]int{}
	clients := make([]net.Conn, n)
	servers := make([]net.Conn, n)
	unwatch := make([]func(), n)
	for i := range n {
		if clients[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
		if servers[i], err = ln.Accept(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			clients[0].Close() // gone before it is watched
			time.Sleep(50 * time.Millisecond)
		}
		unwatch[i], err = w.watch(servers[i], func() {
			mu.Lock()
			gone[i]++
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every third client leaves (and the first); the second connection is
	// no longer watched when its client leaves.
	unwatch[1]()
	leaving := map[int]bool{0: true}
	for i := 3; i < n; i += 3 {
		leaving[i] = true
		clients[i].Close()
	}
	clients[1].Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(gone)
		mu.Unlock()
		if got >= len(leaving) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a wrong call to show up
	mu.Lock()
	for i := range n {
		want := 0
		if leaving[i] {
			want = 1
		}
		if gone[i] != want {
			t.Errorf("connection %d: gone called %d times, want %d", i, gone[i], want)
		}
	}
	mu.Unlock()

	for i := range n {
		if i != 1 {
			unwatch[i]()
		}
		servers[i].Close()
		clients[i].Close()
	}
	w.close()
}
