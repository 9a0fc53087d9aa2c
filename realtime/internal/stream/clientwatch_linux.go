package stream

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientWatch notices when the clients of taken connections close their end,
// with one epoll set and one goroutine for the whole node instead of a
// blocked reader goroutine (and its stack) per stream. Each connection is
// registered for EPOLLRDHUP once: the client's FIN, a reset or an error
// wakes the watcher, which calls that stream's gone function. A client has
// nothing else to send on a stream's connection, so nothing is read.
type clientWatch struct {
	epfd, wake int // the epoll set; an eventfd in it that stops the loop
	mu         sync.Mutex
	next       uint64
	gone       map[uint64]func()
	done       chan struct{} // closed when the loop has returned
}

// wakeToken marks the eventfd's entry; connections get tokens from 1.
const wakeToken = 0

func newClientWatch() (*clientWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("client watch: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("client watch: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("client watch: add eventfd: %w", err)
	}
	w := &clientWatch{epfd: epfd, wake: wake, next: wakeToken + 1, gone: make(map[uint64]func()), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func setToken(ev *unix.EpollEvent, token uint64) {
	ev.Fd = int32(uint32(token))
	ev.Pad = int32(uint32(token >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// watch calls gone, once, on the watcher's goroutine, when conn's client
// closes its end. gone must not block. The returned unwatch must be called
// before conn is closed.
func (w *clientWatch) watch(conn net.Conn, gone func()) (unwatch func(), err error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("client watch: connection has no file descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("client watch: %w", err)
	}
	w.mu.Lock()
	tok := w.next
	w.next++
	w.gone[tok] = gone
	w.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, tok)
	var ctlErr error
	if err := raw.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || ctlErr != nil {
		w.forget(tok)
		return nil, fmt.Errorf("client watch: add connection: %w", errors.Join(err, ctlErr))
	}
	return func() {
		w.forget(tok)
		// Closing the descriptor would remove it too, but the descriptor
		// may outlive conn (another reference); say so explicitly.
		_ = raw.Control(func(fd uintptr) {
			_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		})
	}, nil
}

func (w *clientWatch) forget(tok uint64) {
	w.mu.Lock()
	delete(w.gone, tok)
	w.mu.Unlock()
}

func (w *clientWatch) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Not expected; stop watching rather than spin. Streams still
			// end on write errors, heartbeats included.
			return
		}
		for i := range events[:n] {
			tok := token(&events[i])
			if tok == wakeToken {
				return
			}
			w.mu.Lock()
			gone := w.gone[tok]
			delete(w.gone, tok)
			w.mu.Unlock()
			if gone != nil {
				gone()
			}
		}
	}
}

// close stops the watcher and waits for its goroutine.
func (w *clientWatch) close() {
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; any nonzero value wakes
	_, _ = unix.Write(w.wake, one[:])
	<-w.done
	unix.Close(w.wake)
	unix.Close(w.epfd)
}
