package agent

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/drivers/env"
	"github.com/coldchain/tracker/drivers/env/bmx280"
	"github.com/coldchain/tracker/drivers/env/envsim"
	"github.com/coldchain/tracker/drivers/env/iio"
	"github.com/coldchain/tracker/drivers/gps"
	"github.com/coldchain/tracker/drivers/gps/nmea"
	"github.com/coldchain/tracker/telemetry"
)

// openHardware builds the sensor and GPS named in the config. A sensor
// that is missing at start is not an error: the prober keeps re-probing
// with backoff and the sampler reports the fault. Only a configuration that
// can never work is an error.
func openHardware(cfg *config.Config, deviceID string, log *slog.Logger) (EnvSensor, FixSource, error) {
	seed := cfg.Sensor.Seed
	if seed == 0 {
		h := fnv.New64a()
		h.Write([]byte(deviceID))
		seed = int64(h.Sum64() >> 1)
	}
	var sensor EnvSensor
	probe := &env.ProberOpts{MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Minute}
	switch cfg.Sensor.Driver {
	case "bmx280":
		sensor = envAdapter{env.NewProber(bmx280.Open(nil, cfg.Sensor.Bus, uint16(cfg.Sensor.Address), nil), probe)}
	case "iio":
		dir := cfg.Sensor.IIODevice
		if dir == "" {
			d, err := iio.Find("/sys/bus/iio/devices")
			if err != nil {
				log.Warn("no IIO environment sensor found yet; will keep probing", "err", err)
				d = "/sys/bus/iio/devices/iio:device0"
			}
			dir = d
		}
		sensor = envAdapter{env.NewProber(iio.OpenFunc(dir), probe)}
	case "sim":
		s, err := envsim.New(envsim.Opts{Seed: seed, Profile: cfg.Sensor.Profile})
		if err != nil {
			return nil, nil, fmt.Errorf("simulated sensor: %w (profiles: %s)", err, strings.Join(envsim.ProfileNames(), ", "))
		}
		// Through the prober like real hardware: the plausibility check and
		// re-probing apply to scripted failures too.
		sensor = envAdapter{env.NewProber(s.OpenFunc(), probe)}
	case "none":
	}

	var src gps.Source
	switch cfg.GPS.Driver {
	case "serial":
		s, err := gps.NewSerial(gps.SerialOpts{Port: cfg.GPS.Port, Baud: cfg.GPS.Baud, StaleAfter: cfg.GPS.StaleAfter.D()})
		if err != nil {
			return nil, nil, fmt.Errorf("gps: %w", err)
		}
		src = s
	case "replay":
		r, err := gps.OpenReplay(cfg.GPS.ReplayFile, gps.ReplayOpts{Speed: cfg.GPS.ReplaySpeed, Loop: true})
		if err != nil {
			return nil, nil, fmt.Errorf("gps replay: %w", err)
		}
		src = r
	case "sim":
		src = gps.NewSim(gps.SimOpts{Seed: seed})
	case "none":
	}
	var fixes FixSource
	if src != nil {
		fixes = fixAdapter{src}
	}
	return sensor, fixes, nil
}

// envAdapter turns a driver's reading into the telemetry form.
type envAdapter struct{ s env.Sensor }

func (e envAdapter) Read(ctx context.Context) (telemetry.Env, error) {
	r, err := e.s.Read(ctx)
	if err != nil {
		return telemetry.Env{}, err
	}
	return telemetry.Env{TempC: r.TemperatureC, PressureHPa: r.PressureHPa, HumidityPct: r.HumidityPct}, nil
}

// fixAdapter turns the driver's fixes into the telemetry form.
type fixAdapter struct{ s gps.Source }

func (f fixAdapter) Run(ctx context.Context, emit func(telemetry.Fix)) error {
	return f.s.Run(ctx, func(fx gps.Fix) { emit(toTelemetryFix(fx)) })
}

func toTelemetryFix(f nmea.Fix) telemetry.Fix {
	out := telemetry.Fix{Mode: int(f.Mode), Stale: f.Stale}
	if f.Has&nmea.HasTime != 0 {
		out.Time = f.Time.UTC()
	}
	if !f.Valid() {
		if out.Mode < 1 {
			out.Mode = 1
		}
		return out
	}
	out.Lat, out.Lon = f.Lat, f.Lon
	opt := func(has nmea.Fields, v float64) *float64 {
		if f.Has&has == 0 {
			return nil
		}
		return &v
	}
	out.AltMSL = opt(nmea.HasAltitude, f.AltMSL)
	out.Speed = opt(nmea.HasSpeed, f.Speed)
	out.Track = opt(nmea.HasTrack, f.Track)
	out.HDOP = opt(nmea.HasHDOP, f.HDOP)
	if f.Has&nmea.HasSats != 0 {
		out.Sats = f.Sats
	}
	return out
}
