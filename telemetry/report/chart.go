package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Chart geometry, in SVG user units.
const (
	chartW      = 1000
	chartH      = 280
	chartLeft   = 64
	chartRight  = 16
	chartTop    = 22
	chartBottom = 40
)

// svgRect, svgText, svgLine and svgPoint are chart elements with their
// coordinates already formatted, so the template does no arithmetic.
type svgRect struct{ X, Y, W, H, Class, Title string }

type svgText struct{ X, Y, Text, Class, Anchor string }

type svgLine struct{ X1, Y1, X2, Y2, Class string }

type svgPoint struct{ X, Y, Class, Title string }

// timeChart is a quantity over time.
type timeChart struct {
	W, H       int
	Title      string
	Band       svgRect
	Shades     []svgRect // excursions and unobserved time
	Grid       []svgLine
	Thresholds []svgLine
	Labels     []svgText
	Paths      []string
	Points     []svgPoint
	Alerts     []svgPoint
	Frame      svgRect
	Empty      string
}

// f1 formats a coordinate with one decimal.
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// scale maps [d0, d1] onto [r0, r1].
type scale struct{ d0, d1, r0, r1 float64 }

func (s scale) at(v float64) float64 {
	if s.d1 == s.d0 {
		return (s.r0 + s.r1) / 2
	}
	// The conversion rounds the product before the addition: without it
	// arm64 fuses them (FMA) and a coordinate can round differently from
	// amd64, so the same shipment would render differently per machine.
	return s.r0 + float64((v-s.d0)/(s.d1-s.d0)*(s.r1-s.r0))
}

// niceStep returns a step of 1, 2, 2.5 or 5 times a power of ten that
// splits span into at most n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// decimals is how many decimals labels of a step need.
func decimals(step float64) int {
	for d := 0; d < 6; d++ {
		if math.Abs(step*math.Pow(10, float64(d))-math.Round(step*math.Pow(10, float64(d)))) < 1e-9 {
			return d
		}
	}
	return 6
}

// maxTicks bounds the ticks and grid lines of an axis, whatever the
// values (a float step can be too small to advance a huge value).
const maxTicks = 40

// timeSteps are the candidate intervals between time axis ticks.
var timeSteps = []time.Duration{
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 48 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 28 * 24 * time.Hour,
}

// timeTicks returns tick times between t0 and t1 aligned to a step in
// loc, at most about n of them.
func timeTicks(t0, t1 time.Time, n int, loc *time.Location) ([]time.Time, time.Duration) {
	span := t1.Sub(t0)
	step := timeSteps[len(timeSteps)-1]
	for _, s := range timeSteps {
		if span/s <= time.Duration(n) {
			step = s
			break
		}
	}
	if span/step > time.Duration(n) {
		// Longer than the table covers: whole days.
		step = (span / time.Duration(n)).Truncate(24*time.Hour) + 24*time.Hour
	}
	l := t0.In(loc)
	var first time.Time
	if step >= 24*time.Hour {
		first = time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	} else {
		day := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
		first = day.Add(l.Sub(day).Truncate(step))
	}
	var out []time.Time
	for t := first; !t.After(t1) && len(out) <= 4*n; {
		if !t.Before(t0) {
			out = append(out, t)
		}
		if step >= 24*time.Hour {
			t = t.AddDate(0, 0, int(step/(24*time.Hour)))
		} else {
			t = t.Add(step)
		}
	}
	return out, step
}

// tickLabel labels a time tick: the date at midnight or for steps of a
// day or more, else the time of day.
func tickLabel(t time.Time, step time.Duration, loc *time.Location) string {
	l := t.In(loc)
	if step >= 24*time.Hour || (l.Hour() == 0 && l.Minute() == 0) {
		return l.Format("Jan 2")
	}
	return l.Format("15:04")
}

// chartSeries is one quantity for a time chart.
type chartSeries struct {
	title      string
	unit       string
	get        func(*Reading) *float64
	lo, hi     float64
	quantity   string
	alertHigh  string
	alertLow   string
	excursions []numbered
}

// numbered is an excursion with its number in the report.
type numbered struct {
	N int
	Excursion
}

// buildTimeChart draws one quantity of the report.
func buildTimeChart(r *Report, s chartSeries, loc *time.Location) timeChart {
	c := timeChart{W: chartW, H: chartH, Title: s.title}
	px0, px1 := float64(chartLeft), float64(chartW-chartRight)
	py0, py1 := float64(chartTop), float64(chartH-chartBottom)
	c.Frame = svgRect{X: f1(px0), Y: f1(py0), W: f1(px1 - px0), H: f1(py1 - py0)}

	vmin, vmax := s.lo, s.hi
	n := 0
	for i := range r.Readings {
		if p := s.get(&r.Readings[i]); p != nil {
			vmin, vmax = math.Min(vmin, *p), math.Max(vmax, *p)
			n++
		}
	}
	if n == 0 {
		c.Empty = "No " + s.quantity + " readings in this shipment."
	}
	pad := (vmax - vmin) * 0.08
	step := niceStep(vmax-vmin+2*pad, 6)
	d0 := math.Floor((vmin-pad)/step) * step
	d1 := math.Ceil((vmax+pad)/step) * step
	ys := scale{d0, d1, py1, py0}
	t0, t1 := r.Loading, r.Delivery
	if !t1.After(t0) {
		t1 = t0.Add(time.Hour)
	}
	xs := scale{0, t1.Sub(t0).Seconds(), px0, px1}
	x := func(t time.Time) float64 { return xs.at(t.Sub(t0).Seconds()) }

	// Band, threshold lines, grid and labels.
	c.Band = svgRect{X: f1(px0), Y: f1(ys.at(s.hi)), W: f1(px1 - px0), H: f1(ys.at(s.lo) - ys.at(s.hi)), Class: "band"}
	dec := decimals(step)
	for k := 0; k <= maxTicks; k++ {
		v := d0 + float64(float64(k)*step) // no FMA, as in scale.at
		if v > d1+step/1e6 {
			break
		}
		y := ys.at(v)
		c.Grid = append(c.Grid, svgLine{X1: f1(px0), Y1: f1(y), X2: f1(px1), Y2: f1(y), Class: "grid"})
		c.Labels = append(c.Labels, svgText{X: f1(px0 - 6), Y: f1(y + 4), Text: strconv.FormatFloat(v, 'f', dec, 64), Class: "tick", Anchor: "end"})
	}
	ticks, tstep := timeTicks(t0, t1, 9, loc)
	for _, t := range ticks {
		xx := x(t)
		c.Grid = append(c.Grid, svgLine{X1: f1(xx), Y1: f1(py0), X2: f1(xx), Y2: f1(py1), Class: "grid"})
		c.Labels = append(c.Labels, svgText{X: f1(xx), Y: f1(py1 + 16), Text: tickLabel(t, tstep, loc), Class: "tick", Anchor: "middle"})
	}
	c.Labels = append(c.Labels, svgText{X: f1(px0 - 6), Y: f1(py0 - 8), Text: s.unit, Class: "unit", Anchor: "end"})
	for _, th := range []struct {
		v    float64
		name string
	}{{s.hi, "max"}, {s.lo, "min"}} {
		y := ys.at(th.v)
		c.Thresholds = append(c.Thresholds, svgLine{X1: f1(px0), Y1: f1(y), X2: f1(px1), Y2: f1(y), Class: "thr"})
		c.Labels = append(c.Labels, svgText{X: f1(px1 - 4), Y: f1(y - 4), Text: th.name + " " + trimFloat(th.v) + " " + s.unit, Class: "thrlabel", Anchor: "end"})
	}

	// Unobserved time: beyond a reading's hold, and sensor faults.
	for i := range r.Readings {
		rd := &r.Readings[i]
		next := r.Delivery
		if i+1 < len(r.Readings) {
			next = r.Readings[i+1].Time
		}
		from := rd.Time.Add(rd.Hold)
		if s.get(rd) == nil {
			from = rd.Time
		}
		if next.After(from) {
			c.Shades = append(c.Shades, svgRect{X: f1(x(from)), Y: f1(py0), W: f1(x(next) - x(from)), H: f1(py1 - py0), Class: "nodata", Title: "no data " + fmtTime(from, loc) + " to " + fmtTime(next, loc)})
		}
	}
	if len(r.Readings) > 0 && r.Readings[0].Time.After(r.Loading) {
		c.Shades = append(c.Shades, svgRect{X: f1(x(r.Loading)), Y: f1(py0), W: f1(x(r.Readings[0].Time) - x(r.Loading)), H: f1(py1 - py0), Class: "nodata", Title: "no data before the first reading"})
	}
	for _, e := range s.excursions {
		x0, x1 := x(e.Start), x(e.End)
		c.Shades = append(c.Shades, svgRect{X: f1(x0), Y: f1(py0), W: f1(math.Max(x1-x0, 1.5)), H: f1(py1 - py0), Class: "exc", Title: fmt.Sprintf("excursion %d: %s %s, %s", e.N, e.Quantity, e.Direction, fmtDuration(e.Duration.Std()))})
		c.Labels = append(c.Labels, svgText{X: f1((x0 + x1) / 2), Y: f1(py0 - 6), Text: strconv.Itoa(e.N), Class: "excnum", Anchor: "middle"})
	}

	// The line, broken at gaps and faults, and the out-of-band points.
	var seg []pt
	flush := func() {
		if len(seg) > 0 {
			c.Paths = append(c.Paths, pathD(decimate(seg)))
		}
		seg = seg[:0]
	}
	for i := range r.Readings {
		rd := &r.Readings[i]
		p := s.get(rd)
		if p == nil {
			flush()
			continue
		}
		xx, yy := x(rd.Time), ys.at(*p)
		seg = append(seg, pt{xx, yy})
		if *p > s.hi || *p < s.lo {
			c.Points = append(c.Points, svgPoint{X: f1(xx), Y: f1(yy), Class: "out", Title: fmtTime(rd.Time, loc) + ": " + trimFloat(*p) + " " + s.unit})
		}
		for _, a := range rd.Alerts {
			if a == s.alertHigh || a == s.alertLow {
				c.Alerts = append(c.Alerts, svgPoint{X: f1(xx), Y: f1(py1 - 1), Class: "alert", Title: fmtTime(rd.Time, loc) + ": device alert " + a})
				break
			}
		}
		if rd.Gap {
			flush()
		}
	}
	flush()
	return c
}

type pt struct{ x, y float64 }

// decimate keeps, per pixel column, the first, lowest, highest and last
// point, so a long shipment draws fast and keeps its extremes.
func decimate(ps []pt) []pt {
	if len(ps) <= 2*chartW {
		return ps
	}
	var out []pt
	for i := 0; i < len(ps); {
		col := math.Floor(ps[i].x)
		j := i
		lo, hi := i, i
		for j < len(ps) && math.Floor(ps[j].x) == col {
			if ps[j].y < ps[lo].y {
				lo = j
			}
			if ps[j].y > ps[hi].y {
				hi = j
			}
			j++
		}
		keep := []int{i, lo, hi, j - 1}
		// Keep them in time order, once each.
		for a := 1; a < len(keep); a++ {
			for b := a; b > 0 && keep[b] < keep[b-1]; b-- {
				keep[b], keep[b-1] = keep[b-1], keep[b]
			}
		}
		for k, idx := range keep {
			if k == 0 || idx != keep[k-1] {
				out = append(out, ps[idx])
			}
		}
		i = j
	}
	return out
}

// pathD is an SVG path through the points.
func pathD(ps []pt) string {
	var b strings.Builder
	for i, p := range ps {
		if i == 0 {
			b.WriteString("M")
		} else {
			b.WriteString(" L")
		}
		b.WriteString(f1(p.x))
		b.WriteByte(' ')
		b.WriteString(f1(p.y))
	}
	if len(ps) == 1 {
		// A lone reading: a short stroke so it is visible.
		b.WriteString(" h1")
	}
	return b.String()
}

// trimFloat formats v with up to two decimals and no trailing zeros.
func trimFloat(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	if s == "-0" {
		s = "0"
	}
	return s
}
