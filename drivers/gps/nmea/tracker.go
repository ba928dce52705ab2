package nmea

import (
	"errors"
	"fmt"
	"math"
	"time"

	gonmea "github.com/adrianmo/go-nmea"
)

// ErrSyntax reports a sentence with a valid checksum that the parser still
// rejected (missing or malformed fields).
var ErrSyntax = errors.New("nmea: malformed sentence")

// Unit conversions, as gpsd uses them.
const (
	knotsToMPS = 1852.0 / 3600.0
	kphToMPS   = 1000.0 / 3600.0
)

// TrackerStats counts the sentences a [Tracker] handled.
type TrackerStats struct {
	// Sentences counts lines with a valid checksum.
	Sentences int64
	// ChecksumErrors counts lines with a missing or wrong checksum.
	ChecksumErrors int64
	// ParseErrors counts lines with a valid checksum that did not parse.
	ParseErrors int64
	// Ignored counts valid sentences that carry nothing a fix needs (GSV,
	// TXT, proprietary and AIS sentences).
	Ignored int64
	// Epochs counts completed epochs, NoFix those among them without a
	// position.
	Epochs, NoFix int64
}

// Tracker merges the sentences of each receiver epoch into one [Fix]. The
// zero value is not usable; call [NewTracker].
type Tracker struct {
	p      gonmea.SentenceParser
	cur    epoch
	stats  TrackerStats
	date   civilDate // last date heard
	lastMS int       // time of day of the last closed epoch, ms
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	t := &Tracker{lastMS: -1}
	// The tracker checks checksums itself, before paying for a parse.
	t.p.CheckCRC = func(gonmea.BaseSentence, string) error { return nil }
	t.cur.reset()
	return t
}

// Stats returns the tracker's counters.
func (t *Tracker) Stats() TrackerStats { return t.stats }

// Add feeds one sentence line (as returned by [Framer.Next], without the
// line ending). When the line starts a new epoch, Add returns the fix of the
// epoch that just ended and true. now is the caller's clock, stored in
// [Fix.Received]; pass the zero time when decoding files.
//
// A line with a bad checksum returns an error wrapping [ErrChecksum], one
// that does not parse an error wrapping [ErrSyntax]; both are counted and
// leave the epoch untouched, so a caller may carry on after either.
func (t *Tracker) Add(line []byte, now time.Time) (Fix, bool, error) {
	body, err := checkLine(line)
	if err != nil {
		t.stats.ChecksumErrors++
		return Fix{}, false, fmt.Errorf("%w: %.20q", err, line)
	}
	t.stats.Sentences++
	if !wanted(body) {
		t.stats.Ignored++
		return Fix{}, false, nil
	}
	s, err := t.p.Parse(string(line))
	if err != nil {
		t.stats.ParseErrors++
		return Fix{}, false, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	var (
		fix  Fix
		done bool
	)
	if ms, ok := timeOf(s); ok {
		if t.cur.ms >= 0 && t.cur.ms != ms {
			fix, done = t.close(now)
		}
		t.cur.ms = ms
	}
	t.cur.add(s)
	return fix, done, nil
}

// Flush ends the open epoch and returns its fix, if it has any sentence.
// Call it at the end of a stream, or when the receiver has been quiet for a
// while after a burst (the end of an epoch is only otherwise known when the
// next one starts).
func (t *Tracker) Flush(now time.Time) (Fix, bool) {
	if t.cur.n == 0 {
		return Fix{}, false
	}
	return t.close(now)
}

// close turns the open epoch into a fix and starts a new, empty epoch.
func (t *Tracker) close(now time.Time) (Fix, bool) {
	e := &t.cur
	f := Fix{Received: now}
	if e.ms >= 0 {
		switch {
		case e.date.valid():
			t.date = e.date
		case t.date.valid() && t.lastMS >= 0 && e.ms < t.lastMS-12*3600*1000:
			// Midnight passed and no sentence of this epoch carried the
			// new date yet.
			t.date = t.date.next()
		}
		t.lastMS = e.ms
		if t.date.valid() {
			f.Time = time.Date(t.date.y, time.Month(t.date.m), t.date.d, 0, 0, 0, 0, time.UTC).
				Add(time.Duration(e.ms) * time.Millisecond)
			f.Has |= HasTime
		}
	}
	if e.hasSats {
		f.Sats, f.Has = e.sats, f.Has|HasSats
	} else if e.gsaSats > 0 {
		f.Sats, f.Has = e.gsaSats, f.Has|HasSats
	}
	switch {
	case e.posRank == 0:
		f.Mode = ModeNoFix
	case e.gsaMode == 1 || e.noFix:
		// The receiver says in this very epoch that it has no fix; a
		// position next to that is a leftover, not a measurement.
		f.Mode = ModeNoFix
	default:
		f.Lat, f.Lon, f.Has = e.lat, e.lon, f.Has|HasPosition
		switch {
		case e.gsaMode == 2:
			f.Mode = Mode2D
		case e.gsaMode == 3 || e.hasAlt:
			f.Mode = Mode3D
		default:
			f.Mode = Mode2D
		}
		if f.Mode == Mode3D && e.hasAlt {
			f.AltMSL, f.Has = e.alt, f.Has|HasAltitude
		}
		if e.hasSpeed {
			f.Speed, f.Has = e.speed, f.Has|HasSpeed
		}
		if e.hasTrack {
			f.Track, f.Has = e.track, f.Has|HasTrack
		}
		if e.hasHDOP {
			f.HDOP, f.Has = e.hdop, f.Has|HasHDOP
		} else if e.gsaHDOP > 0 {
			f.HDOP, f.Has = e.gsaHDOP, f.Has|HasHDOP
		}
	}
	t.stats.Epochs++
	if f.Mode == ModeNoFix {
		t.stats.NoFix++
	}
	e.reset()
	return f, true
}

// wanted reports whether a checked sentence body ("$GNGGA,...") is of a type
// the tracker merges, so that others are not parsed at all.
func wanted(body []byte) bool {
	if len(body) < 7 || body[0] != '$' || body[1] == 'P' || body[6] != ',' {
		return false
	}
	switch string(body[3:6]) {
	case "RMC", "GGA", "GNS", "GSA", "VTG", "ZDA", "GLL":
		return true
	}
	return false
}

// timeOf returns the UTC time of day, in milliseconds, that a sentence
// carries, if any.
func timeOf(s gonmea.Sentence) (int, bool) {
	var tm gonmea.Time
	switch v := s.(type) {
	case gonmea.RMC:
		tm = v.Time
	case gonmea.GGA:
		tm = v.Time
	case gonmea.GNS:
		tm = v.Time
	case gonmea.GLL:
		tm = v.Time
	case gonmea.ZDA:
		tm = v.Time
	default:
		return 0, false
	}
	return msOfDay(tm)
}

func msOfDay(tm gonmea.Time) (int, bool) {
	if !tm.Valid || tm.Hour > 23 || tm.Minute > 59 || tm.Second > 60 || tm.Millisecond > 999 {
		return 0, false
	}
	return ((tm.Hour*60+tm.Minute)*60+tm.Second)*1000 + tm.Millisecond, true
}

// Position ranks: a later sentence of a higher rank overrides the position.
const (
	rankGLL = 1 + iota
	rankRMC
	rankGGA
)

// epoch accumulates the sentences of one receiver epoch.
type epoch struct {
	n       int // sentences merged
	ms      int // time of day in ms, -1 until a sentence carries one
	date    civilDate
	posRank int
	noFix   bool
	lat     float64
	lon     float64
	alt     float64
	hasAlt  bool
	speed   float64
	track   float64
	hdop    float64
	sats    int
	gsaSats int
	gsaHDOP float64
	gsaMode int

	hasSpeed, hasTrack, hasHDOP, hasSats bool
}

func (e *epoch) reset() { *e = epoch{ms: -1} }

func present(fields []string, i int) bool { return i < len(fields) && fields[i] != "" }

// finite rejects the NaN and Inf that strconv.ParseFloat accepts in a field.
func finite(v ...float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

func (e *epoch) setPos(rank int, lat, lon float64) {
	if !finite(lat, lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return
	}
	if rank >= e.posRank {
		e.posRank, e.lat, e.lon = rank, lat, lon
	}
}

// addFixData records what GGA and GNS carry in the same fields: the
// satellites in use (field 6) and, with a fix, the position (fields 1 and
// 3), HDOP (7) and altitude (8).
func (e *epoch) addFixData(fields []string, fixed bool, sats int, lat, lon, hdop, alt float64) {
	if present(fields, 6) {
		e.sats, e.hasSats = sats, true
	}
	if !fixed || !present(fields, 1) || !present(fields, 3) {
		return
	}
	e.setPos(rankGGA, lat, lon)
	if present(fields, 7) && finite(hdop) {
		e.hdop, e.hasHDOP = hdop, true
	}
	if present(fields, 8) && finite(alt) {
		e.alt, e.hasAlt = alt, true
	}
}

func (e *epoch) add(s gonmea.Sentence) {
	e.n++
	switch v := s.(type) {
	case gonmea.RMC:
		if v.Date.Valid {
			e.date = civilDate{y: 2000 + v.Date.YY, m: v.Date.MM, d: v.Date.DD}
		}
		if v.Validity != gonmea.ValidRMC || v.FFAMode == gonmea.FAAModeDataNotValid {
			e.noFix = e.noFix || v.Validity == gonmea.InvalidRMC
			return
		}
		if !present(v.Fields, 2) || !present(v.Fields, 4) {
			return
		}
		e.setPos(rankRMC, v.Latitude, v.Longitude)
		if present(v.Fields, 6) && finite(v.Speed) {
			e.speed, e.hasSpeed = v.Speed*knotsToMPS, true
		}
		if present(v.Fields, 7) && finite(v.Course) {
			e.track, e.hasTrack = v.Course, true
		}
	case gonmea.GGA:
		e.noFix = e.noFix || v.FixQuality == gonmea.Invalid
		fixed := v.FixQuality != "" && v.FixQuality != gonmea.Invalid
		e.addFixData(v.Fields, fixed, int(v.NumSatellites), v.Latitude, v.Longitude, v.HDOP, v.Altitude)
	case gonmea.GNS:
		fixed := false
		for _, m := range v.Mode {
			if m != gonmea.NoFixGNS {
				fixed = true
			}
		}
		e.addFixData(v.Fields, fixed, int(v.SVs), v.Latitude, v.Longitude, v.HDOP, v.Altitude)
	case gonmea.GLL:
		if v.Validity != gonmea.ValidGLL || v.FFAMode == gonmea.FAAModeDataNotValid ||
			!present(v.Fields, 0) || !present(v.Fields, 2) {
			return
		}
		e.setPos(rankGLL, v.Latitude, v.Longitude)
	case gonmea.GSA:
		switch v.FixType {
		case gonmea.FixNone:
			e.gsaMode = max(e.gsaMode, 1)
		case gonmea.Fix2D:
			e.gsaMode = max(e.gsaMode, 2)
		case gonmea.Fix3D:
			e.gsaMode = max(e.gsaMode, 3)
		}
		for _, sv := range v.SV {
			if sv != "" {
				e.gsaSats++
			}
		}
		if present(v.Fields, 15) && e.gsaHDOP == 0 && finite(v.HDOP) {
			e.gsaHDOP = v.HDOP
		}
	case gonmea.VTG:
		if v.FFAMode == gonmea.FAAModeDataNotValid {
			return
		}
		if present(v.Fields, 0) && !e.hasTrack && finite(v.TrueTrack) {
			e.track, e.hasTrack = v.TrueTrack, true
		}
		if !e.hasSpeed {
			switch {
			case present(v.Fields, 4) && finite(v.GroundSpeedKnots):
				e.speed, e.hasSpeed = v.GroundSpeedKnots*knotsToMPS, true
			case present(v.Fields, 6) && finite(v.GroundSpeedKPH):
				e.speed, e.hasSpeed = v.GroundSpeedKPH*kphToMPS, true
			}
		}
	case gonmea.ZDA:
		if d := (civilDate{y: int(v.Year), m: int(v.Month), d: int(v.Day)}); d.valid() {
			e.date = d
		}
	}
}

// civilDate is a calendar date; the zero value means unknown.
type civilDate struct{ y, m, d int }

// valid reports whether c is a plausible receiver date: GPS time starts in
// 1980, and RFC 3339 (the JSON form of a fix) has four-digit years.
func (c civilDate) valid() bool {
	return c.y >= 1980 && c.y <= 9999 && c.m >= 1 && c.m <= 12 && c.d >= 1 && c.d <= 31
}

func (c civilDate) next() civilDate {
	t := time.Date(c.y, time.Month(c.m), c.d, 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
	return civilDate{y: t.Year(), m: int(t.Month()), d: t.Day()}
}
