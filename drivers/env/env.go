package env

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Sentinel errors that callers branch on.
var (
	// ErrNotFound reports that no sensor answered: nothing at the address,
	// no such bus or sysfs device, or a simulated sensor that is "missing".
	ErrNotFound = errors.New("env: sensor not found")
	// ErrImplausible reports a reading outside what the sensor can measure,
	// which means a fault (a reset chip, a broken bus), not a measurement.
	ErrImplausible = errors.New("env: implausible reading")
	// ErrUnavailable is returned by [Prober.Read] while it waits to probe a
	// missing or failed sensor again.
	ErrUnavailable = errors.New("env: sensor unavailable")
)

// Reading is one measurement.
type Reading struct {
	// TemperatureC is the temperature in degrees Celsius.
	TemperatureC float64
	// PressureHPa is the absolute air pressure in hectopascals.
	PressureHPa float64
	// HumidityPct is the relative humidity in percent, nil when the sensor
	// has no humidity channel (BMP280).
	HumidityPct *float64
	// Time is when the reading was taken, by the clock of the driver's
	// caller (zero if the driver does not know).
	Time time.Time
}

// String returns "21.50 °C 1013.25 hPa" (and the humidity, if any).
func (r Reading) String() string {
	s := fmt.Sprintf("%.2f °C %.2f hPa", r.TemperatureC, r.PressureHPa)
	if r.HumidityPct != nil {
		s += fmt.Sprintf(" %.1f %%RH", *r.HumidityPct)
	}
	return s
}

// Sensor reads the environment once. Read must not keep running after ctx
// ends, and is not called concurrently with itself.
type Sensor interface {
	Read(ctx context.Context) (Reading, error)
}

// Limits is the range a sensor can measure; readings outside it are
// faults.
type Limits struct {
	MinC, MaxC     float64
	MinHPa, MaxHPa float64
}

// BoschLimits is the operating range of the BMP280 and BME280 (datasheet
// table 1): -40…85 °C and 300…1100 hPa.
var BoschLimits = Limits{MinC: -40, MaxC: 85, MinHPa: 300, MaxHPa: 1100}

// Check returns an error wrapping [ErrImplausible] when r cannot be a real
// measurement: a value that is not a number, outside lim, a humidity outside
// 0…100 %, or temperature and pressure both pinned at the bottom of the
// range at once (what a BMP280 reports from zeroed or reset registers:
// -40 °C and 300 hPa together is a fault, not a cold day at altitude).
func (r Reading) Check(lim Limits) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrImplausible}, args...)...)
	}
	switch {
	case math.IsNaN(r.TemperatureC) || math.IsInf(r.TemperatureC, 0):
		return bad("temperature %v", r.TemperatureC)
	case math.IsNaN(r.PressureHPa) || math.IsInf(r.PressureHPa, 0):
		return bad("pressure %v", r.PressureHPa)
	case r.TemperatureC <= lim.MinC && r.PressureHPa <= lim.MinHPa:
		return bad("%.2f °C and %.2f hPa together, both at the bottom of the sensor's range", r.TemperatureC, r.PressureHPa)
	case r.TemperatureC < lim.MinC || r.TemperatureC > lim.MaxC:
		return bad("temperature %.2f °C outside %g…%g °C", r.TemperatureC, lim.MinC, lim.MaxC)
	case r.PressureHPa < lim.MinHPa || r.PressureHPa > lim.MaxHPa:
		return bad("pressure %.2f hPa outside %g…%g hPa", r.PressureHPa, lim.MinHPa, lim.MaxHPa)
	}
	if h := r.HumidityPct; h != nil && (math.IsNaN(*h) || *h < 0 || *h > 100) {
		return bad("humidity %v %%", *h)
	}
	return nil
}
