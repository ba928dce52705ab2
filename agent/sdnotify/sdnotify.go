package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrBadEnv reports a malformed NOTIFY_SOCKET, WATCHDOG_USEC or WATCHDOG_PID.
var ErrBadEnv = errors.New("sdnotify: bad systemd environment")

// Notifier sends state changes to the service manager. The zero value and a
// nil *Notifier are disabled: every method returns nil without doing
// anything.
type Notifier struct {
	socket   string
	watchdog time.Duration
}

// New returns a Notifier that sends to socket, an absolute path or an
// abstract socket name starting with '@'. An empty socket gives a disabled
// Notifier. watchdog is the service's watchdog interval (WatchdogSec=), zero
// when the watchdog is off.
func New(socket string, watchdog time.Duration) (*Notifier, error) {
	if socket != "" && !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return nil, fmt.Errorf("%w: NOTIFY_SOCKET %q is neither an absolute path nor an abstract socket (@name)", ErrBadEnv, socket)
	}
	if watchdog < 0 {
		return nil, fmt.Errorf("%w: negative watchdog interval %v", ErrBadEnv, watchdog)
	}
	return &Notifier{socket: socket, watchdog: watchdog}, nil
}

// FromEnv builds a Notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
// as read by getenv (os.Getenv in main). The watchdog interval is zero when
// WATCHDOG_USEC is unset, or when WATCHDOG_PID names another process (the
// variables were inherited from a parent that systemd watches).
func FromEnv(getenv func(string) string) (*Notifier, error) {
	if getenv == nil {
		return &Notifier{}, nil
	}
	var wd time.Duration
	if usec := getenv("WATCHDOG_USEC"); usec != "" {
		n, err := strconv.ParseUint(usec, 10, 63)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: WATCHDOG_USEC=%q is not a positive number of microseconds", ErrBadEnv, usec)
		}
		wd = time.Duration(n) * time.Microsecond
		if p := getenv("WATCHDOG_PID"); p != "" {
			pid, err := strconv.Atoi(p)
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("%w: WATCHDOG_PID=%q is not a process id", ErrBadEnv, p)
			}
			if pid != os.Getpid() {
				wd = 0
			}
		}
	}
	return New(getenv("NOTIFY_SOCKET"), wd)
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval returns the watchdog interval systemd expects keep-alives
// within, or zero when the watchdog is off. Send WATCHDOG=1 at half of it.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends state, one or more newline-separated VAR=value assignments,
// in a single datagram.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: connect to %s: %w", n.socket, err)
	}
	_, werr := conn.Write([]byte(state))
	cerr := conn.Close()
	if werr != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", n.socket, werr)
	}
	if cerr != nil {
		return fmt.Errorf("sdnotify: close %s: %w", n.socket, cerr)
	}
	return nil
}

// Ready sends READY=1: start-up is complete (Type=notify).
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Watchdog sends WATCHDOG=1, one keep-alive.
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// Stopping sends STOPPING=1: shutdown has begun.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sends STATUS=text, shown by "systemctl status". Line breaks in text
// become spaces, since a newline would start a new assignment.
func (n *Notifier) Status(text string) error {
	return n.Notify("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(text))
}
