package nmea

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Mode is the kind of fix, numbered as gpsd's TPV "mode".
type Mode int

// Fix modes.
const (
	// ModeUnknown means nothing has been heard yet.
	ModeUnknown Mode = 0
	// ModeNoFix means the receiver reports no usable position.
	ModeNoFix Mode = 1
	// Mode2D is a horizontal fix without a trustworthy altitude.
	Mode2D Mode = 2
	// Mode3D is a fix with altitude.
	Mode3D Mode = 3
)

// String returns "unknown", "no fix", "2D" or "3D".
func (m Mode) String() string {
	switch m {
	case ModeUnknown:
		return "unknown"
	case ModeNoFix:
		return "no fix"
	case Mode2D:
		return "2D"
	case Mode3D:
		return "3D"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Fields says which of a [Fix]'s optional values are present.
type Fields uint8

// Optional fix values.
const (
	HasTime Fields = 1 << iota
	HasPosition
	HasAltitude
	HasSpeed
	HasTrack
	HasHDOP
	HasSats
)

// Fix is one receiver epoch merged from its sentences. Values not flagged in
// Has are zero and are left out of the JSON form. The JSON names are gpsd's
// TPV names (time, mode, lat, lon, altMSL, speed, track) plus hdop and sats.
type Fix struct {
	// Time is the UTC time of the fix. Without a date from RMC or ZDA the
	// epoch has no Time and HasTime is not set.
	Time time.Time
	// Mode is no fix, 2D or 3D. Positions are present only for 2D and 3D.
	Mode Mode
	// Lat and Lon are WGS 84 degrees, north and east positive.
	Lat, Lon float64
	// AltMSL is the altitude above mean sea level in metres (3D fixes).
	AltMSL float64
	// Speed is the speed over ground in metres per second.
	Speed float64
	// Track is the course over ground in degrees from true north.
	Track float64
	// HDOP is the horizontal dilution of precision.
	HDOP float64
	// Sats is the number of satellites used in the fix.
	Sats int
	// Has flags the optional values that are present.
	Has Fields
	// Received is the local time at which the epoch was completed, from the
	// clock of the caller (see [Tracker.Add]); zero for decoded files.
	Received time.Time
	// Stale is set by readers of the latest fix when the receiver has been
	// quiet for longer than their limit; Age is then how long ago Received
	// was.
	Stale bool
	Age   time.Duration
}

// Valid reports whether f carries a position (a 2D or 3D fix).
func (f Fix) Valid() bool { return f.Mode >= Mode2D && f.Has&HasPosition != 0 }

// String returns a one-line human summary.
func (f Fix) String() string {
	ts := "no time"
	if f.Has&HasTime != 0 {
		ts = f.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	if !f.Valid() {
		return fmt.Sprintf("%s %s", ts, f.Mode)
	}
	s := fmt.Sprintf("%s %s %.6f,%.6f", ts, f.Mode, f.Lat, f.Lon)
	if f.Has&HasAltitude != 0 {
		s += fmt.Sprintf(" alt %.1fm", f.AltMSL)
	}
	if f.Has&HasSpeed != 0 {
		s += fmt.Sprintf(" %.2fm/s", f.Speed)
	}
	if f.Has&HasTrack != 0 {
		s += fmt.Sprintf(" %.1f°", f.Track)
	}
	if f.Has&HasHDOP != 0 {
		s += fmt.Sprintf(" hdop %.2f", f.HDOP)
	}
	if f.Has&HasSats != 0 {
		s += fmt.Sprintf(" sats %d", f.Sats)
	}
	if f.Stale {
		s += fmt.Sprintf(" STALE %s", f.Age.Round(time.Second))
	}
	return s
}

// fixJSON is the wire form of Fix: pointers leave absent values out.
type fixJSON struct {
	Time   string   `json:"time,omitempty"`
	Mode   Mode     `json:"mode"`
	Lat    *float64 `json:"lat,omitempty"`
	Lon    *float64 `json:"lon,omitempty"`
	AltMSL *float64 `json:"altMSL,omitempty"`
	Speed  *float64 `json:"speed,omitempty"`
	Track  *float64 `json:"track,omitempty"`
	HDOP   *float64 `json:"hdop,omitempty"`
	Sats   *int     `json:"sats,omitempty"`
	Stale  bool     `json:"stale,omitempty"`
	Age    *float64 `json:"age,omitempty"`
}

// timeLayout is RFC 3339 in UTC with milliseconds, as gpsd prints it.
const timeLayout = "2006-01-02T15:04:05.000Z"

// MarshalJSON writes the gpsd TPV names; absent values are left out, and
// age (seconds) appears only on a stale fix.
func (f Fix) MarshalJSON() ([]byte, error) {
	j := fixJSON{Mode: f.Mode, Stale: f.Stale}
	if f.Has&HasTime != 0 {
		j.Time = f.Time.UTC().Format(timeLayout)
	}
	if f.Has&HasPosition != 0 {
		j.Lat, j.Lon = ptr(round(f.Lat, 9)), ptr(round(f.Lon, 9))
	}
	if f.Has&HasAltitude != 0 {
		j.AltMSL = ptr(round(f.AltMSL, 3))
	}
	if f.Has&HasSpeed != 0 {
		j.Speed = ptr(round(f.Speed, 3))
	}
	if f.Has&HasTrack != 0 {
		j.Track = ptr(round(f.Track, 4))
	}
	if f.Has&HasHDOP != 0 {
		j.HDOP = ptr(f.HDOP)
	}
	if f.Has&HasSats != 0 {
		j.Sats = ptr(f.Sats)
	}
	if f.Stale {
		j.Age = ptr(round(f.Age.Seconds(), 3))
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form written by MarshalJSON.
func (f *Fix) UnmarshalJSON(b []byte) error {
	var j fixJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("nmea: decode fix: %w", err)
	}
	*f = Fix{Mode: j.Mode, Stale: j.Stale}
	if j.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, j.Time)
		if err != nil {
			return fmt.Errorf("nmea: decode fix: time %q: %w", j.Time, err)
		}
		f.Time, f.Has = t.UTC(), f.Has|HasTime
	}
	if j.Lat != nil && j.Lon != nil {
		f.Lat, f.Lon, f.Has = *j.Lat, *j.Lon, f.Has|HasPosition
	}
	if j.AltMSL != nil {
		f.AltMSL, f.Has = *j.AltMSL, f.Has|HasAltitude
	}
	if j.Speed != nil {
		f.Speed, f.Has = *j.Speed, f.Has|HasSpeed
	}
	if j.Track != nil {
		f.Track, f.Has = *j.Track, f.Has|HasTrack
	}
	if j.HDOP != nil {
		f.HDOP, f.Has = *j.HDOP, f.Has|HasHDOP
	}
	if j.Sats != nil {
		f.Sats, f.Has = *j.Sats, f.Has|HasSats
	}
	if j.Age != nil {
		f.Age = time.Duration(*j.Age * float64(time.Second))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// round keeps d decimals, so the JSON does not carry binary noise such as
// 44.069010500000004.
func round(v float64, d int) float64 {
	p := math.Pow10(d)
	return math.Round(v*p) / p
}

// At returns f as seen at now: Age is the time since f was received, and the
// fix is Stale when that exceeds staleAfter (a receiver that went quiet, was
// unplugged or lost power). A fix with no Received time is returned as it is.
func (f Fix) At(now time.Time, staleAfter time.Duration) Fix {
	if f.Received.IsZero() {
		return f
	}
	f.Age = max(now.Sub(f.Received), 0)
	f.Stale = f.Age > staleAfter
	return f
}
