// Package bmx280 reads a Bosch BMP280 or BME280 (and the older BMP180) over
// I2C with periph.io's bmxx80 driver.
//
// The agent drives measurements from its own ticker: each [Sensor.Read]
// triggers one forced-mode conversion (datasheet §3.3.3), after which the
// chip returns to sleep by itself, so nothing is left running between reads.
// periph's continuous mode is never used (its goroutine only logs errors).
//
// A [Sensor] is not safe for concurrent use; [Open] returns an
// [env.OpenFunc] for [env.Prober], which serialises reads.
package bmx280

import (
	"context"
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/coldchain/tracker/drivers/env"
	"github.com/coldchain/tracker/drivers/i2cbus"
)

// ErrUnknownChip reports a device at the address whose chip ID register
// (0xD0) names no supported chip: another device, a BMP388/390 (ID 0x50 at
// register 0x00) or a BMP280 engineering sample (0x56/0x57).
var ErrUnknownChip = errors.New("bmx280: unknown chip")

// Chip IDs at register 0xD0 (BMP280 datasheet §4.3.1, BME280 §5.4.1).
const (
	chipBMP180 = 0x55
	chipBMP280 = 0x58
	chipBME280 = 0x60
	regChipID  = 0xD0
)

// Addresses are the two addresses the chips answer at (SDO low, SDO high).
var Addresses = []uint16{0x76, 0x77}

// Sensor is one probed chip.
type Sensor struct {
	dev   *bmxx80.Dev
	model string
	addr  uint16
}

var _ env.Sensor = (*Sensor)(nil)

// NewI2C probes addr on bus and initialises the chip. opts nil means
// bmxx80.DefaultOpts (4x oversampling of each channel, no filter). It fails
// with an error wrapping [env.ErrNotFound] when nothing answers at addr and
// [ErrUnknownChip] when something else does. The driver does not own bus.
func NewI2C(bus i2c.Bus, addr uint16, opts *bmxx80.Opts) (*Sensor, error) {
	if addr != 0x76 && addr != 0x77 {
		return nil, fmt.Errorf("bmx280: address %#x not supported: use 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)", addr)
	}
	// Probe the chip ID ourselves first: periph formats I/O errors with %v,
	// so a missing chip could not be told from a broken one afterwards.
	var id [1]byte
	if err := bus.Tx(addr, []byte{regChipID}, id[:]); err != nil {
		return nil, fmt.Errorf("bmx280: %w at %s address %#x: %v", env.ErrNotFound, bus, addr, err)
	}
	var model string
	switch id[0] {
	case chipBMP180:
		model = "BMP180"
	case chipBMP280:
		model = "BMP280"
	case chipBME280:
		model = "BME280"
	default:
		return nil, fmt.Errorf("%w: chip id %#02x at address %#x (want 0x58 BMP280, 0x60 BME280 or 0x55 BMP180)", ErrUnknownChip, id[0], addr)
	}
	if opts == nil {
		opts = &bmxx80.DefaultOpts
	}
	dev, err := bmxx80.NewI2C(bus, addr, opts)
	if err != nil {
		return nil, fmt.Errorf("bmx280: init %s at %#x: %w", model, addr, err)
	}
	return &Sensor{dev: dev, model: model, addr: addr}, nil
}

// Model returns "BMP280", "BME280" or "BMP180".
func (s *Sensor) Model() string { return s.model }

// Addr returns the I2C address.
func (s *Sensor) Addr() uint16 { return s.addr }

// Read runs one forced-mode measurement (about 18 ms with the default
// oversampling) and returns it. Humidity is set on a BME280 only.
func (s *Sensor) Read(ctx context.Context) (env.Reading, error) {
	if err := ctx.Err(); err != nil {
		return env.Reading{}, fmt.Errorf("bmx280: read: %w", err)
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		return env.Reading{}, fmt.Errorf("bmx280: read %s at %#x: %w", s.model, s.addr, err)
	}
	r := env.Reading{
		TemperatureC: e.Temperature.Celsius(),
		PressureHPa:  float64(e.Pressure) / float64(100*physic.Pascal),
	}
	if s.model == "BME280" {
		h := float64(e.Humidity) / float64(physic.PercentRH)
		r.HumidityPct = &h
	}
	return r, nil
}

// Halt stops any conversion; in forced mode the chip already sleeps between
// reads, so this only matters if a read was interrupted.
func (s *Sensor) Halt() error { return s.dev.Halt() }

// BusOpener opens an I2C bus by name; [i2cbus.Open] is the real one, tests
// pass a function returning an i2ctest.Playback.
type BusOpener func(name string) (i2c.BusCloser, error)

// device is a Sensor that owns its bus.
type device struct {
	*Sensor
	bus i2c.BusCloser
}

func (d *device) Close() error {
	return errors.Join(d.Halt(), d.bus.Close())
}

// Open returns an [env.OpenFunc] that opens bus with open (nil means
// [i2cbus.Open]) and probes addr; addr 0 tries 0x76, then 0x77. The device
// it returns closes the bus when closed.
func Open(open BusOpener, bus string, addr uint16, opts *bmxx80.Opts) env.OpenFunc {
	if open == nil {
		open = i2cbus.Open
	}
	return func(ctx context.Context) (env.Device, error) {
		b, err := open(bus)
		if err != nil {
			return nil, fmt.Errorf("bmx280: %w: %w", env.ErrNotFound, err)
		}
		addrs := Addresses
		if addr != 0 {
			addrs = []uint16{addr}
		}
		var errs []error
		for _, a := range addrs {
			s, err := NewI2C(b, a, opts)
			if err == nil {
				return &device{Sensor: s, bus: b}, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(append(errs, b.Close())...)
	}
}
