package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/cmd/trackerctl/fleetsim"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
)

var updateConsoleShot = flag.Bool("update-console-screenshot", false, "write the browser test's screenshot to docs/img/console.png")

// recordedShipment is a real-looking shipment (Lodi to Munich, with
// temperature excursions) in telemetry.jsonl form, shared with the report
// package's tests.
const recordedShipment = "../telemetry/report/testdata/shipment.jsonl"

// replayShipmentID is the shipment of the recording the replaying device
// reports as its current one (the recording also holds records of the
// shipments before and after it).
const replayShipmentID = "SHP-2026-0311-LOD-MUC"

// TestConsoleInBrowser loads the console in headless Chromium against a
// running emulator with simulated trackers (real agents, in process) and a
// device replaying a recorded shipment over MQTT, checks the tables, the
// live chart, the route, a confirmed flush, and saves a screenshot.
func TestConsoleInBrowser(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	unavailable := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf(format+" (CI=true: run .ci/deps)", args...)
		}
		t.Skipf(format, args...)
	}
	if testing.Short() && !ci {
		t.Skip("browser test")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		unavailable("no Chromium at %s (Debian package chromium): %v", chromium, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("no node on PATH (Debian package nodejs)")
	}
	e2e, err := filepath.Abs(filepath.Join("console", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core")); err != nil {
		unavailable("playwright-core is not installed: run 'npm ci' in %s", e2e)
	}
	artifacts := os.Getenv("ARTIFACTS_DIR")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	v := start(t)
	v.enrollGroup("fleet", "enabled")

	// Simulated trackers: the agent's own code with simulated sensor and
	// GPS, provisioning through DPS and streaming every half second.
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() {
		_, err := fleetsim.Run(simCtx, fleetsim.Options{
			Devices: 3, Prefix: "sim-", CA: v.ca, DPSEndpoint: v.info.DPSHost, IDScope: v.info.IDScope,
			Roots: v.serverPool(), WorkDir: t.TempDir(), Interval: 500 * time.Millisecond,
			Stream: 10 * time.Minute, Timeout: time.Minute,
		})
		simDone <- err
	}()
	t.Cleanup(func() {
		stopSim()
		if err := <-simDone; err != nil {
			t.Errorf("fleet simulator: %v", err)
		}
	})
	sims := []string{"sim-00001", "sim-00002", "sim-00003"}
	for _, id := range sims {
		if _, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return m.DeviceID == id }); err != nil {
			t.Fatalf("%s sent no telemetry: %v", id, err)
		}
	}

	// A tracker replaying a recorded shipment.
	const replayID = "trk-0042"
	replayed := replayShipment(t, v, replayID)

	spki, err := serverSPKI(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifacts, "console.png")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.e2e.js")
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+v.info.ConsoleURL,
		"CONSOLE_TOKEN="+v.info.ConsoleToken,
		"SERVER_SPKI="+spki,
		"CHROMIUM="+chromium,
		"USER_DATA_DIR="+t.TempDir(),
		"SCREENSHOT="+shot,
		"EXPECT_DEVICES="+strings.Join(append(sims, replayID), ","),
		"EXPECT_GROUP=fleet",
		"LIVE_DEVICE="+sims[0],
		"FLUSH_DEVICE="+sims[1],
		"ROUTE_DEVICE="+replayID,
		"TZ=UTC",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("browser script: %v\n%s\n%s", err, stderr.String(), stdout.String())
	}
	var got struct {
		Devices, Connected, Groups, Registrations, Assigned int
		LivePointsBefore, LivePointsAfter                   int
		ConfirmTitle, FlushResult                           string
		FlushOK                                             bool `json:"flushOk"`
		TempPoints, ExcursionDots, ExcursionSpans           int
		PressurePoints, RoutePoints, RouteStart, RouteEnd   int
		BandLimits                                          []string
		ScaleLabel, Summary                                 string
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("browser script output %q: %v", stdout.String(), err)
	}
	t.Logf("browser: %s", strings.TrimSpace(stdout.String()))
	if got.Devices != 4 || got.Connected != 4 || got.Groups != 1 || got.Registrations != 4 || got.Assigned != 4 {
		t.Errorf("tables: %d devices (%d connected), %d groups, %d registrations (%d assigned); want 4, 4, 1, 4, 4",
			got.Devices, got.Connected, got.Groups, got.Registrations, got.Assigned)
	}
	if got.LivePointsAfter <= got.LivePointsBefore {
		t.Errorf("live chart did not grow: %d -> %d", got.LivePointsBefore, got.LivePointsAfter)
	}
	if got.ConfirmTitle != "Disenroll "+sims[1]+"?" {
		t.Errorf("confirmation title %q", got.ConfirmTitle)
	}
	if !got.FlushOK || !strings.Contains(got.FlushResult, "device answered 200") {
		t.Errorf("flush result %q", got.FlushResult)
	}
	// The flush reached the device: the hub recorded the method's answer.
	if _, err := v.e.WaitEvent(waitCtx(t), func(ev emulator.Event) bool {
		return ev.Kind == emulator.EventMethod && ev.DeviceID == sims[1] && ev.Detail == "flush -> 200"
	}); err != nil {
		t.Errorf("no flush method event for %s: %v", sims[1], err)
	}
	if _, err := v.e.Enrollment(sims[1]); err == nil {
		t.Error("the cancelled disenroll created an enrollment")
	}
	if got.TempPoints != replayed.temps || got.PressurePoints != replayed.temps || got.RoutePoints != replayed.fixes {
		t.Errorf("replayed shipment drawn with %d temperature, %d pressure, %d route points; sent %d readings, %d fixes",
			got.TempPoints, got.PressurePoints, got.RoutePoints, replayed.temps, replayed.fixes)
	}
	if got.ExcursionDots != replayed.outside || got.ExcursionSpans == 0 {
		t.Errorf("%d excursion dots in %d spans, want %d readings outside 2..8 °C", got.ExcursionDots, got.ExcursionSpans, replayed.outside)
	}
	if got.RouteStart != 1 || got.RouteEnd != 1 {
		t.Errorf("route markers: %d start, %d end", got.RouteStart, got.RouteEnd)
	}
	if len(got.BandLimits) != 2 || got.BandLimits[0] != "max 8 °C" || got.BandLimits[1] != "min 2 °C" {
		t.Errorf("band limits %q", got.BandLimits)
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if *updateConsoleShot {
		dst := filepath.Join("..", "docs", "img", "console.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// replayed counts what a replayed shipment should draw.
type replayed struct {
	temps, fixes, outside int
}

// replayShipment provisions device id through DPS, reports the agent's
// twin config and publishes the recorded shipment's payloads as its own.
func replayShipment(t *testing.T, v *env, id string) replayed {
	t.Helper()
	raw, err := os.ReadFile(recordedShipment)
	if err != nil {
		t.Fatalf("recorded shipment: %v", err)
	}
	dev := v.device(id)
	if final := v.register(dev, ""); final[len(final)-1].body["status"] != "assigned" {
		t.Fatalf("register %s: %s", id, final[len(final)-1].raw)
	}
	mc := v.hubConnect(dev, nil)
	res := subscribe(t, mc, "$iothub/twin/res/#", 0)
	publish(t, mc, "$iothub/twin/PATCH/properties/reported/?$rid=1", 0,
		`{"config":{"tempMinC":2,"tempMaxC":8,"shipmentId":"`+replayShipmentID+`"},"buffer":{"depth":0},"firmwareVersion":"1.4.0"}`)
	recv(t, res)
	var r replayed
	seen := map[uint64]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var line struct {
			Event struct {
				Payload struct {
					Device  string `json:"device"`
					Records []struct {
						Seq      uint64 `json:"seq"`
						Shipment string `json:"shipment"`
						Env      *struct {
							TempC float64 `json:"tempC"`
						} `json:"env"`
						Fix *struct {
							Mode int `json:"mode"`
						} `json:"fix"`
					} `json:"records"`
				} `json:"payload"`
			} `json:"event"`
		}
		var body struct {
			Event struct {
				Payload json.RawMessage `json:"payload"`
			} `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(sc.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		for _, rec := range line.Event.Payload.Records {
			if seen[rec.Seq] {
				continue // a retried message: the console shows a record once
			}
			seen[rec.Seq] = true
			if rec.Shipment != replayShipmentID {
				continue // the console shows the device's current shipment
			}
			if rec.Env != nil {
				r.temps++
				if rec.Env.TempC < 2 || rec.Env.TempC > 8 {
					r.outside++
				}
			}
			if rec.Fix != nil && rec.Fix.Mode >= 2 {
				r.fixes++
			}
		}
		payload := bytes.ReplaceAll(body.Event.Payload, []byte(`"device":"`+line.Event.Payload.Device+`"`), []byte(`"device":"`+id+`"`))
		publish(t, mc, fmt.Sprintf(telemetryTopic, id), 1, payload)
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return m.DeviceID == id && m.Seq > 0 }); err != nil || n == 0 {
		t.Fatalf("replay sent %d messages: %v", n, err)
	}
	return r
}

// serverSPKI returns the base64 SHA-256 of the emulator's server public
// key, the form of Chromium's --ignore-certificate-errors-spki-list.
func serverSPKI(stateDir string) (string, error) {
	certs, err := pki.ReadCertsFile(filepath.Join(stateDir, emulator.ServerCert))
	if err != nil {
		return "", err
	}
	if len(certs) == 0 {
		return "", errors.New("no server certificate")
	}
	sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}
