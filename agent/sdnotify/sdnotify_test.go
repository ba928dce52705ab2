package sdnotify_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/coldchain/tracker/agent/sdnotify"
)

// listener is the service manager's end: a real unixgram socket.
type listener struct {
	t    testing.TB
	conn *net.UnixConn
	addr string
}

func listen(t testing.TB, addr string) *listener {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &listener{t: t, conn: conn, addr: addr}
}

func listenTemp(t testing.TB) *listener {
	return listen(t, filepath.Join(t.TempDir(), "notify.sock"))
}

// drain returns every datagram already queued, without waiting for more.
func (l *listener) drain() []string {
	l.t.Helper()
	raw, err := l.conn.SyscallConn()
	if err != nil {
		l.t.Fatalf("SyscallConn: %v", err)
	}
	var got []string
	buf := make([]byte, 4096)
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			l.t.Fatalf("raw read: %v", err)
		}
		if errors.Is(rerr, syscall.EAGAIN) {
			return got
		}
		if rerr != nil {
			l.t.Fatalf("recvfrom: %v", rerr)
		}
		got = append(got, string(buf[:n]))
	}
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestNotifierSendsEachState(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify.sock") }},
		{"abstract", func(t *testing.T) string {
			return fmt.Sprintf("@coldchain-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, tc.addr(t))
			n, err := sdnotify.FromEnv(env(map[string]string{"NOTIFY_SOCKET": l.addr}))
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			if !n.Enabled() {
				t.Fatalf("Enabled() = false with NOTIFY_SOCKET=%s", l.addr)
			}
			for _, f := range []func() error{
				n.Ready, n.Watchdog, func() error { return n.Status("uplink down\nbuffering") }, n.Stopping,
			} {
				if err := f(); err != nil {
					t.Fatalf("notify: %v", err)
				}
			}
			want := []string{"READY=1", "WATCHDOG=1", "STATUS=uplink down buffering", "STOPPING=1"}
			if diff := cmp.Diff(want, l.drain()); diff != "" {
				t.Errorf("datagrams (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotifierDisabledWithoutSocket(t *testing.T) {
	for _, n := range []*sdnotify.Notifier{nil, {}, mustFromEnv(t, nil), mustFromEnv(t, env(nil))} {
		if n.Enabled() {
			t.Errorf("Enabled() = true for %#v", n)
		}
		if err := n.Ready(); err != nil {
			t.Errorf("Ready() on disabled notifier = %v, want nil", err)
		}
		if d := n.WatchdogInterval(); d != 0 {
			t.Errorf("WatchdogInterval() = %v, want 0", d)
		}
	}
}

func mustFromEnv(t *testing.T, getenv func(string) string) *sdnotify.Notifier {
	t.Helper()
	n, err := sdnotify.FromEnv(getenv)
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	return n
}

func TestFromEnvWatchdog(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getpid() + 1)
	for _, tc := range []struct {
		name    string
		vars    map[string]string
		want    time.Duration
		wantErr bool
	}{
		{name: "unset", vars: nil, want: 0},
		{name: "usec only", vars: map[string]string{"WATCHDOG_USEC": "30000000"}, want: 30 * time.Second},
		{name: "our pid", vars: map[string]string{"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": self}, want: 1500 * time.Millisecond},
		{name: "other pid", vars: map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": other}, want: 0},
		{name: "zero usec", vars: map[string]string{"WATCHDOG_USEC": "0"}, wantErr: true},
		{name: "junk usec", vars: map[string]string{"WATCHDOG_USEC": "30s"}, wantErr: true},
		{name: "negative usec", vars: map[string]string{"WATCHDOG_USEC": "-5"}, wantErr: true},
		{name: "junk pid", vars: map[string]string{"WATCHDOG_USEC": "1", "WATCHDOG_PID": "me"}, wantErr: true},
		{name: "relative socket", vars: map[string]string{"NOTIFY_SOCKET": "run/notify"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := sdnotify.FromEnv(env(tc.vars))
			if tc.wantErr {
				if !errors.Is(err, sdnotify.ErrBadEnv) {
					t.Fatalf("FromEnv(%v) error = %v, want ErrBadEnv", tc.vars, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromEnv(%v): %v", tc.vars, err)
			}
			if got := n.WatchdogInterval(); got != tc.want {
				t.Errorf("FromEnv(%v).WatchdogInterval() = %v, want %v", tc.vars, got, tc.want)
			}
		})
	}
}

func TestNotifyNoListener(t *testing.T) {
	n, err := sdnotify.New(filepath.Join(t.TempDir(), "absent.sock"), 0)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = n.Ready()
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Ready() with no listener = %v, want ENOENT", err)
	}
}
