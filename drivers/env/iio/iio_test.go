package iio

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/coldchain/tracker/drivers/env"
)

// tree writes a fake /sys/bus/iio/devices tree into t.TempDir().
func tree(t *testing.T, devices map[string]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for dev, files := range devices {
		dir := filepath.Join(root, dev)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestReadProcessed(t *testing.T) {
	root := tree(t, map[string]map[string]string{
		// An ADC without temperature comes first and must be passed over.
		"iio:device0":  {"name": "ads1015\n", "in_voltage0_raw": "12\n"},
		"iio:device10": {"name": "other\n", "in_temp_input": "1000\n", "in_pressure_input": "1\n"},
		"iio:device2":  {"name": "bmp280\n", "in_temp_input": "25080\n", "in_pressure_input": "100.653254\n"},
	})
	dir, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "iio:device2" {
		t.Fatalf("Find = %s, want iio:device2 (device10 sorts after it)", dir)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "bmp280" || r.TemperatureC != 25.08 || math.Abs(r.PressureHPa-1006.53254) > 1e-9 || r.HumidityPct != nil {
		t.Errorf("%s: Read = %+v, want 25.08 °C, 1006.53254 hPa, no humidity", s.Name(), r)
	}
}

func TestReadRawScaleHumidity(t *testing.T) {
	root := tree(t, map[string]map[string]string{
		"iio:device0": {
			"in_temp_raw": "2000", "in_temp_offset": "500", "in_temp_scale": "10",
			"in_pressure_raw": "99000", "in_pressure_scale": "0.001",
			"in_humidityrelative_input": "45500",
		},
	})
	s, err := Open(filepath.Join(root, "iio:device0"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.TemperatureC != 25 || math.Abs(r.PressureHPa-990) > 1e-9 || r.HumidityPct == nil || *r.HumidityPct != 45.5 {
		t.Errorf("Read = %+v (humidity %v), want 25 °C, 990 hPa, 45.5 %%", r, r.HumidityPct)
	}
}

func TestFailures(t *testing.T) {
	root := tree(t, map[string]map[string]string{
		"iio:device0": {"in_temp_input": "oops", "in_pressure_input": "100"},
		"iio:device1": {"in_temp_input": "20000"},
	})
	if _, err := Find(filepath.Join(root, "missing")); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("Find in a missing root = %v, want ErrNotFound", err)
	}
	if _, err := Find(t.TempDir()); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("Find in an empty root = %v, want ErrNotFound", err)
	}
	if _, err := Open(filepath.Join(root, "iio:device1")); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("Open without pressure = %v, want ErrNotFound", err)
	}
	s, err := Open(filepath.Join(root, "iio:device0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(context.Background()); err == nil {
		t.Error("Read of a non-numeric channel succeeded")
	}
	// The device vanishes (driver unbound): reads fail, and the prober's
	// open reports it missing.
	if err := os.RemoveAll(filepath.Join(root, "iio:device0")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(context.Background()); err == nil {
		t.Error("Read of a removed device succeeded")
	}
	if _, err := OpenFunc(filepath.Join(root, "iio:device0"))(context.Background()); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("OpenFunc of a removed device = %v, want ErrNotFound", err)
	}
}
