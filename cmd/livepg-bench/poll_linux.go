package main

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller reads many streams with one epoll set on one goroutine (the
// --reader epoll way, the default): a readable stream costs one read system
// call, and thousands of idle ones cost no goroutine, no stack and no
// wake-up. A reader goroutine per stream pays a second, empty read for each
// burst and a scheduler round trip; on a machine the servers share with the
// generator, that CPU is taken from the servers being measured.
//
// A stream handed to a poller is read from a duplicate of its connection's
// descriptor; the connection itself is closed, so Go's own poller lets go.
type poller struct {
	epfd, wake int // the epoll set; an eventfd in it that stops run
	mu         sync.Mutex
	streams    map[int32]*polledStream
	next       int32
	closed     bool // the descriptors are closed: their numbers may be another's now
}

type polledStream struct {
	s  *stream
	fd int
}

const pollWakeToken = 0

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: pollWakeToken}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return &poller{epfd: epfd, wake: wake, streams: make(map[int32]*polledStream), next: pollWakeToken + 1}, nil
}

// add parses body (what came with the response head), then takes s over:
// from here on the poller alone reads s and writes its fields.
func (p *poller) add(s *stream, body []byte, r *load) error {
	if !s.feed(body, time.Now(), r) {
		s.conn.Close()
		return nil
	}
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return errors.New("poller: connection has no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("poller: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		return fmt.Errorf("poller: dup: %w", errors.Join(err, dupErr))
	}
	s.conn.Close() // the duplicate keeps the socket open, non-blocking
	p.mu.Lock()
	tok := p.next
	p.next++
	p.streams[tok] = &polledStream{s: s, fd: fd}
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: tok}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.streams, tok)
		p.mu.Unlock()
		unix.Close(fd)
		return fmt.Errorf("poller: epoll_ctl: %w", err)
	}
	return nil
}

// run reads the streams until stop; then it closes them all.
func (p *poller) run(r *load) {
	defer p.closeAll()
	buf := make([]byte, 256<<10)
	events := make([]unix.EpollEvent, 512)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(r.out, "poller: epoll_wait: %v\n", err)
			return
		}
		now := time.Now()
		for i := range events[:n] {
			tok := events[i].Fd
			if tok == pollWakeToken {
				return
			}
			p.mu.Lock()
			ps := p.streams[tok]
			p.mu.Unlock()
			if ps == nil {
				continue
			}
			// One read per readiness: the set is level-triggered, so what
			// this read leaves is reported again.
			nr, err := unix.Read(ps.fd, buf)
			switch {
			case nr > 0:
				if !ps.s.feed(buf[:nr], now, r) {
					p.remove(tok, ps)
				}
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			case err != nil:
				ps.s.err = err
				p.remove(tok, ps)
			default: // the server closed the stream
				ps.s.err = io.EOF
				p.remove(tok, ps)
			}
		}
	}
}

func (p *poller) remove(tok int32, ps *polledStream) {
	p.mu.Lock()
	delete(p.streams, tok)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, ps.fd, nil)
	unix.Close(ps.fd)
}

// stop makes run return; run closes the streams as it does. Calling it
// again, or after run has returned, does nothing: the eventfd's number may
// belong to another file by then.
func (p *poller) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	var one [8]byte
	one[0] = 1 // any nonzero count wakes the set
	_, _ = unix.Write(p.wake, one[:])
}

func (p *poller) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for tok, ps := range p.streams {
		unix.Close(ps.fd)
		delete(p.streams, tok)
	}
	unix.Close(p.wake)
	unix.Close(p.epfd)
}
