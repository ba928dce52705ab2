package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

//go:embed report.html.tmpl
var pageTemplate string

var pageTmpl = template.Must(template.New("report").Parse(pageTemplate))

// maxRows bounds the rows of the long completeness tables; the rest is
// summarised in one line.
const maxRows = 25

// RenderOptions is what the HTML shows beyond the report. Everything that
// varies between runs is injected here, so equal inputs render equal
// bytes.
type RenderOptions struct {
	// Title heads the page; "" means "Cold-chain report".
	Title string
	// Source names the telemetry the report was made from (a file name).
	Source string
	// Generator names the program and version ("trackerctl 1.4.0").
	Generator string
	// Generated is when the report was made; the zero time leaves it out.
	Generated time.Time
	// Location is the time zone of the times shown; nil means UTC.
	Location *time.Location
}

// kv is a row of a two-column table.
type kv struct{ K, V string }

type excRow struct {
	N                                                     int
	What, Start, End, Duration, Extreme, ExtremeAt, Where string
	Readings                                              int
	Alerted, Notes                                        string
}

type page struct {
	Title, Subtitle string
	Verdict         string
	VerdictClass    string
	Caveats         []string
	Summary         []kv
	Stats           []statRow
	TempChart       timeChart
	PresChart       timeChart
	Map             routeMap
	RouteFacts      []kv
	Excursions      []excRow
	Alerts          [][]string
	Completeness    []kv
	Clock           []clockRow
	Missing         [][]string
	MoreMissing     int
	GapEvents       [][]string
	TimeGaps        [][]string
	MoreGaps        int
	Method          []string
	Footer          string
}

type statRow struct {
	Name                                             string
	Min, Max, Mean, MKT, Above, Below, Observed, Exc string
}

type clockRow struct {
	Source, Count, Pct, Width string
}

// WriteHTML renders the report as one self-contained HTML page.
func (r *Report) WriteHTML(w io.Writer, o RenderOptions) error {
	if err := pageTmpl.Execute(w, r.page(o)); err != nil {
		return fmt.Errorf("report: render html: %w", err)
	}
	return nil
}

func (r *Report) page(o RenderOptions) page {
	loc := o.Location
	if loc == nil {
		loc = time.UTC
	}
	tm := func(t time.Time) string { return fmtTime(t, loc) }
	dur := func(d Duration) string { return fmtDuration(d.Std()) }
	th := r.Thresholds
	c := &r.Completeness
	p := page{Title: o.Title}
	if p.Title == "" {
		p.Title = "Cold-chain report"
	}
	p.Subtitle = "Shipment " + r.Shipment + " · tracker " + r.Device

	var nums []numbered
	for i, e := range r.Excursions {
		nums = append(nums, numbered{N: i + 1, Excursion: e})
	}

	// Verdict and caveats.
	if len(r.Excursions) == 0 {
		p.Verdict, p.VerdictClass = "No excursion outside the thresholds", "ok"
	} else {
		var parts []string
		for _, q := range []struct {
			name string
			q    Quantity
		}{{"temperature", r.Temperature}, {"pressure", r.Pressure}} {
			if q.q.Excursions > 0 {
				parts = append(parts, plural(q.q.Excursions, q.name+" excursion", q.name+" excursions"))
			}
		}
		p.Verdict, p.VerdictClass = strings.Join(parts, ", "), "bad"
	}
	if r.Duration > 0 {
		cover := 100 * (1 - float64(c.Unobserved)/float64(r.Duration))
		if c.Unobserved > 0 {
			p.Caveats = append(p.Caveats, fmt.Sprintf("Readings cover %s %% of the shipment; %s without data.", strconv.FormatFloat(cover, 'f', 1, 64), dur(c.Unobserved)))
		}
	}
	if c.Evicted > 0 || c.EvictedUnknown > 0 {
		p.Caveats = append(p.Caveats, "The tracker's buffer discarded "+evictedText(c)+" while offline.")
	}
	if u := c.MissingSeqs - c.MissingExplained; u > 0 {
		p.Caveats = append(p.Caveats, plural(int(u), "record is", "records are")+" missing without explanation (not received, or not yet delivered).")
	}
	if c.Clock.UntimedOutOfBand > 0 {
		p.Caveats = append(p.Caveats, plural(c.Clock.UntimedOutOfBand, "reading", "readings")+" without a trusted time "+isAre(c.Clock.UntimedOutOfBand)+" outside the thresholds.")
	}
	if !r.Sealed {
		p.Caveats = append(p.Caveats, "The shipment was not sealed: delivery is the time of the last record received.")
	}

	deliveredBy := "seal"
	if !r.Sealed {
		deliveredBy = "last record, not sealed"
	}
	p.Summary = []kv{
		{"Shipment", r.Shipment},
		{"Tracker", r.Device},
		{"Loading", tm(r.Loading) + " (first record)"},
		{"Delivery", tm(r.Delivery) + " (" + deliveredBy + ")"},
		{"Duration", dur(r.Duration)},
		{"Temperature band", trimFloat(th.TempMinC) + " to " + trimFloat(th.TempMaxC) + " °C"},
		{"Pressure band", trimFloat(th.PressureMinHPa) + " to " + trimFloat(th.PressureMaxHPa) + " hPa"},
		{"Readings", strconv.Itoa(c.Readings) + " (median interval " + dur(c.MedianInterval) + ")"},
	}
	if r.Route.Fixes > 0 {
		p.Summary = append(p.Summary, kv{"Distance", strconv.FormatFloat(r.Route.DistanceKm, 'f', 0, 64) + " km"})
	}

	for _, q := range []struct {
		name string
		q    Quantity
		dec  int
	}{{"Temperature", r.Temperature, 1}, {"Pressure", r.Pressure, 0}} {
		row := statRow{Name: q.name + " (" + q.q.Unit + ")", MKT: "–", Exc: strconv.Itoa(q.q.Excursions)}
		if q.q.Readings == 0 {
			row.Min, row.Max, row.Mean, row.Above, row.Below, row.Observed = "–", "–", "–", "–", "–", "–"
		} else {
			row.Min = strconv.FormatFloat(q.q.Min, 'f', q.dec, 64)
			row.Max = strconv.FormatFloat(q.q.Max, 'f', q.dec, 64)
			row.Mean = strconv.FormatFloat(q.q.Mean, 'f', q.dec, 64)
			if q.q.MKT != nil {
				row.MKT = strconv.FormatFloat(*q.q.MKT, 'f', 1, 64)
			}
			row.Above, row.Below, row.Observed = dur(q.q.Above), dur(q.q.Below), dur(q.q.Observed)
		}
		p.Stats = append(p.Stats, row)
	}

	var tNums, pNums []numbered
	for _, n := range nums {
		if n.Quantity == Temperature {
			tNums = append(tNums, n)
		} else {
			pNums = append(pNums, n)
		}
	}
	p.TempChart = buildTimeChart(r, chartSeries{title: "Temperature", unit: "°C", get: tempOf, lo: th.TempMinC, hi: th.TempMaxC, quantity: Temperature,
		alertHigh: telemetry.AlertTempHigh, alertLow: telemetry.AlertTempLow, excursions: tNums}, loc)
	p.PresChart = buildTimeChart(r, chartSeries{title: "Pressure", unit: "hPa", get: pressureOf, lo: th.PressureMinHPa, hi: th.PressureMaxHPa, quantity: Pressure,
		alertHigh: telemetry.AlertPressureHigh, alertLow: telemetry.AlertPressureLow, excursions: pNums}, loc)
	p.Map = buildMap(r, nums)
	if rt := r.Route; rt.Fixes > 0 {
		p.RouteFacts = []kv{
			{"From", posText(rt.Start.Lat, rt.Start.Lon)},
			{"To", posText(rt.End.Lat, rt.End.Lon)},
			{"Track length", strconv.FormatFloat(rt.DistanceKm, 'f', 1, 64) + " km"},
			{"Positions", strconv.Itoa(rt.Fixes) + " of " + strconv.Itoa(c.Readings) + " readings"},
		}
	}

	for _, n := range nums {
		e := n.Excursion
		unit := "°C"
		dec := 1
		if e.Quantity == Pressure {
			unit, dec = "hPa", 0
		}
		dir := "above " + trimFloat(e.Threshold) + " " + unit
		if e.Direction == Low {
			dir = "below " + trimFloat(e.Threshold) + " " + unit
		}
		row := excRow{
			N: n.N, What: capitalise(e.Quantity) + " " + dir,
			Start: tm(e.Start), End: tm(e.End), Duration: dur(e.Duration),
			Extreme:   strconv.FormatFloat(e.Extreme, 'f', dec, 64) + " " + unit,
			ExtremeAt: tm(e.ExtremeAt), Readings: e.Readings, Alerted: "no", Where: "–",
		}
		if e.DeviceAlerted {
			row.Alerted = "yes"
		}
		if e.Where != nil {
			row.Where = posText(e.Where.Lat, e.Where.Lon)
		}
		var notes []string
		if e.OpenStart {
			notes = append(notes, "start not observed")
		}
		if e.OpenEnded {
			notes = append(notes, "end not observed")
		}
		if e.Unobserved > 0 {
			notes = append(notes, dur(e.Unobserved)+" without data")
		}
		row.Notes = strings.Join(notes, "; ")
		p.Excursions = append(p.Excursions, row)
	}
	for _, a := range r.DeviceAlerts {
		p.Alerts = append(p.Alerts, []string{alertName(a.Alert), tm(a.Start), tm(a.End), dur(Duration(a.End.Sub(a.Start))), strconv.Itoa(a.Readings), seqSpan(a.FirstSeq, a.LastSeq)})
	}

	// Completeness.
	p.Completeness = []kv{
		{"Records", fmt.Sprintf("%d (%d readings, %d seal)", c.Records, c.Readings, c.Seals)},
		{"Sequence numbers", fmt.Sprintf("%d to %d", c.FirstSeq, c.LastSeq)},
		{"Missing sequence numbers", fmt.Sprintf("%d (%d explained by the buffer's gap reports)", c.MissingSeqs, c.MissingExplained)},
		{"Records discarded by the buffer", evictedText(c)},
		{"Duplicates received", strconv.Itoa(c.Duplicates) + " (counted once)"},
		{"Time without data", dur(c.Unobserved) + " (" + plural(len(c.TimeGaps), "gap", "gaps") + " longer than " + dur(r.MaxHold) + ")"},
		{"Sensor faults", faultText(c)},
		{"Readings without position", fmt.Sprintf("%d (and %d with a stale position)", c.NoFix, c.StaleFix)},
	}
	total := c.Records
	for _, s := range []struct {
		name string
		n    int
	}{{"GPS", c.Clock.GPS}, {"System clock (NTP)", c.Clock.System}, {"Unsynced", c.Clock.Unsynced}, {"Other", c.Clock.Other}} {
		if s.n == 0 && s.name == "Other" {
			continue
		}
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(s.n) / float64(total)
		}
		p.Clock = append(p.Clock, clockRow{Source: s.name, Count: strconv.Itoa(s.n), Pct: strconv.FormatFloat(pct, 'f', 1, 64), Width: f1(pct * 3)})
	}
	p.Completeness = append(p.Completeness,
		kv{"Retimed records", strconv.Itoa(c.Clock.Retimed) + " (taken before the clock was trusted, timestamped later)"},
		kv{"Records without a trusted time", fmt.Sprintf("%d (left out of the charts and durations; %d of them outside the thresholds)", c.Clock.Untimed, c.Clock.UntimedOutOfBand)},
	)
	for i, m := range c.Missing {
		if i == maxRows {
			p.MoreMissing = len(c.Missing) - maxRows
			break
		}
		why := "not received"
		if m.Explained == m.Count {
			why = strings.Join(m.Reasons, ", ")
		} else if m.Explained > 0 {
			why = fmt.Sprintf("%d of %d: %s", m.Explained, m.Count, strings.Join(m.Reasons, ", "))
		}
		p.Missing = append(p.Missing, []string{seqSpan(m.First, m.Last), strconv.FormatUint(m.Count, 10), why})
	}
	for _, g := range c.GapEvents {
		count := strconv.FormatUint(g.Count, 10)
		if g.Count == 0 {
			count = "unknown"
		}
		var notes []string
		if g.Superseded {
			notes = append(notes, "folded into a later report")
		}
		if g.Beyond {
			notes = append(notes, "range reaches outside this shipment")
		}
		p.GapEvents = append(p.GapEvents, []string{tm(g.Time), g.Reason, seqSpan(g.FirstSeq, g.LastSeq), count, strings.Join(notes, "; ")})
	}
	for i, g := range c.TimeGaps {
		if i == maxRows {
			p.MoreGaps = len(c.TimeGaps) - maxRows
			break
		}
		p.TimeGaps = append(p.TimeGaps, []string{tm(g.From), tm(g.To), dur(g.Duration)})
	}

	p.Method = []string{
		"A reading stands for the time up to the next record, at most " + dur(r.MaxHold) + "; longer intervals count as time without data, neither inside nor outside the band.",
		"A reading is outside the band when strictly above the maximum or strictly below the minimum. An excursion is a run of consecutive readings outside the band on the same side; it starts at its first reading and ends when the next reading is back in the band (or when its last reading's time runs out).",
		"Mean and mean kinetic temperature (ΔH/R = 10000 K) are weighted by the time each reading stands for.",
		"Records are deduplicated on tracker and sequence number. Device alerts use the thresholds configured on the tracker, which may differ from the band of this report.",
	}
	var foot []string
	if o.Generator != "" {
		foot = append(foot, "Made with "+o.Generator)
	}
	if o.Source != "" {
		foot = append(foot, "from "+o.Source)
	}
	if !o.Generated.IsZero() {
		foot = append(foot, "on "+tm(o.Generated))
	}
	if len(foot) > 0 {
		p.Footer = strings.Join(foot, " ") + "."
	}
	return p
}

func evictedText(c *Completeness) string {
	switch {
	case c.Evicted == 0 && c.EvictedUnknown == 0:
		return "none reported"
	case c.EvictedUnknown == 0:
		return plural(int(c.Evicted), "record", "records")
	case c.Evicted == 0:
		return "an unknown number of records (" + plural(c.EvictedUnknown, "report", "reports") + ")"
	}
	return plural(int(c.Evicted), "record", "records") + " and an unknown number more"
}

func faultText(c *Completeness) string {
	if c.SensorFaults == 0 {
		return "none"
	}
	var parts []string
	for _, f := range c.FaultReasons {
		parts = append(parts, fmt.Sprintf("%d × %s", f.Count, f.Reason))
	}
	return strconv.Itoa(c.SensorFaults) + " (" + strings.Join(parts, ", ") + ")"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func isAre(n int) string {
	if n == 1 {
		return "was"
	}
	return "were"
}

func seqSpan(a, b uint64) string {
	if a == b {
		return strconv.FormatUint(a, 10)
	}
	return strconv.FormatUint(a, 10) + "–" + strconv.FormatUint(b, 10)
}

func posText(lat, lon float64) string {
	for lon > 180 {
		lon -= 360
	}
	return latLabel(lat, 4) + " " + lonLabel(lon, 4)
}

func capitalise(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func alertName(a string) string {
	switch a {
	case telemetry.AlertTempHigh:
		return "Temperature high"
	case telemetry.AlertTempLow:
		return "Temperature low"
	case telemetry.AlertPressureHigh:
		return "Pressure high"
	case telemetry.AlertPressureLow:
		return "Pressure low"
	}
	return a
}
