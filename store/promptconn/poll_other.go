//go:build !unix

package promptconn

import "time"

const supported = false

func readOrWait(fd uintptr, b []byte, wait time.Duration) (int, bool, error) {
	panic(errUnsupported)
}
