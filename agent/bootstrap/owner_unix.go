//go:build unix

package bootstrap

import (
	"os"
	"syscall"
)

// chownLike gives f the owner and group of dir when running as root (the
// systemd unit imports as root into a state directory owned by trackerd).
func chownLike(f *os.File, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}
