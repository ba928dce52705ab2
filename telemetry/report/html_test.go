package report

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/telemetry"
	"github.com/google/go-cmp/cmp"
)

func render(t *testing.T, rep *Report, o RenderOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := rep.WriteHTML(&b, o); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestHTMLSelfContained(t *testing.T) {
	rep, err := Analyze(recorded(t), Options{Shipment: recShipment})
	if err != nil {
		t.Fatal(err)
	}
	page := render(t, rep, goldenRender)
	for _, bad := range []string{"<script", "<link", "<img", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must need nothing beyond itself", bad)
		}
	}
	for _, m := range regexp.MustCompile(`https?://[^"' )]+`).FindAllString(page, -1) {
		if m != "http://www.w3.org/2000/svg" {
			t.Errorf("page refers to %s", m)
		}
	}
	for _, want := range []string{
		"@media print", "Shipment SHP-2026-0311-LOD-MUC · tracker trk-0042",
		"2 temperature excursions, 1 pressure excursion",
		"Pressure below 870 hPa", "Temperature above 8 °C", "Temperature below 2 °C",
		"2026-03-11 14:32:10 UTC (seal)", "unclean-shutdown", "thinned", "km</text>",
		"Made with trackerctl (test) from shipment.jsonl on 2026-03-12 10:00 UTC.",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if again := render(t, rep, goldenRender); again != page {
		t.Error("two renderings of one report differ")
	}
	// Nothing varies unless injected: without Generated there is no date.
	if p := render(t, rep, RenderOptions{}); strings.Contains(p, "<footer>") {
		t.Error("a footer without generator, source or date")
	}
}

func TestHTMLTimeZone(t *testing.T) {
	rep, err := Analyze(recorded(t), Options{Shipment: recShipment})
	if err != nil {
		t.Fatal(err)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	page := render(t, rep, RenderOptions{Location: berlin})
	if !strings.Contains(page, "2026-03-11 15:32:10 CET (seal)") {
		t.Error("delivery not shown in CET")
	}
}

func TestHTMLEscapesInput(t *testing.T) {
	r := rd(1, 0, 5)
	r.Shipment, r.Device = `<b>"x"&`, `<i>dev`
	r.EnvFault = ""
	f := rd(2, 5, nanValue())
	f.Shipment, f.Device, f.EnvFault = r.Shipment, r.Device, `<script>alert(1)</script>`
	rep, err := Analyze(&Telemetry{Records: []DeviceRecord{r, f}}, Options{Shipment: r.Shipment})
	if err != nil {
		t.Fatal(err)
	}
	page := render(t, rep, RenderOptions{Title: "<u>t</u>"})
	for _, raw := range []string{"<b>", "<i>dev", "<script>", "<u>t"} {
		if strings.Contains(page, raw) {
			t.Errorf("page contains unescaped %q", raw)
		}
	}
	if !strings.Contains(page, "&lt;b&gt;") || !strings.Contains(page, "&lt;script&gt;") {
		t.Error("escaped input not found in the page")
	}
	if !strings.Contains(page, "No GPS position was recorded") {
		t.Error("a shipment without positions does not say so")
	}
}

func nanValue() float64 { return nan() }

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct {
		span float64
		n    int
		want float64
	}{{12, 6, 2}, {215, 6, 50}, {1, 6, 0.2}, {0.07, 6, 0.02}, {9, 6, 2}, {15, 6, 2.5}, {0, 6, 1}} {
		if got := niceStep(tc.span, tc.n); got != tc.want {
			t.Errorf("niceStep(%v, %d) = %v, want %v", tc.span, tc.n, got, tc.want)
		}
	}
}

func TestTimeTicks(t *testing.T) {
	from := time.Date(2026, 3, 11, 5, 20, 30, 0, time.UTC)
	ticks, step := timeTicks(from, from.Add(9*time.Hour+12*time.Minute), 9, time.UTC)
	if step != time.Hour {
		t.Errorf("step = %v, want 1h", step)
	}
	var got []string
	for _, tk := range ticks {
		got = append(got, tickLabel(tk, step, time.UTC))
	}
	if diff := cmp.Diff([]string{"06:00", "07:00", "08:00", "09:00", "10:00", "11:00", "12:00", "13:00", "14:00"}, got); diff != "" {
		t.Errorf("ticks (-want +got):\n%s", diff)
	}
	ticks, step = timeTicks(from, from.Add(50*time.Hour), 9, time.UTC)
	if step != 6*time.Hour || tickLabel(ticks[3], step, time.UTC) != "Mar 12" {
		t.Errorf("50 h: step %v, fourth tick %v", step, ticks[3])
	}
	// Centuries: whole days, still about n ticks.
	ticks, _ = timeTicks(from, from.Add(200*365*24*time.Hour), 9, time.UTC)
	if len(ticks) > 10 || len(ticks) < 5 {
		t.Errorf("200 years: %d ticks", len(ticks))
	}
}

func TestFmtDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"}, {40 * time.Second, "40 s"}, {12 * time.Minute, "12 min"}, {90 * time.Second, "1 min 30 s"},
		{65 * time.Minute, "1 h 05 min"}, {2 * time.Hour, "2 h"}, {27 * time.Hour, "1 d 3 h"}, {48 * time.Hour, "2 d"},
	} {
		if got := fmtDuration(tc.d); got != tc.want {
			t.Errorf("fmtDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestDecimateKeepsExtremes(t *testing.T) {
	var ps []pt
	for i := range 10000 {
		y := float64(i % 7)
		if i == 5003 {
			y = -50
		}
		ps = append(ps, pt{float64(i) / 10, y})
	}
	out := decimate(ps)
	if len(out) >= len(ps)/2 {
		t.Errorf("decimate kept %d of %d points", len(out), len(ps))
	}
	lo, hi := 0.0, 0.0
	for i, p := range out {
		lo, hi = min(lo, p.y), max(hi, p.y)
		if i > 0 && p.x < out[i-1].x {
			t.Fatalf("points out of order at %d", i)
		}
	}
	if lo != -50 || hi != 6 {
		t.Errorf("extremes %v, %v; want -50, 6", lo, hi)
	}
}

func TestMapMarkersDoNotOverlap(t *testing.T) {
	rep, err := Analyze(recorded(t), Options{Shipment: recShipment})
	if err != nil {
		t.Fatal(err)
	}
	var nums []numbered
	for i, e := range rep.Excursions {
		nums = append(nums, numbered{N: i + 1, Excursion: e})
	}
	m := buildMap(rep, nums)
	if len(m.Marks) != 3 {
		t.Fatalf("%d markers, want 3", len(m.Marks))
	}
	// Excursions 1 and 2 start at the same border stop.
	if m.Marks[0].X == m.Marks[1].X && m.Marks[0].Y == m.Marks[1].Y {
		t.Error("markers of excursions 1 and 2 are drawn on top of each other")
	}
}

func TestMapAtThePole(t *testing.T) {
	a, b := rd(1, 0, 5), rd(2, 5, 5)
	a.Fix = &telemetry.Fix{Mode: 3, Lat: 90, Lon: 0}
	b.Fix = &telemetry.Fix{Mode: 3, Lat: 90, Lon: 0}
	rep, err := Analyze(&Telemetry{Records: []DeviceRecord{a, b}}, Options{Shipment: "S"})
	if err != nil {
		t.Fatal(err)
	}
	if page := render(t, rep, RenderOptions{}); strings.Contains(page, "NaN") || strings.Contains(page, "Inf") {
		t.Error("map at the pole has NaN or Inf coordinates")
	}
}

func TestChartWithHugeValues(t *testing.T) {
	// A float step too small to advance the value must not loop forever.
	a, b := rd(1, 0, 1e20), rd(2, 5, 1e20)
	rep, err := Analyze(&Telemetry{Records: []DeviceRecord{a, b}}, Options{Shipment: "S",
		Thresholds: Thresholds{TempMinC: 1e20, TempMaxC: 1e20 + 65536, PressureMinHPa: 0, PressureMaxHPa: 1e300}})
	if err != nil {
		t.Fatal(err)
	}
	c := buildTimeChart(rep, chartSeries{title: "T", unit: "°C", get: tempOf, lo: 1e20, hi: 1e20 + 65536, quantity: Temperature}, time.UTC)
	if len(c.Grid) > 2*maxTicks+20 {
		t.Errorf("%d grid lines", len(c.Grid))
	}
	render(t, rep, RenderOptions{})
}
