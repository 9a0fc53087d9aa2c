//go:build !linux

package stream

import "net"

// clientWatch notices when the clients of taken connections close their end.
// Outside Linux it reads each connection on a goroutine of its own; a client
// has nothing to send on a stream's connection, so a read returns only when
// it goes.
type clientWatch struct{}

func newClientWatch() (*clientWatch, error) { return &clientWatch{}, nil }

// watch calls gone, once, when conn's client closes its end or conn is
// closed. gone must not block.
func (w *clientWatch) watch(conn net.Conn, gone func()) (unwatch func(), err error) {
	go readUntilGone(conn, gone) // it ends when the stream closes conn
	return func() {}, nil
}

func (w *clientWatch) close() {}
