//go:build unix

package identity

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkOwner returns an error wrapping ErrStateDir when dir is owned by a
// user other than the effective user of this process.
func checkOwner(dir string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if euid := os.Geteuid(); int64(st.Uid) != int64(euid) {
		return fmt.Errorf("%w: %s is owned by uid %d but this process runs as uid %d; run 'chown %d %s' or set state_dir to a directory of your own", ErrStateDir, dir, st.Uid, euid, euid, dir)
	}
	return nil
}
