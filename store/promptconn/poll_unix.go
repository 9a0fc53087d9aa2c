//go:build unix

package promptconn

import (
	"time"

	"golang.org/x/sys/unix"
)

const supported = true

// readOrWait reads from fd into b; when nothing is there yet, it blocks
// this thread in poll(2) until fd is readable (or hung up, or in error:
// the next read says which) or wait has passed, and reports again.
func readOrWait(fd uintptr, b []byte, wait time.Duration) (n int, again bool, err error) {
	n, err = unix.Read(int(fd), b)
	switch err {
	case unix.EAGAIN:
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, max(int(wait/time.Millisecond), 1))
		return 0, true, nil
	case unix.EINTR:
		return 0, true, nil
	}
	return n, false, err
}
