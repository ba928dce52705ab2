package report

import (
	"slices"
	"sort"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// completeness fills the data-quality section. devRecs are all the
// device's records in seq order, ship the shipment's.
func completeness(rep *Report, devRecs, ship []*DeviceRecord, median time.Duration) Completeness {
	c := Completeness{MedianInterval: Duration(median), Missing: []SeqRange{}, GapEvents: []GapEvent{}, TimeGaps: []TimeGap{}}
	th := rep.Thresholds
	faults := map[string]int{}
	for i, r := range ship {
		c.Records++
		c.Duplicates += r.Copies - 1
		if i == 0 || r.Seq < c.FirstSeq {
			c.FirstSeq = r.Seq
		}
		c.LastSeq = max(c.LastSeq, r.Seq)
		switch r.Kind {
		case telemetry.KindReading:
			c.Readings++
			if r.Env == nil {
				c.SensorFaults++
				reason := r.EnvFault
				if reason == "" {
					reason = "no reading"
				}
				faults[reason]++
			}
			switch {
			case r.Fix == nil || r.Fix.Mode < 2:
				c.NoFix++
			case r.Fix.Stale:
				c.StaleFix++
			}
		case telemetry.KindSeal:
			c.Seals++
		default:
			c.Other++
		}
		switch r.Clock {
		case ClockGPS:
			c.Clock.GPS++
		case ClockSystem:
			c.Clock.System++
		case ClockUnsynced:
			c.Clock.Unsynced++
		default:
			c.Clock.Other++
		}
		if r.Retimed {
			c.Clock.Retimed++
		}
		if !trusted(&r.Record) {
			c.Clock.Untimed++
			if e := r.Env; e != nil && (e.TempC > th.TempMaxC || e.TempC < th.TempMinC || e.PressureHPa > th.PressureMaxHPa || e.PressureHPa < th.PressureMinHPa) {
				c.Clock.UntimedOutOfBand++
			}
		}
	}
	for reason, n := range faults {
		c.FaultReasons = append(c.FaultReasons, ReasonCount{Reason: reason, Count: n})
	}
	slices.SortFunc(c.FaultReasons, func(a, b ReasonCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		if a.Reason < b.Reason {
			return -1
		}
		return 1
	})

	// Gap events whose range overlaps the shipment's sequence numbers.
	for _, r := range devRecs {
		g := r.Gap
		if r.Kind != telemetry.KindGap || g == nil {
			continue
		}
		if r.Shipment != rep.Shipment && (g.LastSeq < c.FirstSeq || g.FirstSeq > c.LastSeq) {
			continue
		}
		c.GapEvents = append(c.GapEvents, GapEvent{
			Seq: r.Seq, Time: r.Time, Clock: r.Clock, FirstSeq: g.FirstSeq, LastSeq: g.LastSeq,
			Count: g.Count, Reason: g.Reason, Beyond: g.FirstSeq < c.FirstSeq || g.LastSeq > c.LastSeq,
		})
	}
	markSuperseded(c.GapEvents)
	for _, e := range c.GapEvents {
		switch {
		case e.Superseded:
		case e.Count == 0:
			c.EvictedUnknown++
		default:
			c.Evicted += e.Count
		}
	}

	// Missing sequence numbers inside the shipment's span. A number
	// carried by any record of the device (another shipment, a gap event)
	// is not missing.
	present := make([]uint64, 0, len(devRecs))
	for _, r := range devRecs {
		if r.Seq >= c.FirstSeq && r.Seq <= c.LastSeq {
			present = append(present, r.Seq)
		}
	}
	slices.Sort(present) // Telemetry.Records may come from a caller, unsorted
	present = slices.Compact(present)
	cover := mergeRanges(c.GapEvents)
	for i := 1; i < len(present); i++ {
		if present[i] <= present[i-1]+1 {
			continue
		}
		a, b := present[i-1]+1, present[i]-1
		sr := SeqRange{First: a, Last: b, Count: b - a + 1}
		for _, cv := range cover {
			lo, hi := max(a, cv[0]), min(b, cv[1])
			if lo <= hi {
				sr.Explained += hi - lo + 1
			}
		}
		reasons := map[string]bool{}
		for _, e := range c.GapEvents {
			if e.FirstSeq <= b && e.LastSeq >= a {
				reasons[e.Reason] = true
			}
		}
		for r := range reasons {
			sr.Reasons = append(sr.Reasons, r)
		}
		sort.Strings(sr.Reasons)
		c.MissingSeqs += sr.Count
		c.MissingExplained += sr.Explained
		c.Missing = append(c.Missing, sr)
	}

	// Time gaps and unobserved time.
	var observed time.Duration
	for i := range rep.Readings {
		r := &rep.Readings[i]
		if r.TempC != nil {
			observed += r.Hold
		}
		if !r.Gap {
			continue
		}
		to := rep.Delivery
		if i+1 < len(rep.Readings) {
			to = rep.Readings[i+1].Time
		}
		c.TimeGaps = append(c.TimeGaps, TimeGap{From: r.Time, To: to, Duration: Duration(to.Sub(r.Time))})
	}
	if len(rep.Readings) > 0 && rep.Readings[0].Time.Sub(rep.Loading) > rep.MaxHold.Std() {
		gap := TimeGap{From: rep.Loading, To: rep.Readings[0].Time, Duration: Duration(rep.Readings[0].Time.Sub(rep.Loading))}
		c.TimeGaps = append([]TimeGap{gap}, c.TimeGaps...)
	}
	c.Unobserved = Duration(max(rep.Delivery.Sub(rep.Loading)-observed, 0))
	return c
}

// markSuperseded flags events whose range and count another event of the
// same reason covers: the buffer folds undelivered gap events into a
// wider one, so a consumer can receive both.
func markSuperseded(evs []GapEvent) {
	for i := range evs {
		for j := range evs {
			e, f := &evs[i], &evs[j]
			if i == j || e.Reason != f.Reason || f.Superseded {
				continue
			}
			if f.FirstSeq <= e.FirstSeq && f.LastSeq >= e.LastSeq && f.Count >= e.Count {
				same := f.FirstSeq == e.FirstSeq && f.LastSeq == e.LastSeq && f.Count == e.Count
				if !same || f.Seq > e.Seq {
					e.Superseded = true
					break
				}
			}
		}
	}
}

// mergeRanges returns the union of the events' ranges as sorted,
// disjoint [first, last] pairs.
func mergeRanges(evs []GapEvent) [][2]uint64 {
	var rs [][2]uint64
	for _, e := range evs {
		if e.LastSeq >= e.FirstSeq {
			rs = append(rs, [2]uint64{e.FirstSeq, e.LastSeq})
		}
	}
	slices.SortFunc(rs, func(a, b [2]uint64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	var out [][2]uint64
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}
