package report

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"testing"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// longShipment is 30 days of readings every 5 minutes (8640), with a
// temperature excursion every day, as telemetry.jsonl.
func longShipment(b *testing.B) []byte {
	b.Helper()
	var out bytes.Buffer
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 30 * 24 * 12 {
		t := start.Add(time.Duration(i) * 5 * time.Minute)
		temp := 5 + 2*math.Sin(float64(i)/40)
		if i%288 < 6 {
			temp = 9
		}
		r := telemetry.Record{Seq: uint64(i + 1), Kind: telemetry.KindReading, Time: t, Clock: ClockGPS, Shipment: "LONG",
			Env: &telemetry.Env{TempC: temp, PressureHPa: 1000 + 10*math.Cos(float64(i)/90)},
			Fix: &telemetry.Fix{Time: t, Mode: 3, Lat: 30 + float64(i)/1000, Lon: -40 + float64(i)/500}}
		body, err := json.Marshal(telemetry.Batch{V: 1, Device: "d", Records: []telemetry.Record{r}})
		if err != nil {
			b.Fatal(err)
		}
		out.WriteString(event("d", telemetry.MessageID("d", []uint64{r.Seq}), string(body)))
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func BenchmarkParse30Days(b *testing.B) {
	data := longShipment(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnalyze30Days(b *testing.B) {
	tel, err := Parse(bytes.NewReader(longShipment(b)))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Analyze(tel, Options{Shipment: "LONG"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteHTML30Days(b *testing.B) {
	tel, err := Parse(bytes.NewReader(longShipment(b)))
	if err != nil {
		b.Fatal(err)
	}
	rep, err := Analyze(tel, Options{Shipment: "LONG"})
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for b.Loop() {
		cw := &countWriter{}
		if err := rep.WriteHTML(cw, RenderOptions{}); err != nil {
			b.Fatal(err)
		}
		n = cw.n
	}
	b.ReportMetric(float64(n), "html-bytes")
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)
