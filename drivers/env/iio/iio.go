// Package iio reads temperature, pressure and humidity from a Linux
// Industrial I/O device in sysfs, for boards where the kernel's own driver
// (bmp280, bme680, …) owns the chip and /dev/i2c-N cannot reach it.
//
// Units follow the kernel's IIO ABI (Documentation/ABI/testing/sysfs-bus-iio):
// in_temp_input is milli-degrees Celsius, in_pressure_input kilopascals and
// in_humidityrelative_input milli-percent. Channels without a processed
// "_input" file are computed as (raw + offset) × scale.
//
// A [Sensor] only reads files; it holds no descriptors between reads and is
// safe for concurrent use.
package iio

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/coldchain/tracker/drivers/env"
)

// DefaultRoot is where the kernel lists IIO devices.
const DefaultRoot = "/sys/bus/iio/devices"

// Sensor is one IIO device directory.
type Sensor struct {
	dir  string
	name string
}

var _ env.Sensor = (*Sensor)(nil)

// Find returns the first device under root (sorted by name, iio:device0
// first) that has a temperature channel. root "" means [DefaultRoot].
func Find(root string) (string, error) {
	if root == "" {
		root = DefaultRoot
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("iio: %w: %s does not exist (no IIO support in the kernel?)", env.ErrNotFound, root)
		}
		return "", fmt.Errorf("iio: list devices: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "iio:device") {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimPrefix(names[i], "iio:device"))
		b, _ := strconv.Atoi(strings.TrimPrefix(names[j], "iio:device"))
		return a < b
	})
	for _, n := range names {
		dir := filepath.Join(root, n)
		if hasChannel(dir, "in_temp") {
			return dir, nil
		}
	}
	return "", fmt.Errorf("iio: %w: no device under %s has a temperature channel (is the kernel driver bound? see dmesg)", env.ErrNotFound, root)
}

func hasChannel(dir, ch string) bool {
	for _, suffix := range []string{"_input", "_raw"} {
		if _, err := os.Stat(filepath.Join(dir, ch+suffix)); err == nil {
			return true
		}
	}
	return false
}

// Open checks that dir is an IIO device with temperature and pressure
// channels. dir "" finds one under [DefaultRoot].
func Open(dir string) (*Sensor, error) {
	if dir == "" {
		d, err := Find("")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("iio: %w: %v", env.ErrNotFound, err)
	}
	for _, ch := range []string{"in_temp", "in_pressure"} {
		if !hasChannel(dir, ch) {
			return nil, fmt.Errorf("iio: %w: %s has no %s_input or %s_raw", env.ErrNotFound, dir, ch, ch)
		}
	}
	name, _ := os.ReadFile(filepath.Join(dir, "name"))
	return &Sensor{dir: dir, name: strings.TrimSpace(string(name))}, nil
}

// Name returns the kernel driver's name for the device ("bmp280"), if any.
func (s *Sensor) Name() string { return s.name }

// Dir returns the device's sysfs directory.
func (s *Sensor) Dir() string { return s.dir }

// Read reads every channel once. Each sysfs read makes the kernel driver
// take a fresh measurement.
func (s *Sensor) Read(ctx context.Context) (env.Reading, error) {
	if err := ctx.Err(); err != nil {
		return env.Reading{}, fmt.Errorf("iio: read: %w", err)
	}
	mC, err := s.channel("in_temp")
	if err != nil {
		return env.Reading{}, err
	}
	kPa, err := s.channel("in_pressure")
	if err != nil {
		return env.Reading{}, err
	}
	r := env.Reading{TemperatureC: mC / 1000, PressureHPa: kPa * 10}
	if hasChannel(s.dir, "in_humidityrelative") {
		mPct, err := s.channel("in_humidityrelative")
		if err != nil {
			return env.Reading{}, err
		}
		h := mPct / 1000
		r.HumidityPct = &h
	}
	return r, nil
}

// Close does nothing: no descriptor stays open between reads.
func (s *Sensor) Close() error { return nil }

// channel returns the processed value of ch in ABI units.
func (s *Sensor) channel(ch string) (float64, error) {
	if v, err := s.number(ch + "_input"); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return v, err
	}
	raw, err := s.number(ch + "_raw")
	if err != nil {
		return 0, err
	}
	offset, err := s.number(ch + "_offset")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	scale, err := s.number(ch + "_scale")
	if errors.Is(err, fs.ErrNotExist) {
		scale, err = 1, nil
	}
	if err != nil {
		return 0, err
	}
	return (raw + offset) * scale, nil
}

func (s *Sensor) number(file string) (float64, error) {
	p := filepath.Join(s.dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		// ENOENT: no such channel (or the device went away); EIO: the
		// kernel driver could not talk to the chip.
		return 0, fmt.Errorf("iio: read %s: %w", p, err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return 0, fmt.Errorf("iio: %s holds %q, not a number", p, strings.TrimSpace(string(b)))
	}
	return v, nil
}

// OpenFunc returns an [env.OpenFunc] for [env.Prober] that opens dir ("" to
// find a device under [DefaultRoot]).
func OpenFunc(dir string) env.OpenFunc {
	return func(ctx context.Context) (env.Device, error) {
		s, err := Open(dir)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}
