package stream

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Lean streams (the default; Config.PlainStreams turns them off). An idle
// stream served the usual way
// keeps net/http's whole connection: the handler's goroutine with the stack
// it grew while serving the request (16 KiB), a background reader, a 4 KiB
// read buffer, a 4 KiB write buffer and a 2 KiB chunking buffer — about 36
// KiB in all. Once its start is known, a lean stream takes its connection
// from net/http (Hijack), writes the response head itself and goes on in a
// goroutine of its own, started fresh (so with a small stack), writing the
// shared, already encoded frames straight to the socket with writev: no
// buffer per stream. The body ends when the connection closes, which
// HTTP/1.1 allows and EventSource expects; HTTP/2 cannot hand its
// connection over, so such a stream is served the usual way.

// takenStreams are the node's streams on taken connections: net/http no
// longer knows them, so the node waits for them when it stops.
type takenStreams struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // wait has begun: take no more
	wg     sync.WaitGroup
	// held counts the connections taken (from just before net/http hands
	// one over until it is closed): they hold descriptors net/http no
	// longer counts.
	held atomic.Int64
	// watch notices clients that leave; started with the first stream.
	watch *clientWatch
}

// take hands w's connection to a goroutine that runs serve with a writer on
// it and a context that ends when the client goes. It returns false, having
// done nothing, when the connection cannot be taken (HTTP/2, or a writer
// that does not allow it). The response head is w's header with status 200.
func (t *takenStreams) take(w http.ResponseWriter, serve func(ctx context.Context, out streamOut)) bool {
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	h := w.Header().Clone()
	h.Set("Connection", "close") // the body ends with the connection
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if err := h.Write(&head); err != nil {
		return false
	}
	head.WriteString("\r\n")
	// Before taking the connection: once taken, there is no going back to
	// net/http.
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false // the node is stopping: the stream ends at once the usual way
	}
	if t.watch == nil {
		cw, err := newClientWatch()
		if err != nil {
			t.mu.Unlock()
			return false
		}
		t.watch = cw
	}
	t.held.Add(1) // before net/http stops counting it, so that it is always in one count
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.held.Add(-1)
		t.mu.Unlock()
		return false
	}
	// Drop net/http's buffers with the handler. A client has no business
	// sending anything more on a stream's connection.
	limitSendBuffer(conn)
	brw.Reader.Reset(nil)
	brw.Writer.Reset(nil)
	watch := t.watch
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[conn] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		unwatch, err := watch.watch(conn, cancel)
		if err != nil {
			// A connection the watcher cannot take (no descriptor, such as
			// one wrapped by a listener of the embedding program): a reader
			// goroutine of its own notices the client go, as closing conn
			// ends it.
			go readUntilGone(conn, cancel)
			unwatch = func() {}
		}
		defer func() {
			unwatch()
			t.mu.Lock()
			delete(t.conns, conn)
			t.mu.Unlock()
			conn.Close()
			t.held.Add(-1)
		}()
		out := &connOut{conn: conn}
		_, _ = out.Write(head.Bytes())
		serve(ctx, out)
	}()
	return true
}

// wait waits for the taken streams to end (the node has told them to), at
// most grace; then it closes the connections of those still writing to
// stuck clients and waits for them.
func (t *takenStreams) wait(grace time.Duration) {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		t.mu.Lock()
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		<-done
	}
	t.mu.Lock()
	watch := t.watch
	t.watch = nil
	t.mu.Unlock()
	if watch != nil {
		watch.close()
	}
}

// readUntilGone reads conn until the client goes or conn is closed, then
// calls gone. A client has nothing to send on a stream's connection.
func readUntilGone(conn net.Conn, gone func()) {
	var b [1]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			gone()
			return
		}
	}
}
