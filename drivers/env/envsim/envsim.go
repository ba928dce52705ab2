// Package envsim is a simulated environment sensor for demos, tests and the
// fleet simulator: plausible values that drift, following a named profile
// (a reefer at 4 °C, a freezer at -20 °C, ambient air), plus scripted
// excursions, failures, disappearances and implausible readings.
//
// A reading is a pure function of the seed, the profile, the script and the
// time since the sensor's start, so thousands of simulated devices in one
// process cost a few hashes and a sine each per read, keep no history and
// replay identically. A [Sensor] is safe for concurrent use.
package envsim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/drivers/env"
)

// ErrFault is what a scripted failure returns, like a bus error would.
var ErrFault = errors.New("envsim: simulated sensor fault")

// Profile describes a simulated environment.
type Profile struct {
	// BaseC is the mean temperature and SwingC the amplitude of its cycle
	// of length Period (a reefer's compressor and defrost cycle, or day and
	// night for ambient air).
	BaseC, SwingC float64
	Period        time.Duration
	// DriftC is the amplitude of the slow random drift (10-minute knots).
	DriftC float64
	// BaseHPa and DriftHPa describe the pressure (weather drift).
	BaseHPa, DriftHPa float64
	// HumidityPct is the mean relative humidity; 0 simulates a BMP280,
	// which has no humidity channel.
	HumidityPct float64
}

// Profiles are the named profiles.
var Profiles = map[string]Profile{
	"reefer":  {BaseC: 4, SwingC: 0.8, Period: 40 * time.Minute, DriftC: 0.4, BaseHPa: 1013, DriftHPa: 6},
	"frozen":  {BaseC: -20, SwingC: 1.5, Period: 6 * time.Hour, DriftC: 0.6, BaseHPa: 1013, DriftHPa: 6},
	"pharma":  {BaseC: 5, SwingC: 0.3, Period: 30 * time.Minute, DriftC: 0.2, BaseHPa: 1013, DriftHPa: 6, HumidityPct: 45},
	"ambient": {BaseC: 22, SwingC: 5, Period: 24 * time.Hour, DriftC: 1.5, BaseHPa: 1013, DriftHPa: 10, HumidityPct: 55},
}

// Kind is what a scripted event does.
type Kind int

// Event kinds.
const (
	// Excursion adds DeltaC to the temperature (a door left open, a
	// failed compressor), ramping in and out over a tenth of the event.
	Excursion Kind = iota + 1
	// Fail makes reads return [ErrFault].
	Fail
	// Missing makes reads and opens return [env.ErrNotFound] (unplugged).
	Missing
	// Implausible returns -40 °C and 300 hPa, what a reset chip reports.
	Implausible
)

var kindNames = map[Kind]string{Excursion: "excursion", Fail: "fail", Missing: "missing", Implausible: "implausible"}

// String returns the kind's name as ParseScript reads it.
func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one scripted event, timed from the sensor's start.
type Event struct {
	Kind     Kind
	Start    time.Duration
	Duration time.Duration
	// DeltaC is the excursion's peak temperature change.
	DeltaC float64
}

// Opts configures a [Sensor].
type Opts struct {
	// Seed makes each simulated device different and reproducible.
	Seed int64
	// Profile names an entry of [Profiles]; "" means "reefer".
	Profile string
	// Script lists scripted events.
	Script []Event
	// Start is time zero of the script; zero means the first reading.
	Start time.Time
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Sensor is a simulated sensor.
type Sensor struct {
	p      Profile
	seed   uint64
	script []Event
	start  time.Time
	now    func() time.Time
}

var _ env.Device = (*Sensor)(nil)

// New returns a simulated sensor.
func New(o Opts) (*Sensor, error) {
	name := o.Profile
	if name == "" {
		name = "reefer"
	}
	p, ok := Profiles[name]
	if !ok {
		return nil, fmt.Errorf("envsim: unknown profile %q (known: %s)", name, strings.Join(ProfileNames(), ", "))
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	start := o.Start
	if start.IsZero() {
		start = now()
	}
	return &Sensor{p: p, seed: uint64(o.Seed), script: o.Script, start: start, now: now}, nil
}

// ProfileNames returns the names of [Profiles], sorted.
func ProfileNames() []string {
	var names []string
	for n := range Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Read returns the reading at the sensor's clock.
func (s *Sensor) Read(ctx context.Context) (env.Reading, error) {
	if err := ctx.Err(); err != nil {
		return env.Reading{}, fmt.Errorf("envsim: read: %w", err)
	}
	return s.At(s.now())
}

// Close does nothing.
func (s *Sensor) Close() error { return nil }

// OpenFunc returns an [env.OpenFunc] that fails with [env.ErrNotFound]
// during a Missing event and returns s otherwise.
func (s *Sensor) OpenFunc() env.OpenFunc {
	return func(ctx context.Context) (env.Device, error) {
		if s.active(s.now().Sub(s.start), Missing) != nil {
			return nil, fmt.Errorf("envsim: %w (scripted)", env.ErrNotFound)
		}
		return s, nil
	}
}

// At returns the reading, or the scripted failure, at time t.
func (s *Sensor) At(t time.Time) (env.Reading, error) {
	el := t.Sub(s.start)
	if s.active(el, Missing) != nil {
		return env.Reading{}, fmt.Errorf("envsim: %w (scripted)", env.ErrNotFound)
	}
	if s.active(el, Fail) != nil {
		return env.Reading{}, fmt.Errorf("%w (scripted)", ErrFault)
	}
	if s.active(el, Implausible) != nil {
		return env.Reading{TemperatureC: -40, PressureHPa: 300, Time: t}, nil
	}
	sec := el.Seconds()
	p := s.p
	temp := p.BaseC + p.DriftC*s.smooth(1, sec/600) + 0.02*s.noise(2, int64(sec))
	if p.Period > 0 {
		phase := 2 * math.Pi * float64(s.seed%1000) / 1000
		temp += p.SwingC * math.Sin(2*math.Pi*sec/p.Period.Seconds()+phase)
	}
	for _, e := range s.script {
		if e.Kind == Excursion && el >= e.Start && el < e.Start+e.Duration {
			temp += e.DeltaC * ramp(el-e.Start, e.Duration)
		}
	}
	r := env.Reading{
		TemperatureC: round(temp, 2),
		PressureHPa:  round(p.BaseHPa+p.DriftHPa*s.smooth(3, sec/3600)+0.05*s.noise(4, int64(sec)), 2),
		Time:         t,
	}
	if p.HumidityPct > 0 {
		h := round(min(max(p.HumidityPct+8*s.smooth(5, sec/1800), 0), 100), 1)
		r.HumidityPct = &h
	}
	return r, nil
}

// active returns the first event of kind k covering elapsed time el.
func (s *Sensor) active(el time.Duration, k Kind) *Event {
	for i, e := range s.script {
		if e.Kind == k && el >= e.Start && el < e.Start+e.Duration {
			return &s.script[i]
		}
	}
	return nil
}

// ramp rises from 0 to 1 over the first tenth of d and falls back over the
// last tenth.
func ramp(at, d time.Duration) float64 {
	edge := float64(d) / 10
	if edge <= 0 {
		return 1
	}
	return min(float64(at)/edge, float64(d-at)/edge, 1)
}

// noise returns a value in [-1, 1] determined by seed, channel and k
// (splitmix64).
func (s *Sensor) noise(ch uint64, k int64) float64 {
	z := s.seed*0x9e3779b97f4a7c15 + ch*0xbf58476d1ce4e5b9 + uint64(k)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11)/float64(1<<52) - 1
}

// smooth interpolates noise between integer knots of x (cosine), giving a
// slow, continuous drift in [-1, 1].
func (s *Sensor) smooth(ch uint64, x float64) float64 {
	k := math.Floor(x)
	a, b := s.noise(ch, int64(k)), s.noise(ch, int64(k)+1)
	f := (1 - math.Cos((x-k)*math.Pi)) / 2
	return a*(1-f) + b*f
}

func round(v float64, d int) float64 {
	p := math.Pow10(d)
	return math.Round(v*p) / p
}

// ParseScript reads a comma-separated script such as
//
//	excursion+8@2h/30m,fail@5h/10m,missing@8h/1h,implausible@9h/1m
//
// where each event is KIND[±DELTA]@START/DURATION, DELTA in °C (excursions
// only) and the times in Go duration syntax from the sensor's start.
func ParseScript(spec string) ([]Event, error) {
	var out []Event
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		head, timing, ok := strings.Cut(item, "@")
		startS, durS, ok2 := strings.Cut(timing, "/")
		if !ok || !ok2 {
			return nil, fmt.Errorf("envsim: event %q: want KIND[+DELTA]@START/DURATION, e.g. excursion+8@2h/30m", item)
		}
		var e Event
		name, delta := head, ""
		if i := strings.IndexAny(head, "+-"); i >= 0 {
			name, delta = head[:i], head[i:]
		}
		for k, n := range kindNames {
			if n == name {
				e.Kind = k
			}
		}
		if e.Kind == 0 {
			return nil, fmt.Errorf("envsim: event %q: unknown kind %q (excursion, fail, missing, implausible)", item, name)
		}
		if delta != "" {
			if e.Kind != Excursion {
				return nil, fmt.Errorf("envsim: event %q: only an excursion takes a temperature change", item)
			}
			d, err := strconv.ParseFloat(strings.TrimSuffix(delta, "C"), 64)
			if err != nil {
				return nil, fmt.Errorf("envsim: event %q: temperature change %q is not a number", item, delta)
			}
			e.DeltaC = d
		} else if e.Kind == Excursion {
			return nil, fmt.Errorf("envsim: event %q: an excursion needs a change, e.g. excursion+8@2h/30m", item)
		}
		var err error
		if e.Start, err = time.ParseDuration(startS); err != nil || e.Start < 0 {
			return nil, fmt.Errorf("envsim: event %q: bad start %q (a duration such as 90m)", item, startS)
		}
		if e.Duration, err = time.ParseDuration(durS); err != nil || e.Duration <= 0 {
			return nil, fmt.Errorf("envsim: event %q: bad duration %q (a positive duration such as 10m)", item, durS)
		}
		out = append(out, e)
	}
	return out, nil
}
