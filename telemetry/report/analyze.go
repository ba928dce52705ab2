package report

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// Defaults for [Options.MaxHold] when it is zero.
const (
	holdFactor      = 3
	minAutoHold     = time.Minute
	fallbackMaxHold = 15 * time.Minute
)

// Analyze builds the report of one shipment from t.
func Analyze(t *Telemetry, opts Options) (*Report, error) {
	if opts.Shipment == "" {
		return nil, errors.New("report: no shipment given")
	}
	th := opts.Thresholds
	if th == (Thresholds{}) {
		th = DefaultThresholds
	}
	if err := th.Validate(); err != nil {
		return nil, err
	}
	if opts.MaxHold < 0 {
		return nil, fmt.Errorf("report: maximum hold %v is negative", opts.MaxHold)
	}
	device, err := pickDevice(t, opts)
	if err != nil {
		return nil, err
	}

	var devRecs, ship []*DeviceRecord
	for i := range t.Records {
		r := &t.Records[i]
		if r.Device != device {
			continue
		}
		devRecs = append(devRecs, r)
		if r.Shipment == opts.Shipment {
			ship = append(ship, r)
		}
	}

	rep := &Report{Shipment: opts.Shipment, Device: device, Thresholds: th, Input: t.Stats}
	var seal *DeviceRecord
	first := true
	for _, r := range ship {
		if r.Kind == telemetry.KindSeal && (seal == nil || r.Seq < seal.Seq) {
			seal = r
		}
		if !trusted(&r.Record) {
			continue
		}
		if first || r.Time.Before(rep.Loading) {
			rep.Loading = r.Time
		}
		if first || r.Time.After(rep.Delivery) {
			rep.Delivery = r.Time
		}
		first = false
	}
	if first {
		return nil, fmt.Errorf("%w: all %d records of shipment %q are unsynced and were never retimed", ErrNoTrustedTime, len(ship), opts.Shipment)
	}
	if seal != nil && trusted(&seal.Record) {
		rep.Delivery, rep.Sealed = seal.Time, true
	}
	rep.Duration = Duration(rep.Delivery.Sub(rep.Loading))

	// Readings with a trusted time, in time order.
	for _, r := range ship {
		if r.Kind != telemetry.KindReading || !trusted(&r.Record) || r.Time.After(rep.Delivery) {
			continue
		}
		rd := Reading{Seq: r.Seq, Time: r.Time, Clock: r.Clock, Retimed: r.Retimed, Fault: r.EnvFault, Alerts: r.Alerts, Fix: r.Fix}
		if r.Env != nil {
			tc, p := r.Env.TempC, r.Env.PressureHPa
			rd.TempC, rd.PressureHPa = &tc, &p
		} else if rd.Fault == "" {
			rd.Fault = "no reading"
		}
		rep.Readings = append(rep.Readings, rd)
	}
	slices.SortStableFunc(rep.Readings, func(a, b Reading) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Seq, b.Seq))
	})

	median := medianInterval(rep.Readings)
	hold := opts.MaxHold
	if hold == 0 {
		hold = autoHold(median)
	}
	rep.MaxHold = Duration(hold)
	setHolds(rep.Readings, rep.Delivery, hold)

	var tempEx, presEx []Excursion
	rep.Temperature, tempEx = quantity(rep.Readings, tempOf, th.TempMinC, th.TempMaxC, Temperature, "°C", telemetry.AlertTempHigh, telemetry.AlertTempLow)
	rep.Pressure, presEx = quantity(rep.Readings, pressureOf, th.PressureMinHPa, th.PressureMaxHPa, Pressure, "hPa", telemetry.AlertPressureHigh, telemetry.AlertPressureLow)
	if rep.Temperature.Readings > 0 {
		m := mkt(rep.Readings)
		rep.Temperature.MKT = &m
	}
	rep.Excursions = append(tempEx, presEx...)
	slices.SortStableFunc(rep.Excursions, func(a, b Excursion) int { return a.Start.Compare(b.Start) })
	if rep.Excursions == nil {
		rep.Excursions = []Excursion{}
	}
	rep.DeviceAlerts = alertRuns(rep.Readings)
	rep.Route = route(rep.Readings)
	for i := range rep.Excursions {
		rep.Excursions[i].Where = positionAt(rep.Readings, rep.Excursions[i].FirstSeq)
	}
	rep.Completeness = completeness(rep, devRecs, ship, median)
	return rep, nil
}

// pickDevice finds the device that carried opts.Shipment.
func pickDevice(t *Telemetry, opts Options) (string, error) {
	all := t.Shipments()
	var carriers []ShipmentInfo
	for _, s := range all {
		if s.Shipment == opts.Shipment && (opts.Device == "" || s.Device == opts.Device) {
			carriers = append(carriers, s)
		}
	}
	switch len(carriers) {
	case 0:
		return "", &ShipmentError{Shipment: opts.Shipment, Device: opts.Device, Found: all, Err: ErrUnknownShipment}
	case 1:
		return carriers[0].Device, nil
	}
	return "", &ShipmentError{Shipment: opts.Shipment, Found: carriers, Err: ErrAmbiguousShipment}
}

func tempOf(r *Reading) *float64     { return r.TempC }
func pressureOf(r *Reading) *float64 { return r.PressureHPa }

// medianInterval is the median of the positive intervals between
// consecutive readings (0 with fewer than two readings).
func medianInterval(rs []Reading) time.Duration {
	var d []time.Duration
	for i := 1; i < len(rs); i++ {
		if iv := rs[i].Time.Sub(rs[i-1].Time); iv > 0 {
			d = append(d, iv)
		}
	}
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	n := len(d)
	if n%2 == 1 {
		return d[n/2]
	}
	return (d[n/2-1] + d[n/2]) / 2
}

// autoHold is the default maximum hold for a median reading interval.
func autoHold(median time.Duration) time.Duration {
	if median == 0 {
		return fallbackMaxHold
	}
	return max(holdFactor*median, minAutoHold).Round(time.Second)
}

// setHolds sets each reading's Hold and Gap: a reading stands for the
// interval up to the next reading (the last one up to end), at most
// maxHold.
func setHolds(rs []Reading, end time.Time, maxHold time.Duration) {
	for i := range rs {
		next := end
		if i+1 < len(rs) {
			next = rs[i+1].Time
		}
		iv := max(next.Sub(rs[i].Time), 0)
		rs[i].Hold = min(iv, maxHold)
		rs[i].Gap = iv > maxHold
	}
}

// quantity computes the summary and the excursions of one quantity. A
// value v is out of band when v > hi or v < lo.
func quantity(rs []Reading, get func(*Reading) *float64, lo, hi float64, name, unit, alertHigh, alertLow string) (Quantity, []Excursion) {
	q := Quantity{Unit: unit}
	var sum, weighted float64
	var held time.Duration
	var out []Excursion
	var cur *Excursion
	var curHeld time.Duration
	last := -1 // last reading of the current excursion
	prev := -1 // last reading with a value
	finish := func(next int) {
		r := &rs[last]
		cur.End = r.Time.Add(r.Hold)
		cur.Duration = Duration(cur.End.Sub(cur.Start))
		cur.Unobserved = Duration(cur.End.Sub(cur.Start) - curHeld)
		cur.OpenEnded = next != last+1 || r.Gap
		out = append(out, *cur)
		cur = nil
	}
	for i := range rs {
		r := &rs[i]
		p := get(r)
		if p == nil {
			continue
		}
		v := *p
		if q.Readings == 0 || v < q.Min {
			q.Min, q.MinAt = v, r.Time
		}
		if q.Readings == 0 || v > q.Max {
			q.Max, q.MaxAt = v, r.Time
		}
		q.Readings++
		sum += v
		weighted += v * r.Hold.Seconds()
		held += r.Hold

		dir, limit, alert := "", 0.0, ""
		switch {
		case v > hi:
			dir, limit, alert = High, hi, alertHigh
			q.Above += Duration(r.Hold)
		case v < lo:
			dir, limit, alert = Low, lo, alertLow
			q.Below += Duration(r.Hold)
		}
		if cur != nil && cur.Direction != dir {
			finish(i)
		}
		if dir == "" {
			prev = i
			continue
		}
		if cur == nil {
			cur = &Excursion{Quantity: name, Direction: dir, Threshold: limit, Start: r.Time, Extreme: v, ExtremeAt: r.Time, FirstSeq: r.Seq,
				OpenStart: prev < 0 || prev != i-1 || rs[prev].Gap}
			curHeld = 0
		}
		if (dir == High && v > cur.Extreme) || (dir == Low && v < cur.Extreme) {
			cur.Extreme, cur.ExtremeAt = v, r.Time
		}
		cur.Readings++
		cur.LastSeq = r.Seq
		curHeld += r.Hold
		if slices.Contains(r.Alerts, alert) {
			cur.DeviceAlerted = true
		}
		last, prev = i, i
	}
	if cur != nil {
		finish(-1)
	}
	q.Observed = Duration(held)
	switch {
	case held > 0:
		q.Mean = weighted / held.Seconds()
	case q.Readings > 0:
		q.Mean = sum / float64(q.Readings)
	}
	q.Excursions = len(out)
	return q, out
}

// mktActivation is ΔH/R in kelvin for the mean kinetic temperature
// (ΔH = 83.144 kJ/mol).
const mktActivation = 10000.0

// mkt is the time-weighted mean kinetic temperature in °C (equal weights
// when no reading stands for any time).
func mkt(rs []Reading) float64 {
	var s, w float64
	for i := range rs {
		if rs[i].TempC == nil {
			continue
		}
		wi := rs[i].Hold.Seconds()
		s += wi * math.Exp(-mktActivation/(*rs[i].TempC+273.15))
		w += wi
	}
	if w == 0 {
		for i := range rs {
			if rs[i].TempC != nil {
				s += math.Exp(-mktActivation / (*rs[i].TempC + 273.15))
				w++
			}
		}
	}
	return mktActivation/(-math.Log(s/w)) - 273.15
}

// alertRuns finds runs of consecutive readings (with environment data)
// that carry the same device alert.
func alertRuns(rs []Reading) []AlertRun {
	names := []string{telemetry.AlertTempHigh, telemetry.AlertTempLow, telemetry.AlertPressureHigh, telemetry.AlertPressureLow}
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	var extra []string
	for i := range rs {
		for _, a := range rs[i].Alerts {
			if !known[a] {
				known[a] = true
				extra = append(extra, a)
			}
		}
	}
	sort.Strings(extra)
	out := []AlertRun{}
	for _, name := range append(names, extra...) {
		var cur *AlertRun
		for i := range rs {
			r := &rs[i]
			if r.TempC == nil && r.PressureHPa == nil {
				continue
			}
			if !slices.Contains(r.Alerts, name) {
				if cur != nil {
					out = append(out, *cur)
					cur = nil
				}
				continue
			}
			if cur == nil {
				cur = &AlertRun{Alert: name, Start: r.Time, FirstSeq: r.Seq}
			}
			cur.End = r.Time.Add(r.Hold)
			cur.LastSeq = r.Seq
			cur.Readings++
		}
		if cur != nil {
			out = append(out, *cur)
		}
	}
	slices.SortStableFunc(out, func(a, b AlertRun) int { return a.Start.Compare(b.Start) })
	return out
}

// usableFix reports whether a reading carries a current position.
func usableFix(f *telemetry.Fix) bool {
	return f != nil && f.Mode >= 2 && !f.Stale && f.Lat >= -90 && f.Lat <= 90 && f.Lon >= -180 && f.Lon <= 180
}

// positionAt is the position of the reading with seq, if it has one.
func positionAt(rs []Reading, seq uint64) *Position {
	for i := range rs {
		if rs[i].Seq == seq && usableFix(rs[i].Fix) {
			return &Position{Time: rs[i].Time, Lat: rs[i].Fix.Lat, Lon: rs[i].Fix.Lon}
		}
	}
	return nil
}

// earthRadiusKm is the mean Earth radius (IUGG).
const earthRadiusKm = 6371.0088

// haversineKm is the great-circle distance between two points.
func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}

// route collects the track. When it spans more than 180° of longitude it
// is taken to cross the antimeridian, and western longitudes are shifted
// by 360° so the track stays in one piece.
func route(rs []Reading) Route {
	var rt Route
	for i := range rs {
		if f := rs[i].Fix; usableFix(f) {
			rt.Points = append(rt.Points, Position{Time: rs[i].Time, Lat: f.Lat, Lon: f.Lon})
		}
	}
	rt.Fixes = len(rt.Points)
	if rt.Fixes == 0 {
		return rt
	}
	minLon, maxLon := 180.0, -180.0
	for _, p := range rt.Points {
		minLon, maxLon = math.Min(minLon, p.Lon), math.Max(maxLon, p.Lon)
	}
	if maxLon-minLon > 180 {
		for i := range rt.Points {
			if rt.Points[i].Lon < 0 {
				rt.Points[i].Lon += 360
			}
		}
	}
	rt.South, rt.North = 90, -90
	rt.West, rt.East = 540, -540
	for i, p := range rt.Points {
		rt.South, rt.North = math.Min(rt.South, p.Lat), math.Max(rt.North, p.Lat)
		rt.West, rt.East = math.Min(rt.West, p.Lon), math.Max(rt.East, p.Lon)
		if i > 0 {
			q := rt.Points[i-1]
			rt.DistanceKm += haversineKm(q.Lat, q.Lon, p.Lat, p.Lon)
		}
	}
	start, end := rt.Points[0], rt.Points[len(rt.Points)-1]
	rt.Start, rt.End = &start, &end
	return rt
}
