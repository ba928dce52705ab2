package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coldchain/tracker/agent"
)

// statusFixture is a board two days out of coverage: a backlog, a sensor
// that failed once, and warnings long enough to be cut.
func statusFixture() *agent.Status {
	now := time.Date(2026, 3, 14, 9, 30, 0, 0, time.UTC)
	f := func(v float64) *float64 { return &v }
	var st agent.Status
	st.Version = "v1.4.0"
	st.Now, st.Started = now, now.Add(-52*time.Hour-7*time.Minute)
	st.Identity.RegistrationID = "container-0042"
	st.Identity.DeviceID = "container-0042"
	st.Identity.Hub = "cheese-fleet-hub.azure-devices.net"
	st.Identity.CertSubject = "CN=container-0042"
	st.Identity.CertNotAfter = now.Add(20 * 24 * time.Hour)
	st.Provisioning.State = "assigned"
	st.Provisioning.Attempts = 1
	st.Connection.State = "disconnected"
	st.Connection.Since = now.Add(-49 * time.Hour)
	st.Connection.LastError = "hub: connect to cheese-fleet-hub.azure-devices.net:8883: dial tcp: lookup cheese-fleet-hub.azure-devices.net: no such host"
	st.Connection.Reconnects = 3
	st.Clock.Source = "gps"
	st.Sensor.Driver, st.Sensor.Healthy = "bmx280", true
	st.Sensor.TempC, st.Sensor.PressureHPa, st.Sensor.At = f(4.38), f(1013.2), now.Add(-4*time.Second)
	st.Sensor.Errors = 1
	st.GPS.Driver, st.GPS.Healthy, st.GPS.Mode, st.GPS.Sats = "serial", true, 3, 9
	st.GPS.Lat, st.GPS.Lon, st.GPS.FixTime = f(53.53372), f(10.02484), now.Add(-time.Second)
	st.Buffer.Sync, st.Buffer.Depth, st.Buffer.Bytes = "batch", 2941, 1094<<10
	st.Buffer.OldestUnsent, st.Buffer.NextSeq = now.Add(-49*time.Hour), 18213
	st.Telemetry.ShipmentID, st.Telemetry.Interval = "SHP-2026-0042", "1m0s"
	st.Telemetry.Sent, st.Telemetry.Messages, st.Telemetry.LastSent = 15272, 15101, now.Add(-49*time.Hour)
	st.Warnings = []agent.Warning{
		{Time: now.Add(-50 * time.Hour), Msg: "sensor: bmx280: read: i2c: transaction on bus 1 addr 0x76: remote I/O error"},
		// "°" is two bytes but one column.
		{Time: now.Add(-2 * time.Hour), Msg: "alert: temperature above the band for 10 min, 8.6 °C > 8.0 °C, excursion 1"},
	}
	return &st
}

func TestRenderStatusGolden(t *testing.T) {
	var b bytes.Buffer
	RenderStatus(&b, statusFixture())
	out := b.String()
	golden := filepath.Join("testdata", "status.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("trackerd status output differs from %s:\n%s", golden, out)
	}
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if n := utf8.RuneCountInString(l); n > statusColumns || !utf8.ValidString(l) {
			t.Errorf("line %d is %d characters (valid UTF-8: %v), want at most %d: %q", i+1, n, utf8.ValidString(l), statusColumns, l)
		}
	}
}

// An empty buffer whose last sent records wait for the batch commit shows
// nothing unsent, not their bytes and age.
func TestRenderStatusEmptyBuffer(t *testing.T) {
	st := statusFixture()
	st.Buffer.Depth, st.Buffer.Bytes, st.Buffer.OldestUnsent = 0, 372, st.Now.Add(-5*time.Second)
	var b bytes.Buffer
	RenderStatus(&b, st)
	want := "buffer        nothing unsent, 0 evicted, sync=batch\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
}

func TestFitColumns(t *testing.T) {
	long := strings.Repeat("x", 78) + "°C and more"
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{strings.Repeat("é", 80), strings.Repeat("é", 80)},
		{strings.Repeat("é", 81), strings.Repeat("é", 79) + "…"},
		{long, strings.Repeat("x", 78) + "°…"},
	} {
		if got := fitColumns(tc.in); got != tc.want {
			t.Errorf("fitColumns(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
