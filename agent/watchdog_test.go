package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
)

// notification is one datagram trackerd sent to the fake NOTIFY_SOCKET.
type notification struct {
	at    time.Time
	state string
}

// notifySocket is a fake systemd notification socket: a unixgram socket in
// the test's temporary directory whose datagrams arrive on c.
type notifySocket struct {
	path string
	c    chan notification
}

// listenNotify opens the socket and starts its reader, which the test's
// cleanup stops (closing the socket) and waits for.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ns := &notifySocket{path: path, c: make(chan notification, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed by the cleanup below
			}
			select {
			case ns.c <- notification{at: time.Now(), state: string(buf[:n])}:
			default:
				// A test that stopped listening; never block the reader.
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return ns
}

// await returns the first notification accepted by ok, failing the test
// if none arrives within timeout or the process exits first. Notifications
// it passes over are returned too, in order.
func (ns *notifySocket) await(t *testing.T, p *proc, what string, timeout time.Duration, ok func(string) bool) (notification, []notification) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var skipped []notification
	for {
		select {
		case n := <-ns.c:
			if ok(n.state) {
				return n, skipped
			}
			skipped = append(skipped, n)
		case err := <-p.done:
			p.done <- err
			t.Fatalf("trackerd exited (%v) while waiting for %s; notifications: %q\n%s", err, what, states(skipped), p.logText())
		case <-deadline.C:
			t.Fatalf("no %s within %v; notifications meanwhile: %q\n%s", what, timeout, states(skipped), p.logText())
		}
	}
}

func states(ns []notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.state
	}
	return out
}

func isWatchdog(s string) bool { return s == "WATCHDOG=1" }

// fakeIIO writes an IIO device directory as the kernel's bmp280 driver
// shows it: milli-degrees Celsius and kilopascals.
func fakeIIO(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "iio:device0")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"name": "bmp280\n", "in_temp_input": "4500\n", "in_pressure_input": "101.325\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// unreachableEndpoint returns a loopback address nothing listens on.
func unreachableEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestWatchdogStopsWhenSamplerStalls runs trackerd as systemd would with
// Type=notify and WatchdogSec=2s: it must report READY=1 and feed the
// watchdog while every component makes progress (the provisioner backing
// off from an unreachable DPS counts as progress), stop feeding it when the
// sampler hangs in a sensor read that ignores its deadline, say which
// component stalled, and feed it again once the read returns.
func TestWatchdogStopsWhenSamplerStalls(t *testing.T) {
	trackerd, ctl := binaries(t)
	work := t.TempDir()
	ca := filepath.Join(work, "ca")
	for _, args := range [][]string{
		{"pki", "init-ca", "--out", ca, "--cn", "Watchdog Test Root CA"},
		{"pki", "issue", "--ca", ca, "--id", "container-wd01", "--out", filepath.Join(work, "devices")},
	} {
		if out, err := exec.Command(ctl, args...).CombinedOutput(); err != nil {
			t.Fatalf("trackerctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dev := filepath.Join(work, "devices", "container-wd01")
	iioDir := fakeIIO(t)
	const sensorInterval = time.Second
	cfg := fmt.Sprintf(`state_dir = "state"
runtime_dir = "run"
log_level = "debug"

[identity]
cert = %q
key = %q
trust_bundle = %q

[dps]
endpoint = %q
id_scope = "0ne00000WD1"
retry_min = "200ms"
retry_max = "1s"

[sensor]
driver = "iio"
iio_device = %q
interval = %q

[gps]
driver = "none"

[telemetry]
interval = "1s"
`, filepath.Join(dev, "chain.pem"), filepath.Join(dev, "key.pem"), filepath.Join(ca, "root.pem"),
		unreachableEndpoint(t), iioDir, sensorInterval)
	cfgPath := filepath.Join(work, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	ns := listenNotify(t)
	var log bytes.Buffer
	cmd := exec.Command(trackerd, "run", "--config", cfgPath)
	cmd.Stderr = &syncWriter{w: &log}
	// WATCHDOG_PID stays unset: sdnotify.FromEnv then takes WATCHDOG_USEC
	// as meant for this process, as systemd's own children do.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "NOTIFY_SOCKET" && k != "WATCHDOG_USEC" && k != "WATCHDOG_PID" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=2000000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, dir: work, log: &log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("trackerd log:\n%s", p.logText())
		}
	})

	// Start-up: READY=1 once config, identity and buffer are open, then a
	// keep-alive at half of WatchdogSec.
	ns.await(t, p, "READY=1", 60*time.Second, func(s string) bool { return s == "READY=1" })
	first, _ := ns.await(t, p, "a first WATCHDOG=1", 10*time.Second, isWatchdog)
	const feeds = 4
	var last notification
	for i := 1; i < feeds; i++ {
		last, _ = ns.await(t, p, fmt.Sprintf("WATCHDOG=1 #%d", i+1), 10*time.Second, isWatchdog)
	}
	t.Logf("%d keep-alives in %v (period 1s)", feeds, last.at.Sub(first.at).Round(time.Millisecond))

	// The sampler reads the fake sysfs files, and the provisioner is
	// backing off from the unreachable DPS while the watchdog is fed.
	st := p.waitStatus("a reading and a failed registration", 30*time.Second, func(s agent.Status) bool {
		return s.Sensor.Healthy && s.Provisioning.Attempts >= 2 && s.Provisioning.LastError != ""
	})
	if *st.Sensor.TempC != 4.5 || *st.Sensor.PressureHPa != 1013.25 {
		t.Errorf("status sensor = %v °C, %v hPa; want 4.5 °C, 1013.25 hPa from the IIO files", *st.Sensor.TempC, *st.Sensor.PressureHPa)
	}
	ns.await(t, p, "WATCHDOG=1 while DPS is unreachable", 10*time.Second, isWatchdog)
	// "systemctl status" says what the agent is doing.
	ns.await(t, p, "a STATUS= saying DPS is unreachable", 10*time.Second, func(s string) bool {
		return strings.HasPrefix(s, "STATUS=provisioning backoff: DPS unreachable")
	})
	// Repeated registration failures are logged once as a warning (and
	// listed once in the status), the rest at debug level, not flooding
	// the journal.
	levels := logLevels(t, p.logText(), "provisioning failed")
	if levels["WARN"] != 1 || levels["DEBUG"] == 0 {
		t.Errorf("%d attempts logged %v; want one WARN, the repeats at DEBUG", st.Provisioning.Attempts, levels)
	}
	listed := 0
	for _, w := range st.Warnings {
		if strings.HasPrefix(w.Msg, "provisioning:") {
			listed++
		}
	}
	if listed != 1 {
		t.Errorf("status lists %d provisioning warnings after %d attempts, want 1: %+v", listed, st.Provisioning.Attempts, st.Warnings)
	}

	// Stall the sampler for real: in_temp_input becomes a FIFO nobody
	// writes, so the driver's open() blocks forever, like a hung bus
	// driver ignoring its deadline.
	temp := filepath.Join(iioDir, "in_temp_input")
	if err := os.Remove(temp); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(temp, 0o644); err != nil {
		t.Fatal(err)
	}
	stalledAt := time.Now()
	// The sampler's allowance is 3 intervals + 10 s (agent.go).
	allowance := 3*sensorInterval + 10*time.Second
	stall, before := ns.await(t, p, "a STATUS= naming the stalled sampler", allowance+30*time.Second, func(s string) bool {
		return strings.HasPrefix(s, "STATUS=") && strings.Contains(s, "stalled") && strings.Contains(s, "sampler")
	})
	t.Logf("stall reported %v after the FIFO appeared: %q", stall.at.Sub(stalledAt).Round(time.Millisecond), stall.state)
	if strings.Contains(stall.state, "publisher") || strings.Contains(stall.state, "provisioner") {
		t.Errorf("stall report %q names components that were making progress", stall.state)
	}
	fed := 0
	for _, n := range before {
		if isWatchdog(n.state) {
			fed++
		}
	}
	if fed == 0 {
		t.Errorf("no WATCHDOG=1 between the FIFO and the stall report: the watchdog stopped before the sampler's allowance")
	}
	// Once the stall is reported, the supervisor sends nothing more: every
	// further check finds the sampler stalled, and the status line is not
	// repeated. Three keep-alive periods of silence show it.
	quiet := time.NewTimer(3 * time.Second)
	select {
	case n := <-ns.c:
		t.Errorf("after the stall report trackerd sent %q", n.state)
	case <-quiet.C:
	}

	// Unstall: open the FIFO's write end (this only succeeds while a reader
	// is blocked in open, which proves where the sampler hangs), put a
	// regular file back for later reads, then hand the blocked read a value.
	w, err := os.OpenFile(temp, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			t.Fatalf("nobody is blocked reading %s: the sampler is not hung where the test put it", temp)
		}
		t.Fatal(err)
	}
	tmp := temp + ".new"
	if err := os.WriteFile(tmp, []byte("4500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, temp); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("4500\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The first check after recovery puts the agent's own line back, then
	// feeds the watchdog.
	ns.await(t, p, "the STATUS= line back after the sampler recovered", allowance, func(s string) bool {
		return strings.HasPrefix(s, "STATUS=") && !strings.Contains(s, "stalled")
	})
	ns.await(t, p, "WATCHDOG=1 after the sampler recovered", 5*time.Second, isWatchdog)

	// SIGTERM: a clean exit, announced with STOPPING=1.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("trackerd exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("trackerd did not exit within 20s of SIGTERM")
	}
	// The datagram was queued before the exit; the reader may lag behind.
	stopping := time.NewTimer(5 * time.Second)
	defer stopping.Stop()
	for got := false; !got; {
		select {
		case n := <-ns.c:
			got = n.state == "STOPPING=1"
		case <-stopping.C:
			t.Fatal("no STOPPING=1 before trackerd exited")
		}
	}
	for _, secret := range []string{"PRIVATE KEY", "SharedAccessSignature"} {
		if strings.Contains(p.logText(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// logLevels counts the JSON log lines with message msg by level.
func logLevels(t *testing.T, log, msg string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Level, Msg string
			RetryIn    any `json:"retry_in"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != msg {
			continue
		}
		out[rec.Level]++
		// Durations read as in the status ("1s"), not as nanoseconds.
		if d, ok := rec.RetryIn.(string); !ok {
			t.Errorf("retry_in = %v (%T), want a duration string: %s", rec.RetryIn, rec.RetryIn, line)
		} else if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("retry_in = %q: %v", d, err)
		}
	}
	return out
}
