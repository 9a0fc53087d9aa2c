//go:build !linux

package main

import "errors"

// poller needs Linux's epoll; elsewhere use --reader goroutine.
type poller struct{}

func newPoller() (*poller, error) {
	return nil, errors.New("--reader epoll needs Linux: use --reader goroutine")
}

func (p *poller) add(s *stream, body []byte, r *load) error { return errors.New("no poller") }
func (p *poller) run(r *load)                               {}
func (p *poller) stop()                                     {}
