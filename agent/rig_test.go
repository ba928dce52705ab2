package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/agent/localapi"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/buffer"
)

// The delivery tests and benchmarks (delivery_test.go, drain_bench_test.go)
// share this rig: the real trackerd and trackerctl built into the test's
// temporary directory, an emulator in this process on loopback ports, a CA
// and an enrollment group made with trackerctl, and trackerd processes
// driven through signals and the local API.

// rig is an emulator with a CA, an enrollment group and the binaries.
type rig struct {
	tb       testing.TB
	emu      *emulator.Emulator
	emuDir   string
	caDir    string
	trackerd string
	ctl      string
}

// buildTools builds trackerd and trackerctl into dir (the build cache
// makes every build after the first a link).
func buildTools(tb testing.TB, dir string) (trackerd, trackerctl string) {
	tb.Helper()
	out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/coldchain/tracker/cmd/trackerd", "github.com/coldchain/tracker/cmd/trackerctl").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "trackerd"), filepath.Join(dir, "trackerctl")
}

// newRig starts an emulator and creates the CA and the enrollment group.
func newRig(tb testing.TB) *rig {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: builds and runs trackerd against the emulator")
	}
	r := &rig{tb: tb, emuDir: tb.TempDir(), caDir: filepath.Join(tb.TempDir(), "ca")}
	r.trackerd, r.ctl = buildTools(tb, tb.TempDir())
	emu, err := emulator.New(emulator.Config{StateDir: r.emuDir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := emu.Start(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		emu.Close()
	})
	r.emu = emu
	r.run("pki", "init-ca", "--out", r.caDir, "--cn", "Delivery Test Root CA")
	r.run("group", "create", "--emulator", r.emuDir, "--id", "delivery", "--ca", r.caDir)
	return r
}

// run runs trackerctl and fails the test if it fails.
func (r *rig) run(args ...string) string {
	r.tb.Helper()
	out, err := exec.Command(r.ctl, args...).CombinedOutput()
	if err != nil {
		r.tb.Fatalf("trackerctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// deviceOpts shapes a simulated device's config.
type deviceOpts struct {
	interval, sensorInterval time.Duration
	// extra is TOML appended to the bundle's config (sections the bundle
	// does not write: [hub], [buffer]).
	extra string
}

// device writes a simulated device's bundle with fast DPS retries and hub
// reconnects and returns its directory.
func (r *rig) device(id string, o deviceOpts) string {
	r.tb.Helper()
	dir := filepath.Join(r.tb.TempDir(), id)
	r.run("device", "bundle", "--ca", r.caDir, "--id", id, "--out", dir, "--emulator", r.emuDir,
		"--simulate", "--interval", o.interval.String(), "--sensor-interval", o.sensorInterval.String(), "--shipment", "SHP-DELIVERY")
	path := filepath.Join(dir, "config.toml")
	cfg, err := os.ReadFile(path)
	if err != nil {
		r.tb.Fatal(err)
	}
	s := strings.Replace(string(cfg), "[dps]\n", "[dps]\nretry_min = \"100ms\"\nretry_max = \"1s\"\n", 1)
	s += "\n" + o.extra
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		r.tb.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		r.tb.Fatalf("device config: %v", err)
	}
	return dir
}

// deviceBuffer opens the buffer in the state directory of a device's
// config with the options trackerd derives from it (openBuffer in
// buffer.go), for a test to fill while trackerd is not running. now is
// the clock of the gap events the buffer writes (nil: time.Now).
func deviceBuffer(tb testing.TB, cfg *config.Config, now func() time.Time) *buffer.Buffer {
	tb.Helper()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	b, _, err := buffer.Open(filepath.Join(cfg.StateDir, "buffer.db"), buffer.Options{
		Sync: buffer.SyncPolicy(cfg.Buffer.Sync), BatchRecords: cfg.Buffer.BatchRecords,
		BatchInterval: cfg.Buffer.BatchInterval.D(), MaxBytes: int64(cfg.Buffer.MaxBytes), Now: now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// daemon is a running trackerd.
type daemon struct {
	tb   testing.TB
	cmd  *exec.Cmd
	dir  string
	log  *lockedBuffer
	done chan struct{}
	err  error // set when done is closed
}

// start runs trackerd on the bundle in dir. The process is killed at the
// end of the test if it is still running.
func (r *rig) start(dir string) *daemon {
	r.tb.Helper()
	d := &daemon{tb: r.tb, dir: dir, log: &lockedBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(r.trackerd, "run", "--config", filepath.Join(dir, "config.toml"))
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	r.tb.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if r.tb.Failed() {
			r.tb.Logf("trackerd log (%s), last 8 KiB:\n%s", dir, logTail(d.log.String(), 8<<10))
		}
	})
	return d
}

// kill sends SIGKILL, as a power cut would stop the process, and waits for
// it to be gone.
func (d *daemon) kill() {
	d.tb.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		d.tb.Fatalf("SIGKILL: %v", err)
	}
	<-d.done
}

// term sends SIGTERM and expects a clean exit within a bounded time.
func (d *daemon) term() {
	d.tb.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			d.tb.Fatalf("trackerd exited with %v after SIGTERM\n%s", d.err, logTail(d.log.String(), 8<<10))
		}
	case <-time.After(30 * time.Second):
		d.tb.Fatalf("trackerd did not stop within 30s of SIGTERM\n%s", logTail(d.log.String(), 8<<10))
	}
}

// status asks the daemon for its status over the local API, as
// "trackerd status --json" does.
func (d *daemon) status() (agent.Status, error) {
	var st agent.Status
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := localapi.NewClient(filepath.Join(d.dir, "run")).Do(ctx, "GET", "/v1/status", &st)
	return st, err
}

// waitStatus polls the status until ok accepts it, failing the test after
// timeout or if the daemon exits.
func (d *daemon) waitStatus(what string, timeout time.Duration, ok func(agent.Status) bool) agent.Status {
	d.tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last agent.Status
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = d.status()
		if lastErr == nil && ok(last) {
			return last
		}
		select {
		case <-d.done:
			d.tb.Fatalf("trackerd exited (%v) while waiting for %s\n%s", d.err, what, logTail(d.log.String(), 8<<10))
		case <-tick.C:
		}
	}
	d.tb.Fatalf("timed out after %v waiting for %s: last status %+v (err %v)\n%s", timeout, what, last, lastErr, logTail(d.log.String(), 8<<10))
	return last
}

// commitSyscalls are the system calls of a bbolt commit: page writes and
// the data syncs.
var commitSyscalls = map[int]bool{syscall.SYS_PWRITE64: true, syscall.SYS_FDATASYNC: true, syscall.SYS_FSYNC: true}

// inCommit reports whether one of the daemon's threads is inside a system
// call of a buffer commit right now (from /proc/PID/task/*/syscall).
func (d *daemon) inCommit() bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", d.cmd.Process.Pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", d.cmd.Process.Pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil && commitSyscalls[n] {
			return true
		}
	}
	return false
}

// delivery is one copy of a record the emulator received.
type delivery struct {
	mid string
	rec telemetry.Record
	raw string // the record's JSON as sent
}

// deliveries reads telemetry.jsonl and returns, for device id, every copy
// of every record by seq, and the number of messages.
func (r *rig) deliveries(id string) (map[uint64][]delivery, int) {
	r.tb.Helper()
	f, err := os.Open(filepath.Join(r.emuDir, emulator.TelemetryFile))
	if err != nil {
		r.tb.Fatal(err)
	}
	defer f.Close()
	out := map[uint64][]delivery{}
	msgs := 0
	br := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			break // EOF, or a line the emulator is still writing
		}
		var ev struct {
			Event struct {
				Origin     string `json:"origin"`
				Properties struct {
					System map[string]string `json:"system"`
				} `json:"properties"`
				Payload json.RawMessage `json:"payload"`
			} `json:"event"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			r.tb.Fatalf("telemetry.jsonl: %v\n%s", err, line)
		}
		if !strings.EqualFold(ev.Event.Origin, id) {
			continue
		}
		msgs++
		var b struct {
			Device  string            `json:"device"`
			Records []json.RawMessage `json:"records"`
		}
		if err := json.Unmarshal(ev.Event.Payload, &b); err != nil {
			r.tb.Fatalf("payload of %s is not a telemetry batch: %v\n%s", ev.Event.Properties.System["message_id"], err, ev.Event.Payload)
		}
		for _, raw := range b.Records {
			var rec telemetry.Record
			if err := json.Unmarshal(raw, &rec); err != nil {
				r.tb.Fatalf("record in %s: %v\n%s", ev.Event.Properties.System["message_id"], err, raw)
			}
			out[rec.Seq] = append(out[rec.Seq], delivery{mid: ev.Event.Properties.System["message_id"], rec: rec, raw: string(raw)})
		}
	}
	return out, msgs
}

// leftovers opens the buffer of a stopped daemon and returns the records
// still in it and the next seq it would hand out.
func leftovers(tb testing.TB, dir string) (map[uint64]telemetry.Record, uint64) {
	tb.Helper()
	b, _, err := buffer.Open(filepath.Join(dir, "state", "buffer.db"), buffer.Options{MaxBytes: 64 << 20})
	if err != nil {
		tb.Fatalf("opening the stopped daemon's buffer: %v", err)
	}
	defer b.Close()
	out := map[uint64]telemetry.Record{}
	var after uint64
	for {
		es, err := b.PeekAfter(after, 1000, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			rec, err := telemetry.UnmarshalRecord(e.Data)
			if err != nil {
				tb.Fatalf("buffered record %d: %v", e.Seq, err)
			}
			rec.Seq = e.Seq
			out[e.Seq] = *rec
			after = e.Seq
		}
	}
	return out, b.Stats().NextSeq
}

// gapsOf returns the gap events among the delivered and the left-over
// records.
func gapsOf(got map[uint64][]delivery, left map[uint64]telemetry.Record) []telemetry.Gap {
	var gaps []telemetry.Gap
	for _, ds := range got {
		if g := ds[0].rec.Gap; ds[0].rec.Kind == telemetry.KindGap && g != nil {
			gaps = append(gaps, *g)
		}
	}
	for _, rec := range left {
		if rec.Kind == telemetry.KindGap && rec.Gap != nil {
			gaps = append(gaps, *rec.Gap)
		}
	}
	return gaps
}

// checkDuplicates fails the test for a record delivered more than once
// with different content, or (sameMid) under different message ids. Within
// one process a resent message keeps its $.mid; after a crash a record
// whose acknowledgement was not yet committed goes out again in a new
// message, so tests with kills pass sameMid false.
func checkDuplicates(tb testing.TB, got map[uint64][]delivery, sameMid bool) (dupSeqs int) {
	tb.Helper()
	for seq, ds := range got {
		if len(ds) < 2 {
			continue
		}
		dupSeqs++
		for _, d := range ds[1:] {
			if sameMid && d.mid != ds[0].mid {
				tb.Errorf("seq %d delivered under message ids %q and %q: a duplicate must keep its $.mid", seq, ds[0].mid, d.mid)
			}
			if !sameRecord(d.rec, ds[0].rec) {
				tb.Errorf("seq %d delivered twice with different content:\n%s\n%s", seq, ds[0].raw, d.raw)
			}
		}
	}
	return dupSeqs
}

// sameRecord compares what identifies a reading (the publisher may retime
// an unsynced reading between two sends).
func sameRecord(a, b telemetry.Record) bool {
	return a.Seq == b.Seq && a.Kind == b.Kind && a.Boot == b.Boot && a.Mono == b.Mono &&
		(a.Time.Equal(b.Time) || a.Retimed || b.Retimed)
}

// lockedBuffer is a bytes.Buffer safe for a process's output and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func logTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
