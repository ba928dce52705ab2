package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/buffer"
)

// drainRecords is how many buffered records each drain run sends
// (BENCH_DRAIN_RECORDS overrides it).
func drainRecords(b *testing.B) int {
	n := 5000
	if s := os.Getenv("BENCH_DRAIN_RECORDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("BENCH_DRAIN_RECORDS=%q: want a positive number of records", s)
		}
		n = v
	}
	return n
}

// backlogRecords returns n readings a minute apart, as the sampler makes
// them (environment and a 3D fix), numbered from 1.
func backlogRecords(n int) []telemetry.Record {
	start := time.Now().Add(-time.Duration(n) * time.Minute).Truncate(time.Second).UTC()
	recs := make([]telemetry.Record, n)
	for i := range recs {
		at := start.Add(time.Duration(i) * time.Minute)
		alt, speed, track, hdop := 3.5, 11.8, 274.0, 0.9
		recs[i] = telemetry.Record{Seq: uint64(i + 1), Kind: telemetry.KindReading, Time: at, Clock: "gps", Shipment: "SHP-DRAIN",
			Env: &telemetry.Env{TempC: 4.2 + float64(i%7)/10, PressureHPa: 1012.6},
			Fix: &telemetry.Fix{Time: at, Mode: 3, Lat: 51.95 + float64(i)/1e5, Lon: 4.14, AltMSL: &alt, Speed: &speed, Track: &track, HDOP: &hdop, Sats: 9}}
	}
	return recs
}

// drainRate waits until the emulator holds every seq in 1..n from device
// id. It returns the drain rate in records per second, from the first
// message carrying backlog records to the last of them (so the count
// excludes the records of the first message), and the time from the
// device's hub connection to that first message; both on the emulator's
// clock.
func drainRate(b *testing.B, r *rig, id string, n int, timeout time.Duration) (rate float64, firstAfter time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seen := map[uint64]bool{}
	var first time.Time
	inFirst := 0
	last, err := r.emu.WaitTelemetry(ctx, func(m emulator.Message) bool {
		var bt telemetry.Batch
		if !strings.EqualFold(m.DeviceID, id) || json.Unmarshal(m.Payload, &bt) != nil {
			return false
		}
		k := 0
		for _, rec := range bt.Records {
			if rec.Seq >= 1 && rec.Seq <= uint64(n) && !seen[rec.Seq] {
				seen[rec.Seq] = true
				k++
			}
		}
		if k > 0 && first.IsZero() {
			first, inFirst = m.EnqueuedTime, k
		}
		return len(seen) == n
	})
	if err != nil {
		b.Fatalf("%s: %d of %d records arrived: %v", id, len(seen), n, err)
	}
	var connected time.Time
	for _, e := range r.emu.Events() {
		if e.Kind == emulator.EventHubConnect && strings.EqualFold(e.DeviceID, id) {
			connected = e.Time
			break
		}
	}
	if connected.IsZero() {
		b.Fatalf("%s: no hub connection event", id)
	}
	span := last.EnqueuedTime.Sub(first)
	if span <= 0 || n == inFirst {
		b.Fatalf("%s: all %d records arrived in one message; raise BENCH_DRAIN_RECORDS", id, n)
	}
	return float64(n-inFirst) / span.Seconds(), first.Sub(connected)
}

// BenchmarkBacklogDrain measures how fast a backlog of buffered records
// drains to the emulator over mutual TLS: the real trackerd (backlog lane,
// up to hub.batch_records records per message, drain_rate 0 = unlimited)
// against the official Azure IoT Node.js SDK (azure-iot-device-mqtt) sending
// the same records one per message, one sendEvent at a time, as its
// samples do. The rate runs from the first backlog message to the last
// record's arrival on the emulator's clock; first-msg-ms is how long after
// its hub connection a device sent the first one.
//
// It starts processes and needs node with emulator/conformance's
// node_modules, so it runs only with TRACKER_BENCH_DRAIN=1, which
// .ci/bench.d/10-drain sets.
func BenchmarkBacklogDrain(b *testing.B) {
	if os.Getenv("TRACKER_BENCH_DRAIN") == "" {
		b.Skip("starts trackerd and node: run .ci/bench.d/10-drain, or set TRACKER_BENCH_DRAIN=1")
	}
	r := newRig(b)
	n := drainRecords(b)
	recs := backlogRecords(n)

	b.Run("trackerd", func(b *testing.B) {
		var rate float64
		var lag time.Duration
		for i := range b.N {
			b.StopTimer()
			id := fmt.Sprintf("drain-trackerd-%d-%d", b.N, i)
			dir := r.device(id, deviceOpts{interval: time.Hour, sensorInterval: time.Hour,
				extra: "[hub]\ndrain_rate = 0\n\n[buffer]\nmax_bytes = \"64MiB\"\n"})
			cfg, err := config.Load(filepath.Join(dir, "config.toml"))
			if err != nil {
				b.Fatal(err)
			}
			buf := deviceBuffer(b, cfg, nil)
			for _, rec := range recs {
				rec.Seq = 0
				data, err := rec.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := buf.Append(buffer.Routine, rec.Time, data); err != nil {
					b.Fatal(err)
				}
			}
			if err := buf.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			d := r.start(dir)
			rate, lag = drainRate(b, r, id, n, 5*time.Minute)
			b.StopTimer()
			d.term()
		}
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(float64(lag.Milliseconds()), "first-msg-ms")
	})

	b.Run("azure-node-sdk", func(b *testing.B) {
		node, err := exec.LookPath("node")
		if err != nil {
			b.Skip("node is not installed (make deps)")
		}
		conf, err := filepath.Abs(filepath.Join("..", "emulator", "conformance"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(conf, "node_modules", "azure-iot-device-mqtt")); err != nil {
			b.Skip("emulator/conformance/node_modules is missing: run make deps")
		}
		info := r.emu.Info()
		var rate float64
		var lag time.Duration
		for i := range b.N {
			b.StopTimer()
			id := fmt.Sprintf("drain-node-%d-%d", b.N, i)
			dir := r.device(id, deviceOpts{interval: time.Hour, sensorInterval: time.Hour})
			bodies := make([]telemetry.Batch, len(recs))
			for j, rec := range recs {
				bodies[j] = telemetry.Batch{V: telemetry.SchemaVersion, Device: id, Records: []telemetry.Record{rec}}
			}
			recFile := filepath.Join(b.TempDir(), "records.json")
			data, err := json.Marshal(bodies)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(recFile, data, 0o600); err != nil {
				b.Fatal(err)
			}
			cfg, err := json.Marshal(map[string]any{
				"provisioningHost": info.DPSHost, "idScope": info.IDScope, "records": recFile,
				"device": map[string]string{"id": id, "chain": filepath.Join(dir, "device.chain.pem"), "key": filepath.Join(dir, "device.key.pem")},
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			cmd := exec.CommandContext(ctx, node, "bench-drain.js")
			cmd.Dir = conf
			cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+info.ServerCAFile, "BENCH_DRAIN_CONFIG="+string(cfg))
			var out, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &stderr
			b.StartTimer()
			err = cmd.Run()
			b.StopTimer()
			cancel()
			if err != nil {
				b.Fatalf("node bench-drain.js: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), logTail(stderr.String(), 8<<10))
			}
			rate, lag = drainRate(b, r, id, n, time.Minute)
		}
		b.ReportMetric(rate, "records/s")
		b.ReportMetric(float64(lag.Milliseconds()), "first-msg-ms")
	})
}
