package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/telemetry"
)

// Integration tests run the real binaries: trackerctl builds the PKI, the
// enrollment group and the device bundles; trackerd runs as a process
// against the emulator, started in the test process on loopback ports.

var bins struct {
	once     sync.Once
	dir      string
	err      error
	trackerd string
	ctl      string
}

func binaries(t *testing.T) (trackerd, trackerctl string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: builds and runs the binaries")
	}
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "tracker-bin-")
		if bins.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", bins.dir, "github.com/coldchain/tracker/cmd/trackerd", "github.com/coldchain/tracker/cmd/trackerctl").CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		bins.trackerd = filepath.Join(bins.dir, "trackerd")
		bins.ctl = filepath.Join(bins.dir, "trackerctl")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.trackerd, bins.ctl
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// fleet is an emulator with a CA and an enrollment group.
type fleet struct {
	t        *testing.T
	emu      *emulator.Emulator
	emuDir   string
	caDir    string
	group    string
	trackerd string
	ctl      string
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	trackerd, ctl := binaries(t)
	f := &fleet{t: t, emuDir: t.TempDir(), caDir: filepath.Join(t.TempDir(), "ca"), group: "reefers", trackerd: trackerd, ctl: ctl}
	emu, err := emulator.New(emulator.Config{StateDir: f.emuDir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := emu.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		emu.Close()
	})
	f.emu = emu
	f.ctl1("pki", "init-ca", "--out", f.caDir, "--cn", "Reefer Fleet Root CA")
	f.ctl1("group", "create", "--emulator", f.emuDir, "--id", f.group, "--ca", f.caDir)
	return f
}

// ctl1 runs trackerctl and fails the test if it fails.
func (f *fleet) ctl1(args ...string) string {
	f.t.Helper()
	out, err := exec.Command(f.ctl, args...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("trackerctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bundle writes a simulated device's bundle with fast intervals and
// retries, and returns its directory.
func (f *fleet) bundle(id string, extra ...string) string {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), id)
	args := append([]string{"device", "bundle", "--ca", f.caDir, "--id", id, "--out", dir, "--emulator", f.emuDir,
		"--simulate", "--interval", "1s", "--sensor-interval", "250ms", "--shipment", "SHP-1"}, extra...)
	f.ctl1(args...)
	cfgPath := filepath.Join(dir, "config.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		f.t.Fatal(err)
	}
	s := strings.Replace(string(cfg), "[dps]\n", "[dps]\nretry_min = \"200ms\"\nretry_max = \"2s\"\n", 1)
	s += "\n[hub]\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\n[buffer]\nsync = \"always\"\n"
	if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return dir
}

// count returns how many events of kind the emulator recorded for id.
func (f *fleet) count(kind, id string) int {
	n := 0
	for _, e := range f.emu.Events() {
		if e.Kind == kind && strings.EqualFold(e.DeviceID, id) {
			n++
		}
	}
	return n
}

// waitEvent waits for the n-th event of kind for id.
func (f *fleet) waitEvent(kind, id string, n int, timeout time.Duration) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seen := 0
	_, err := f.emu.WaitEvent(ctx, func(e emulator.Event) bool {
		if e.Kind == kind && strings.EqualFold(e.DeviceID, id) {
			seen++
		}
		return seen >= n
	})
	if err != nil {
		f.t.Fatalf("waiting for event %s #%d of %s: %v (events: %v)", kind, n, id, err, f.emu.Events())
	}
}

// proc is a running trackerd.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	dir  string
	log  *bytes.Buffer
	done chan error
}

func (f *fleet) start(dir string) *proc {
	f.t.Helper()
	var log bytes.Buffer
	cmd := exec.Command(f.trackerd, "run", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stderr = &syncWriter{w: &log}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	p := &proc{t: f.t, cmd: cmd, dir: dir, log: &log, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	f.t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if f.t.Failed() {
			f.t.Logf("trackerd log (%s):\n%s", dir, p.logText())
		}
	})
	return p
}

func (p *proc) logText() string {
	mu.Lock()
	defer mu.Unlock()
	return p.log.String()
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			p.t.Fatalf("trackerd exited with %v\n%s", err, p.logText())
		}
	case <-time.After(20 * time.Second):
		p.t.Fatalf("trackerd did not stop within 20s of SIGTERM\n%s", p.logText())
	}
}

// status asks the running daemon for its status through the local API, as
// a technician would.
func (p *proc) status() (agent.Status, error) {
	var st agent.Status
	out, err := exec.Command(bins.trackerd, "status", "--json", "--runtime-dir", filepath.Join(p.dir, "run")).Output()
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// waitStatus polls the status until ok accepts it.
func (p *proc) waitStatus(what string, timeout time.Duration, ok func(agent.Status) bool) agent.Status {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var last agent.Status
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = p.status()
		if lastErr == nil && ok(last) {
			return last
		}
		select {
		case err := <-p.done:
			p.done <- err
			p.t.Fatalf("trackerd exited (%v) while waiting for %s\n%s", err, what, p.logText())
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.t.Fatalf("timed out waiting for %s: last status %+v (err %v)\n%s", what, last, lastErr, p.logText())
	return last
}

var mu sync.Mutex

type syncWriter struct{ w *bytes.Buffer }

func (s *syncWriter) Write(b []byte) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	return s.w.Write(b)
}

func TestProvisionStreamAndRestartUsesCache(t *testing.T) {
	f := newFleet(t)
	dir := f.bundle("container-0001")
	p := f.start(dir)
	f.waitEvent(emulator.EventDPSAssigned, "container-0001", 1, 30*time.Second)
	f.waitEvent(emulator.EventHubConnect, "container-0001", 1, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg, err := f.emu.WaitTelemetry(ctx, func(m emulator.Message) bool { return strings.EqualFold(m.DeviceID, "container-0001") })
	if err != nil {
		t.Fatalf("no telemetry from the device: %v\n%s", err, p.logText())
	}
	t.Logf("first message: %+v", msg)
	st := p.waitStatus("connected", 20*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	if st.Provisioning.State != "assigned" || st.Identity.DeviceID != "container-0001" || st.Identity.Hub == "" {
		t.Errorf("status after provisioning: %+v", st.Provisioning)
	}
	p.stop()

	// A restart uses the cached assignment: no second registration.
	p2 := f.start(dir)
	f.waitEvent(emulator.EventHubConnect, "container-0001", 2, 30*time.Second)
	p2.waitStatus("connected after restart", 20*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	if n := f.count(emulator.EventDPSRegister, "container-0001"); n != 1 {
		t.Errorf("the emulator saw %d registrations, want 1: the restart must use the cached assignment", n)
	}
	p2.stop()
}

func TestHubDeleteForcesRegistration(t *testing.T) {
	f := newFleet(t)
	dir := f.bundle("container-0002")
	p := f.start(dir)
	f.waitEvent(emulator.EventHubConnect, "container-0002", 1, 30*time.Second)
	// The operator deletes the hub identity (and the registration record):
	// the hub refuses the device, which goes back to DPS by itself.
	f.ctl1("device", "deregister", "--emulator", f.emuDir, "--id", "container-0002")
	f.waitEvent(emulator.EventDPSAssigned, "container-0002", 2, 60*time.Second)
	f.waitEvent(emulator.EventHubConnect, "container-0002", 2, 30*time.Second)
	st := p.waitStatus("connected again", 20*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	if st.Provisioning.Attempts < 2 {
		t.Errorf("provisioning attempts = %d, want a second registration", st.Provisioning.Attempts)
	}
	p.stop()
}

func TestDisabledEnrollmentWaitsWithClearStatus(t *testing.T) {
	f := newFleet(t)
	dir := f.bundle("container-0003")
	f.ctl1("device", "disenroll", "--emulator", f.emuDir, "--id", "container-0003", "--cert", filepath.Join(dir, "device.chain.pem"))
	p := f.start(dir)
	st := p.waitStatus("disabled", 30*time.Second, func(s agent.Status) bool { return s.Provisioning.State == "disabled" })
	if !strings.Contains(st.Provisioning.LastError, "disabled") || st.Provisioning.NextAttempt.Sub(st.Now) < 30*time.Minute {
		t.Errorf("disabled status = %+v, want a clear message and a long wait", st.Provisioning)
	}
	if n := f.count(emulator.EventHubConnect, "container-0003"); n != 0 {
		t.Errorf("a disenrolled device connected to the hub %d times", n)
	}
	// The technician's view names the problem.
	out, err := exec.Command(f.trackerd, "status", "--runtime-dir", filepath.Join(dir, "run")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "disabled") {
		t.Errorf("trackerd status = %v\n%s", err, out)
	}
	p.stop()
}

func TestDPSThrottleAndServerErrorsAreRetriedAsTold(t *testing.T) {
	f := newFleet(t)
	if err := f.emu.Faults().DPSStatus(429, 2*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.emu.Faults().DPSStatus(503, time.Second, 1); err != nil {
		t.Fatal(err)
	}
	dir := f.bundle("container-0004")
	p := f.start(dir)
	f.waitEvent(emulator.EventDPSAssigned, "container-0004", 1, 60*time.Second)
	var faults []emulator.Event
	var assigned emulator.Event
	for _, e := range f.emu.Events() {
		if !strings.EqualFold(e.DeviceID, "container-0004") {
			continue
		}
		switch e.Kind {
		case emulator.EventDPSFault:
			faults = append(faults, e)
		case emulator.EventDPSAssigned:
			assigned = e
		}
	}
	if len(faults) != 2 {
		t.Fatalf("saw %d DPS faults, want 2 (429 then 503): %v", len(faults), f.emu.Events())
	}
	// Each retry waits at least what the service asked for.
	const slack = 100 * time.Millisecond
	if gap := faults[1].Time.Sub(faults[0].Time); gap < 2*time.Second-slack {
		t.Errorf("retried %v after a 429 with retry-after 2s", gap)
	}
	if gap := assigned.Time.Sub(faults[1].Time); gap < time.Second-slack {
		t.Errorf("retried %v after a 503 with retry-after 1s", gap)
	}
	p.waitStatus("connected", 30*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	p.stop()
}

func TestCertificateFromAnotherCAIsRejectedClearly(t *testing.T) {
	f := newFleet(t)
	other := filepath.Join(t.TempDir(), "other-ca")
	f.ctl1("pki", "init-ca", "--out", other, "--cn", "Someone Else's CA")
	dir := filepath.Join(t.TempDir(), "intruder")
	f.ctl1("device", "bundle", "--ca", other, "--id", "container-0005", "--out", dir, "--emulator", f.emuDir, "--simulate")
	p := f.start(dir)
	st := p.waitStatus("rejected", 30*time.Second, func(s agent.Status) bool { return s.Provisioning.State == "rejected" })
	if !strings.Contains(st.Provisioning.LastError, "certificate") {
		t.Errorf("rejection message %q does not say what to check", st.Provisioning.LastError)
	}
	if n := f.count(emulator.EventDPSAssigned, "container-0005"); n != 0 {
		t.Errorf("a device from another CA was assigned %d times", n)
	}
	p.stop()
}

// A board without an RTC boots at 1970: certificates look not yet valid
// until a trusted time appears. With GPS time the agent still provisions.
func TestClockAt1970WithGPSTimeProvisions(t *testing.T) {
	f := newFleet(t)
	dir := f.bundle("container-0006")
	cfg, err := config.Load(filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Deps{
		NoLocalAPI: true,
		System:     func() time.Time { return time.Unix(5, 0) }, // the board's clock
		GPS:        gpsFixes{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	f.waitEvent(emulator.EventDPSAssigned, "container-0006", 1, 30*time.Second)
	f.waitEvent(emulator.EventHubConnect, "container-0006", 1, 30*time.Second)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	m, err := f.emu.WaitTelemetry(wctx, func(m emulator.Message) bool { return strings.EqualFold(m.DeviceID, "container-0006") })
	if err != nil {
		t.Fatal(err)
	}
	var b telemetry.Batch
	if err := json.Unmarshal(m.Payload, &b); err != nil || len(b.Records) == 0 {
		t.Fatalf("payload %s: %v", m.Payload, err)
	}
	for _, r := range b.Records {
		if r.Time.Year() < 2026 || (r.Clock != "gps" && !r.Retimed) {
			t.Errorf("record %d has time %v from %q: a 1970 reading leaked", r.Seq, r.Time, r.Clock)
		}
	}
}

// gpsFixes reports a 3D fix with the true time every 200ms.
type gpsFixes struct{}

func (gpsFixes) Run(ctx context.Context, emit func(telemetry.Fix)) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		emit(telemetry.Fix{Time: time.Now().UTC(), Mode: 3, Lat: 51.9, Lon: 4.4, Sats: 9})
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
