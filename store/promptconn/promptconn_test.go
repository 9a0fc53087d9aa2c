package promptconn_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/livepg/livepg/store/promptconn"
)

// pair is a prompt connection to a plain one, over loopback TCP.
func pair(t *testing.T) (prompt net.Conn, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	prompt, err = promptconn.Dialer(nil)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer = <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	if _, ok := prompt.(*promptconn.Conn); !ok {
		t.Fatalf("Dialer made a %T, want a *promptconn.Conn", prompt)
	}
	t.Cleanup(func() { prompt.Close(); peer.Close() })
	return prompt, peer
}

// readResult is one Read's outcome.
type readResult struct {
	data string
	err  error
}

func readAsync(c net.Conn) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		out <- readResult{string(buf[:n]), err}
	}()
	return out
}

func TestReadGetsWhatThePeerWrites(t *testing.T) {
	c, peer := pair(t)
	got := readAsync(c)
	time.Sleep(3 * promptconn.Slice) // the read waits through several slices first
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.data != "hello" {
			t.Fatalf("read %q, %v; want hello", r.data, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read never returned")
	}
	// Writes go through, both ways.
	if _, err := c.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "back" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
}

func TestReadEndsAtEOF(t *testing.T) {
	c, peer := pair(t)
	got := readAsync(c)
	peer.Close()
	select {
	case r := <-got:
		if !errors.Is(r.err, io.EOF) {
			t.Fatalf("read after the peer closed: %q, %v; want io.EOF", r.data, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read never returned")
	}
}

// A deadline set while a Read waits ends it with a timeout, as net.Conn's
// does: pgx interrupts a query this way when its context ends.
func TestDeadlineSetDuringAReadEndsIt(t *testing.T) {
	c, _ := pair(t)
	got := readAsync(c)
	time.Sleep(2 * promptconn.Slice)
	if err := c.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		var ne net.Error
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || !errors.As(r.err, &ne) || !ne.Timeout() {
			t.Fatalf("read after the deadline: %q, %v; want a timeout (os.ErrDeadlineExceeded)", r.data, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read went on past its deadline")
	}
	// Cleared, reads work again.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	got = readAsync(c)
	time.Sleep(promptconn.Slice)
	select {
	case r := <-got:
		t.Fatalf("a read with no deadline and nothing sent returned %q, %v", r.data, r.err)
	default:
	}
}

func TestCloseEndsAWaitingRead(t *testing.T) {
	c, _ := pair(t)
	got := readAsync(c)
	time.Sleep(2 * promptconn.Slice)
	c.Close()
	select {
	case r := <-got:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("read after Close: %q, %v; want net.ErrClosed", r.data, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read went on after Close")
	}
}

// A connection that is not a socket is returned as it is.
func TestWrapLeavesOtherConnectionsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := promptconn.Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe end) = %T, want it unchanged", got)
	}
}
