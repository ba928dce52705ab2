package report

import (
	"math"
	"strconv"
	"time"
)

// Route map geometry, in SVG user units.
const (
	mapW      = 1000
	mapMaxH   = 560
	mapMinH   = 240
	mapMargin = 24
	// kmPerDegree is the length of one degree of latitude.
	kmPerDegree = earthRadiusKm * math.Pi / 180
	// minSpanDeg keeps a map of a container that never moved readable.
	minSpanDeg = 0.02
)

// routeMap is the route in an equirectangular projection scaled to the
// track's bounding box.
type routeMap struct {
	W, H    int
	Frame   svgRect
	Grid    []svgLine
	Labels  []svgText
	Paths   []string // moving track
	Jumps   []string // straight lines across time gaps
	Start   svgPoint
	End     svgPoint
	Marks   []svgPoint // excursion starts
	MarkNum []svgText
	Scale   []svgLine
	Empty   string
}

// buildMap draws the route with a scale bar, start and end markers and
// the excursions' start positions.
func buildMap(r *Report, excursions []numbered) routeMap {
	rt := r.Route
	m := routeMap{W: mapW, H: mapMinH}
	if rt.Fixes == 0 {
		m.Empty = "No GPS position was recorded during this shipment."
		m.Frame = svgRect{X: "0", Y: "0", W: strconv.Itoa(mapW), H: strconv.Itoa(m.H)}
		return m
	}
	midLat := (rt.South + rt.North) / 2
	// Near a pole the projection degenerates; keep a usable width.
	kx := math.Max(math.Cos(midLat*math.Pi/180), 0.05)
	west, east, south, north := rt.West, rt.East, rt.South, rt.North
	if (east-west)*kx < minSpanDeg {
		c := (east + west) / 2
		west, east = c-minSpanDeg/kx/2, c+minSpanDeg/kx/2
	}
	if north-south < minSpanDeg {
		c := (north + south) / 2
		south, north = c-minSpanDeg/2, c+minSpanDeg/2
	}
	// 6% padding on every side.
	dx, dy := (east-west)*kx, north-south
	west, east = west-0.06*dx/kx, east+0.06*dx/kx
	south, north = south-0.06*dy, north+0.06*dy
	dx, dy = (east-west)*kx, north-south

	innerW := float64(mapW - 2*mapMargin)
	k := innerW / dx // px per projected degree
	h := dy * k
	if h > mapMaxH-2*mapMargin {
		k = (mapMaxH - 2*mapMargin) / dy
		h = mapMaxH - 2*mapMargin
	}
	m.H = int(math.Max(math.Ceil(h)+2*mapMargin, mapMinH))
	// Centre the projected box in the frame.
	ox := (float64(mapW) - dx*k) / 2
	oy := (float64(m.H) - dy*k) / 2
	px := func(lon float64) float64 { return ox + (lon-west)*kx*k }
	py := func(lat float64) float64 { return oy + (north-lat)*k }
	m.Frame = svgRect{X: "0", Y: "0", W: strconv.Itoa(mapW), H: strconv.Itoa(m.H)}

	// Graticule.
	step := niceStep(math.Max(east-west, north-south), 6)
	dec := decimals(step)
	for k := 0; k <= maxTicks; k++ {
		lon := (math.Ceil(west/step) + float64(k)) * step
		if lon > east {
			break
		}
		x := px(lon)
		m.Grid = append(m.Grid, svgLine{X1: f1(x), Y1: "0", X2: f1(x), Y2: strconv.Itoa(m.H), Class: "grat"})
		m.Labels = append(m.Labels, svgText{X: f1(x + 3), Y: strconv.Itoa(m.H - 6), Text: lonLabel(lon, dec), Class: "gratlabel", Anchor: "start"})
	}
	for k := 0; k <= maxTicks; k++ {
		lat := (math.Ceil(south/step) + float64(k)) * step
		if lat > north {
			break
		}
		y := py(lat)
		m.Grid = append(m.Grid, svgLine{X1: "0", Y1: f1(y), X2: strconv.Itoa(mapW), Y2: f1(y), Class: "grat"})
		m.Labels = append(m.Labels, svgText{X: "4", Y: f1(y - 3), Text: latLabel(lat, dec), Class: "gratlabel", Anchor: "start"})
	}

	// Track: solid while readings follow each other, a dashed jump across
	// a time gap.
	hold := r.MaxHold.Std()
	var seg []pt
	flush := func() {
		if len(seg) > 1 {
			m.Paths = append(m.Paths, pathD(seg))
		}
		seg = seg[:0]
	}
	for i, p := range rt.Points {
		q := pt{px(p.Lon), py(p.Lat)}
		if i > 0 && p.Time.Sub(rt.Points[i-1].Time) > hold {
			prev := rt.Points[i-1]
			m.Jumps = append(m.Jumps, pathD([]pt{{px(prev.Lon), py(prev.Lat)}, q}))
			flush()
		}
		seg = append(seg, q)
	}
	flush()
	s, e := rt.Points[0], rt.Points[len(rt.Points)-1]
	m.Start = svgPoint{X: f1(px(s.Lon)), Y: f1(py(s.Lat)), Class: "start", Title: "loading position"}
	m.End = svgPoint{X: f1(px(e.Lon)), Y: f1(py(e.Lat)), Class: "end", Title: "delivery position"}
	shift := rt.East > 180
	var placed []pt
	for _, ex := range excursions {
		if ex.Where == nil {
			continue
		}
		lon := ex.Where.Lon
		if shift && lon < 0 {
			lon += 360
		}
		x, y := px(lon), py(ex.Where.Lat)
		// Excursions that start at the same place (a border stop) get
		// their markers side by side.
		for moved := true; moved; {
			moved = false
			for _, o := range placed {
				if math.Abs(o.x-x) < 18 && math.Abs(o.y-y) < 18 {
					x, moved = o.x+20, true
				}
			}
		}
		placed = append(placed, pt{x, y})
		m.Marks = append(m.Marks, svgPoint{X: f1(x), Y: f1(y), Class: "excmark", Title: "excursion " + strconv.Itoa(ex.N) + " started here"})
		m.MarkNum = append(m.MarkNum, svgText{X: f1(x), Y: f1(y + 4), Text: strconv.Itoa(ex.N), Class: "excmarknum", Anchor: "middle"})
	}

	// Scale bar: a round distance about a fifth of the width.
	kmPerPx := kmPerDegree / k
	target := float64(mapW) / 5 * kmPerPx
	km := roundDown125(target)
	barPx := km / kmPerPx
	x0, y0 := float64(mapMargin), float64(m.H-mapMargin)
	m.Scale = []svgLine{
		{X1: f1(x0), Y1: f1(y0), X2: f1(x0 + barPx), Y2: f1(y0), Class: "scalebar"},
		{X1: f1(x0), Y1: f1(y0 - 5), X2: f1(x0), Y2: f1(y0 + 5), Class: "scalebar"},
		{X1: f1(x0 + barPx), Y1: f1(y0 - 5), X2: f1(x0 + barPx), Y2: f1(y0 + 5), Class: "scalebar"},
	}
	m.Labels = append(m.Labels, svgText{X: f1(x0 + barPx/2), Y: f1(y0 - 8), Text: trimFloat(km) + " km", Class: "scalelabel", Anchor: "middle"})
	return m
}

// roundDown125 is the largest 1, 2 or 5 times a power of ten not above v.
func roundDown125(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= v {
			return m * p
		}
	}
	return p
}

func latLabel(lat float64, dec int) string {
	h := "N"
	if lat < 0 {
		h, lat = "S", -lat
	}
	return strconv.FormatFloat(lat, 'f', dec, 64) + "°" + h
}

func lonLabel(lon float64, dec int) string {
	for lon > 180 {
		lon -= 360
	}
	h := "E"
	if lon < 0 {
		h, lon = "W", -lon
	}
	return strconv.FormatFloat(lon, 'f', dec, 64) + "°" + h
}

// fmtTime formats a time for the report, to the minute unless it has
// seconds.
func fmtTime(t time.Time, loc *time.Location) string {
	l := t.In(loc)
	layout := "2006-01-02 15:04"
	if l.Second() != 0 {
		layout = "2006-01-02 15:04:05"
	}
	return l.Format(layout) + " " + zoneName(l)
}

func zoneName(t time.Time) string {
	name, off := t.Zone()
	if off == 0 && (name == "UTC" || name == "") {
		return "UTC"
	}
	return name
}

// fmtDuration formats a duration for people: "2 d 3 h", "1 h 05 min",
// "12 min", "40 s".
func fmtDuration(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDuration(-d)
	}
	if d == 0 {
		return "0"
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + " s"
	case d < time.Hour:
		m := int(d / time.Minute)
		s := int((d % time.Minute).Round(time.Second) / time.Second)
		if s == 60 {
			m, s = m+1, 0
		}
		if s == 0 {
			return strconv.Itoa(m) + " min"
		}
		return strconv.Itoa(m) + " min " + strconv.Itoa(s) + " s"
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return strconv.Itoa(h) + " h"
		}
		return strconv.Itoa(h) + " h " + pad2(m) + " min"
	}
	d = d.Round(time.Hour)
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return strconv.Itoa(days) + " d"
	}
	return strconv.Itoa(days) + " d " + strconv.Itoa(h) + " h"
}

func pad2(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}
