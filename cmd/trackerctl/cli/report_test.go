package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/telemetry/report"
)

// recordedTelemetry is the recorded shipment of telemetry/report.
var recordedTelemetry = filepath.Join("..", "..", "..", "telemetry", "report", "testdata", "shipment.jsonl")

const recordedShipment = "SHP-2026-0311-LOD-MUC"

type reportResult struct {
	code           int
	stdout, stderr string
}

func runReport(t *testing.T, stdin string, args ...string) reportResult {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}
	code := cli.Main(context.Background(), append([]string{"report"}, args...), env)
	return reportResult{code, out.String(), errb.String()}
}

func TestReportHTML(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "r.html")
	r := runReport(t, "", "--shipment", recordedShipment, "--telemetry", recordedTelemetry, "--out", out,
		"--generated-at", "2026-03-12T10:00:00Z", "--tz", "Europe/Berlin", "--title", "Cold-chain record")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "3 excursions") || !strings.Contains(r.stdout, "92.0 %") {
		t.Errorf("stdout = %q, want the excursion count and coverage", r.stdout)
	}
	page, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<h1>Cold-chain record</h1>", "2026-03-11 15:32:10 CET (seal)", "from shipment.jsonl on 2026-03-12 11:00 CET"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestReportJSON(t *testing.T) {
	r := runReport(t, "", "--shipment", recordedShipment, "--telemetry", recordedTelemetry, "--json", "--temp-max", "9")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got report.Report
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not the analysis: %v\n%s", err, r.stdout)
	}
	tel, err := report.ReadFile(recordedTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	th := report.DefaultThresholds
	th.TempMaxC = 9
	want, err := report.Analyze(tel, report.Options{Shipment: recordedShipment, Thresholds: th})
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	if strings.TrimSpace(r.stdout) != string(wantJSON) {
		t.Error("--json output differs from the library's analysis")
	}
	// With the maximum at 9 °C the door-opening excursion is shorter, and
	// still there (9.6 °C).
	if got.Thresholds.TempMaxC != 9 || got.Temperature.Excursions != 2 {
		t.Errorf("thresholds %+v, %d temperature excursions; want max 9 and 2", got.Thresholds, got.Temperature.Excursions)
	}
}

func TestReportFromEmulatorDirAndStdin(t *testing.T) {
	data, err := os.ReadFile(recordedTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	// An emulator directory whose emulator.json names the file.
	emu := t.TempDir()
	tel := filepath.Join(t.TempDir(), "elsewhere.jsonl")
	if err := os.WriteFile(tel, data, 0o644); err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]string{"telemetryFile": tel, "idScope": "0ne00000001"})
	if err := os.WriteFile(filepath.Join(emu, "emulator.json"), info, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runReport(t, "", "--shipment", "SHP-2026-0312-MUC-STR", "--emulator", emu, "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"shipment": "SHP-2026-0312-MUC-STR"`) {
		t.Fatalf("emulator.json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A directory with only telemetry.jsonl.
	bare := t.TempDir()
	if err := os.WriteFile(filepath.Join(bare, "telemetry.jsonl"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runReport(t, "", "--shipment", recordedShipment, "--emulator", bare, "--json"); r.code != 0 {
		t.Fatalf("bare directory: exit %d: %s", r.code, r.stderr)
	}
	if r := runReport(t, string(data), "--shipment", recordedShipment, "--telemetry", "-", "--json"); r.code != 0 {
		t.Fatalf("stdin: exit %d: %s", r.code, r.stderr)
	}
	r = runReport(t, "", "--shipment", recordedShipment, "--emulator", t.TempDir(), "--json")
	if r.code != 1 || !strings.Contains(r.stderr, "neither emulator.json nor telemetry.jsonl") {
		t.Errorf("empty directory: exit %d: %s", r.code, r.stderr)
	}
}

func TestReportErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "r.html")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown shipment", []string{"--shipment", "SHP-X", "--telemetry", recordedTelemetry, "--out", out}, 1,
			[]string{`no records of shipment "SHP-X"`, "SHP-2026-0311-LOD-MUC (device trk-0042, 102 records", "SHP-2026-0311-LIN-BLQ (device trk-0107"}},
		{"no shipment", []string{"--telemetry", recordedTelemetry, "--json"}, 2, []string{"-shipment"}},
		{"no source", []string{"--shipment", "S", "--json"}, 2, []string{"--emulator DIR or --telemetry FILE is required"}},
		{"both sources", []string{"--shipment", "S", "--json", "--telemetry", "a", "--emulator", "b"}, 2, []string{"not both"}},
		{"no output", []string{"--shipment", "S", "--telemetry", recordedTelemetry}, 2, []string{"--out FILE", "--json"}},
		{"bad format", []string{"--shipment", "S", "--telemetry", recordedTelemetry, "--out", out, "--format", "docx"}, 2, []string{"html or pdf"}},
		{"inverted band", []string{"--shipment", "S", "--telemetry", recordedTelemetry, "--json", "--temp-min", "9"}, 2, []string{"temperature minimum 9"}},
		{"bad zone", []string{"--shipment", "S", "--telemetry", recordedTelemetry, "--json", "--tz", "Mars/Olympus"}, 2, []string{"not a known time zone"}},
		{"bad date", []string{"--shipment", "S", "--telemetry", recordedTelemetry, "--json", "--generated-at", "yesterday"}, 2, []string{"RFC 3339"}},
		{"missing file", []string{"--shipment", "S", "--telemetry", filepath.Join(t.TempDir(), "no.jsonl"), "--json"}, 1, []string{"does not exist"}},
		{"not telemetry", []string{"--shipment", "S", "--telemetry", "report_test.go", "--json"}, 1, []string{"line 1", "trackerctl emulator"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runReport(t, "", tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run wrote the report")
	}
}

func TestReportHelp(t *testing.T) {
	r := runReport(t, "", "-help")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{"Chromium", "2 to 8 °C", "870 to 1085 hPa", "-temp-max", "-max-hold"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestReportPDF(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium not installed")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "r.pdf")
	r := runReport(t, "", "--shipment", recordedShipment, "--telemetry", recordedTelemetry, "--out", out, "--generated-at", "none")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("%PDF-")) || len(data) < 10000 {
		t.Errorf("r.pdf is not a PDF report (%d bytes)", len(data))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	r = runReport(t, "", "--shipment", recordedShipment, "--telemetry", recordedTelemetry, "--out", out, "--chromium", "no-such-browser")
	if r.code != 1 || !strings.Contains(r.stderr, "--chromium no-such-browser") {
		t.Errorf("missing browser: exit %d: %s", r.code, r.stderr)
	}
}
