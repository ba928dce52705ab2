package gps

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// fakeReceiver is a pty standing in for a receiver's UART.
type fakeReceiver struct {
	master, slave *os.File
}

func newReceiver(t *testing.T) *fakeReceiver {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	return &fakeReceiver{master: m, slave: s}
}

func (r *fakeReceiver) path() string { return r.slave.Name() }

func (r *fakeReceiver) close() {
	r.master.Close()
	r.slave.Close()
}

// epoch returns the sentences of one receiver epoch at hh:mm:ss.
func epoch(hhmmss string, lat string) string {
	return sentence("GPRMC,"+hhmmss+".00,A,"+lat+",N,01131.000,E,0.5,10.0,010124,,,A") +
		sentence("GPGGA,"+hhmmss+".00,"+lat+",N,01131.000,E,1,07,1.0,500.0,M,47.0,M,,") +
		"\xb5\x62\x01\x07\x04\x00$\n\x00\x01\x55\xaa" + // a UBX frame in between
		sentence("GPGSA,A,3,01,02,03,04,05,06,07,,,,,,1.8,1.0,1.5")
}

func sentence(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	const hex = "0123456789ABCDEF"
	return "$" + body + "*" + string([]byte{hex[sum>>4], hex[sum&15]}) + "\r\n"
}

// TestSerialPty runs the real port path on a pty: fixes arrive, the port
// vanishes (receiver unplugged), the source keeps retrying, and when a
// receiver appears again it reconnects.
func TestSerialPty(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	cur := newReceiver(t)
	open := func(name string, baud int) (io.ReadCloser, error) {
		mu.Lock()
		path := ""
		if cur != nil {
			path = cur.path()
		}
		mu.Unlock()
		if path == "" {
			return nil, errors.New("no such device")
		}
		return OpenPort(path, baud)
	}
	s, err := NewSerial(SerialOpts{Port: "/dev/ttyGPS", Open: open, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var fmu sync.Mutex
	var fixes []Fix
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(f Fix) {
			fmu.Lock()
			fixes = append(fixes, f)
			fmu.Unlock()
		})
	}()
	count := func() int { fmu.Lock(); defer fmu.Unlock(); return len(fixes) }

	eventually(t, "the port to open", func() bool { return s.Stats().Connected })
	if _, err := io.WriteString(cur.master, epoch("120000", "4807.038")+epoch("120001", "4807.039")); err != nil {
		t.Fatal(err)
	}
	// The second epoch ends by itself after the quiet time.
	eventually(t, "two fixes", func() bool { return count() == 2 })
	f, ok := s.Latest()
	if !ok || !f.Valid() || f.Time.Second() != 1 || f.Stale {
		t.Fatalf("Latest = %+v, %v", f, ok)
	}
	if st := s.Stats(); st.ChecksumErrors != 2 || st.Epochs != 2 || st.Sentences != 6 {
		t.Errorf("stats = %+v, want 6 sentences, 2 checksum errors (the bare $ line in each UBX frame), 2 epochs", st)
	}

	// Unplug.
	mu.Lock()
	cur.close()
	cur = nil
	mu.Unlock()
	eventually(t, "the drop to be noticed", func() bool { st := s.Stats(); return st.Drops >= 1 && !st.Connected })
	eventually(t, "reopen attempts", func() bool { return s.Stats().OpenFailures >= 2 })

	// Plug in again (a new pty, as a new USB device would be).
	mu.Lock()
	cur = newReceiver(t)
	mu.Unlock()
	eventually(t, "the port to reopen", func() bool { return s.Stats().Connected })
	if _, err := io.WriteString(cur.master, epoch("120005", "4807.045")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a fix after reconnecting", func() bool { return count() == 3 })
	fmu.Lock()
	if fixes[2].Time.Second() != 5 {
		t.Errorf("fix after reconnecting = %v", fixes[2])
	}
	fmu.Unlock()
	st := s.Stats()
	if st.Opens != 2 || st.Epochs != 3 {
		t.Errorf("stats = %+v, want 2 opens, 3 epochs over both ports", st)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	mu.Lock()
	cur.close()
	mu.Unlock()
}

func TestNewSerialErrors(t *testing.T) {
	if _, err := NewSerial(SerialOpts{}); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("NewSerial without a port = %v", err)
	}
	if _, err := NewSerial(SerialOpts{Port: "/dev/ttyS0", Baud: 1234}); err == nil || !strings.Contains(err.Error(), "1234") {
		t.Errorf("NewSerial with baud 1234 = %v", err)
	}
}

func TestOpenPortMissing(t *testing.T) {
	if _, err := OpenPort("/dev/does-not-exist-gps", 9600); err == nil {
		t.Error("OpenPort of a missing device succeeded")
	}
}
