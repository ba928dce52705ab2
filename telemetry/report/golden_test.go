package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/shipment.jsonl and the golden files")

const recordedFile = "testdata/shipment.jsonl"

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run 'go test ./telemetry/report -update' to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (-want +got):\n%s\nrun 'go test ./telemetry/report -update' if the change is intended", name, cmp.Diff(string(want), string(got)))
	}
}

// TestRecordedShipmentFile keeps testdata/shipment.jsonl in step with the
// program that recorded it (recorded_test.go).
func TestRecordedShipmentFile(t *testing.T) {
	golden(t, "shipment.jsonl", recordedShipment())
}

func recorded(t testing.TB) *Telemetry {
	t.Helper()
	tel, err := ReadFile(recordedFile)
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

// goldenRender is what the HTML golden file is rendered with.
var goldenRender = RenderOptions{
	Source:    "shipment.jsonl",
	Generator: "trackerctl (test)",
	Generated: time.Date(2026, 3, 12, 10, 0, 0, 0, time.UTC),
}

func TestGoldenAnalysis(t *testing.T) {
	tel := recorded(t)
	for _, tc := range []struct{ shipment, file string }{
		{recShipment, "shipment.analysis.json"},
		{recShipment2, "shipment2.analysis.json"},
	} {
		t.Run(tc.shipment, func(t *testing.T) {
			rep, err := Analyze(tel, Options{Shipment: tc.shipment})
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.file, append(got, '\n'))
		})
	}
}

func TestGoldenHTML(t *testing.T) {
	rep, err := Analyze(recorded(t), Options{Shipment: recShipment})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteHTML(&b, goldenRender); err != nil {
		t.Fatal(err)
	}
	golden(t, "shipment.html", b.Bytes())
}
