package gps

import (
	"context"
	"math"
	"time"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

// SimOpts configures a [Sim].
type SimOpts struct {
	// Seed picks the starting point on the loop and, when Lat and Lon are
	// both zero, the loop's centre among a few container ports.
	Seed int64
	// Lat and Lon are the centre of the loop in degrees.
	Lat, Lon float64
	// RadiusM is the loop's radius in metres (default 5 km).
	RadiusM float64
	// SpeedMPS is the speed over ground in m/s (default 12, a truck).
	SpeedMPS float64
	// Interval is the epoch interval of Run (default 1 s).
	Interval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ports are loop centres for simulated devices: Rotterdam, Singapore,
// Shanghai, Los Angeles, Hamburg, Santos.
var ports = [][2]float64{{51.95, 4.14}, {1.264, 103.84}, {31.36, 121.6}, {33.74, -118.26}, {53.54, 9.95}, {-23.96, -46.3}}

// Sim is a synthetic receiver driving round a loop at constant speed. Its
// fixes are a pure function of time, so many simulated devices cost
// nothing between reads.
type Sim struct {
	o     SimOpts
	phase float64
}

var _ Source = (*Sim)(nil)

// NewSim returns a simulated receiver.
func NewSim(o SimOpts) *Sim {
	if o.Lat == 0 && o.Lon == 0 {
		p := ports[int(uint64(o.Seed)%uint64(len(ports)))]
		o.Lat, o.Lon = p[0], p[1]
	}
	if o.RadiusM <= 0 {
		o.RadiusM = 5000
	}
	if o.SpeedMPS <= 0 {
		o.SpeedMPS = 12
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sim{o: o, phase: float64(uint64(o.Seed)%360) * math.Pi / 180}
}

// metresPerDegree is the length of a degree of latitude (and of longitude
// at the equator) on the WGS 84 mean radius, close enough for a simulation.
const metresPerDegree = 111_320.0

// At returns the fix at time t.
func (s *Sim) At(t time.Time) Fix {
	w := s.o.SpeedMPS / s.o.RadiusM // rad/s
	th := s.phase + w*float64(t.UnixNano())/1e9
	th = math.Mod(th, 2*math.Pi)
	north, east := s.o.RadiusM*math.Sin(th), s.o.RadiusM*math.Cos(th)
	lat := s.o.Lat + north/metresPerDegree
	lon := s.o.Lon + east/(metresPerDegree*math.Cos(s.o.Lat*math.Pi/180))
	// Counter-clockwise: velocity is (north, east) = (cos θ, -sin θ).
	track := math.Mod(math.Atan2(-math.Sin(th), math.Cos(th))*180/math.Pi+360, 360)
	return Fix{
		Time: t.UTC().Truncate(time.Millisecond), Mode: nmea.Mode3D,
		Lat: lat, Lon: lon, AltMSL: 8 + 2*math.Sin(th*3),
		Speed: s.o.SpeedMPS, Track: track, HDOP: 0.9, Sats: 9,
		Has:      nmea.HasTime | nmea.HasPosition | nmea.HasAltitude | nmea.HasSpeed | nmea.HasTrack | nmea.HasHDOP | nmea.HasSats,
		Received: t,
	}
}

// Run emits a fix every Interval until ctx ends.
func (s *Sim) Run(ctx context.Context, emit func(Fix)) error {
	tk := time.NewTicker(s.o.Interval)
	defer tk.Stop()
	for {
		emit(s.At(s.o.Now()))
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
	}
}
