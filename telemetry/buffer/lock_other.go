//go:build !unix

package buffer

import (
	"fmt"
	"os"
	"time"
)

// lockFile only creates the lock file on platforms without flock: the
// buffer targets Linux, and other systems are for development builds.
func lockFile(path string, _ time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("buffer: open lock file: %w", err)
	}
	return f, nil
}

func unlockFile(f *os.File) error { return f.Close() }
