package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/coldchain/tracker/agent/cmdline"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

// runIn executes trackerd in-process with stdin.
func runIn(t *testing.T, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: stdin, Stdout: &out, Stderr: &errb}
	code := Main(t.Context(), args, env)
	return code, out.String(), errb.String()
}

const captureDir = "../../drivers/gps/nmea/testdata"

// TestGPSDecode decodes a capture from a file and from standard input and
// compares the output with the golden file.
func TestGPSDecode(t *testing.T) {
	capture := filepath.Join(captureDir, "sirf-binary.nmea")
	golden := filepath.Join("testdata", "gps-decode-sirf-binary.golden")
	code, out, errOut := runIn(t, nil, "gps", "decode", capture)
	if code != 0 {
		t.Fatalf("gps decode FILE = %d, stderr %q", code, errOut)
	}
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("gps decode output differs from %s:\n%s", golden, out)
	}
	data, err := os.ReadFile(capture)
	if err != nil {
		t.Fatal(err)
	}
	code, out2, errOut := runIn(t, bytes.NewReader(data), "gps", "decode", "-stats", "-")
	if code != 0 || out2 != out {
		t.Errorf("gps decode - = %d, output differs from the file's: %q", code, out2)
	}
	if !strings.Contains(errOut, "20 epochs printed") || !strings.Contains(errOut, "noise bytes") {
		t.Errorf("-stats printed %q", errOut)
	}
	// Every line is one JSON object; no-fix epochs carry no position.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 20 {
		t.Fatalf("%d lines, want 20", len(lines))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if _, hasLat := m["lat"]; m["mode"] == 1.0 && hasLat {
			t.Errorf("no-fix epoch with a position: %s", l)
		}
		if _, err := time.Parse(time.RFC3339, m["time"].(string)); err != nil {
			t.Errorf("time %v is not RFC 3339: %v", m["time"], err)
		}
	}
}

func TestGPSDecodeErrors(t *testing.T) {
	if code, _, errOut := runIn(t, nil, "gps", "decode", filepath.Join(t.TempDir(), "nope.nmea")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file = %d %q", code, errOut)
	}
	if code, _, errOut := runIn(t, nil, "gps", "decode", "a", "b"); code != 2 || !strings.Contains(errOut, "one FILE") {
		t.Errorf("two files = %d %q", code, errOut)
	}
	if code, out, _ := runIn(t, strings.NewReader("\x00\x01garbage\n$GPGGA,bad*00\n"), "gps", "decode"); code != 0 || out != "" {
		t.Errorf("garbage = %d %q, want nothing printed", code, out)
	}
}

// TestDiagGPS runs diag gps against a pty standing in for the receiver.
func TestDiagGPS(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	data, err := os.ReadFile(filepath.Join(captureDir, "ublox-m8.nmea"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb syncBuffer
	env := &cmdline.Env{Stdout: &out, Stderr: &errb}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"diag", "gps", "--port", slave.Name(), "--every", "50ms"}, env)
	}()
	// Wait for the port to be open (its counter line says so), then play
	// the capture into the pty.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "port open") {
		if time.Now().After(deadline) {
			t.Fatalf("diag gps never opened the port: %q %q", out.String(), errb.String())
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	if _, err := master.Write(data); err != nil {
		t.Fatal(err)
	}
	for strings.Count(out.String(), "fix ") < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("not all fixes shown: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 130 {
		t.Errorf("interrupted diag gps exit = %d, want 130", code)
	}
	s := out.String()
	if !strings.Contains(s, "fix 2024-02-29T00:00:09.000Z 3D -33.") || !strings.Contains(s, "20 epochs (3 without fix)") {
		t.Errorf("output lacks the fixes or counters:\n%s", s)
	}
}

func TestDiagGPSUsage(t *testing.T) {
	if code, _, errOut := runIn(t, nil, "diag", "gps"); code != 2 || !strings.Contains(errOut, "-port") {
		t.Errorf("no port = %d %q", code, errOut)
	}
	if code, _, errOut := runIn(t, nil, "diag", "gps", "--port", "/dev/ttyS9", "--baud", "1234"); code != 2 || !strings.Contains(errOut, "1234") {
		t.Errorf("bad baud = %d %q", code, errOut)
	}
	code, out, _ := runIn(t, nil, "diag", "gps", "--port", filepath.Join(t.TempDir(), "ttyNONE"), "--duration", "100ms", "--every", "1h")
	if code != 0 || !strings.Contains(out, "NOT OPEN") {
		t.Errorf("missing port = %d %q, want a NOT OPEN report and exit 0 after --duration", code, out)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// regBus emulates a BMP280 at 0x76 as a register file, so a scan and a read
// work the way they do on hardware.
type regBus struct {
	regs   [256]byte
	closed bool
}

func newRegBus() *regBus {
	b := &regBus{}
	b.regs[0xd0] = 0x58
	copy(b.regs[0x88:], []byte{
		0x70, 0x6b, 0x43, 0x67, 0x18, 0xfc, 0x7d, 0x8e, 0x43, 0xd6, 0xd0, 0x0b,
		0x27, 0x0b, 0x8c, 0x00, 0xf9, 0xff, 0x8c, 0x3c, 0xf8, 0xc6, 0x70, 0x17,
	})
	copy(b.regs[0xf7:], []byte{0x65, 0x5a, 0xc0, 0x7e, 0xed, 0x00})
	return b
}

func (b *regBus) Tx(addr uint16, w, r []byte) error {
	if addr != 0x76 {
		return errors.New("remote I/O error")
	}
	if len(r) > 0 {
		start := 0
		if len(w) > 0 {
			start = int(w[0])
		}
		copy(r, b.regs[start:])
		return nil
	}
	for i := 0; i+1 < len(w); i += 2 {
		b.regs[w[i]] = w[i+1]
	}
	return nil
}
func (b *regBus) SetSpeed(physic.Frequency) error { return nil }
func (b *regBus) String() string                  { return "I2C1" }
func (b *regBus) Close() error                    { b.closed = true; return nil }

func TestDiagI2C(t *testing.T) {
	saved := openI2CBus
	defer func() { openI2CBus = saved }()
	var opened []string
	openI2CBus = func(name string) (i2c.BusCloser, error) {
		opened = append(opened, name)
		if name == "7" {
			return nil, fmt.Errorf("no bus %q", name)
		}
		return newRegBus(), nil
	}
	code, out, errOut := runIn(t, nil, "diag", "i2c", "--bus", "1")
	if code != 0 {
		t.Fatalf("diag i2c = %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"bus I2C1: 1 device(s) at 0x76", "BMP280 at 0x76: 25.08 °C 1006.53 hPa", "plausible"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(opened) != 2 || opened[0] != "1" {
		t.Errorf("opened %q, want bus 1 for the scan and the read", opened)
	}
	code, _, errOut = runIn(t, nil, "diag", "i2c", "--bus", "7")
	if code != 1 || !strings.Contains(errOut, `no bus "7"`) || !strings.Contains(errOut, "i2c group") {
		t.Errorf("missing bus = %d %q", code, errOut)
	}
	code, _, errOut = runIn(t, nil, "diag", "i2c", "--addr", "0x77")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("no chip at 0x77 = %d %q", code, errOut)
	}
	if code, _, _ := runIn(t, nil, "diag", "i2c", "--addr", "0x40"); code != 2 {
		t.Errorf("bad address = %d, want 2", code)
	}
}
