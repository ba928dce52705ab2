package env

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	h := func(v float64) *float64 { return &v }
	tests := []struct {
		name string
		r    Reading
		ok   bool
	}{
		{"room", Reading{TemperatureC: 21.5, PressureHPa: 1013.25}, true},
		{"reefer", Reading{TemperatureC: -25, PressureHPa: 990, HumidityPct: h(85)}, true},
		{"cold edge", Reading{TemperatureC: -40, PressureHPa: 1000}, true},
		{"both at the bottom", Reading{TemperatureC: -40, PressureHPa: 300}, false},
		{"too hot", Reading{TemperatureC: 85.1, PressureHPa: 1000}, false},
		{"too cold", Reading{TemperatureC: -41, PressureHPa: 1000}, false},
		{"pressure high", Reading{TemperatureC: 20, PressureHPa: 1100.5}, false},
		{"pressure zero", Reading{TemperatureC: 20, PressureHPa: 0}, false},
		{"nan", Reading{TemperatureC: math.NaN(), PressureHPa: 1000}, false},
		{"inf pressure", Reading{TemperatureC: 20, PressureHPa: math.Inf(1)}, false},
		{"humidity", Reading{TemperatureC: 20, PressureHPa: 1000, HumidityPct: h(100.5)}, false},
	}
	for _, tt := range tests {
		err := tt.r.Check(BoschLimits)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Check(%v) = %v, want ok=%v", tt.name, tt.r, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrImplausible) {
			t.Errorf("%s: error %v does not wrap ErrImplausible", tt.name, err)
		}
	}
}

// fakeDev returns the readings and errors queued for it.
type fakeDev struct {
	reads  []Reading
	errs   []error
	closed *int
}

func (d *fakeDev) Read(ctx context.Context) (Reading, error) {
	r, err := d.reads[0], d.errs[0]
	d.reads, d.errs = d.reads[1:], d.errs[1:]
	return r, err
}

func (d *fakeDev) Close() error { *d.closed++; return nil }

func TestProber(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	good := Reading{TemperatureC: 4, PressureHPa: 1010}
	ioErr := errors.New("i2c: remote I/O error")
	opens, closed := 0, 0
	// The device is missing for two probes, then answers: one good read, one
	// implausible, one I/O error, and after a re-open a good read.
	plan := []func() (Device, error){
		func() (Device, error) { return nil, ErrNotFound },
		func() (Device, error) { return nil, ErrNotFound },
		func() (Device, error) {
			return &fakeDev{reads: []Reading{good, {TemperatureC: -40, PressureHPa: 300}}, errs: []error{nil, nil}, closed: &closed}, nil
		},
		func() (Device, error) {
			return &fakeDev{reads: []Reading{{}}, errs: []error{ioErr}, closed: &closed}, nil
		},
		func() (Device, error) {
			return &fakeDev{reads: []Reading{good}, errs: []error{nil}, closed: &closed}, nil
		},
	}
	open := func(ctx context.Context) (Device, error) {
		f := plan[opens]
		opens++
		return f()
	}
	p := NewProber(open, &ProberOpts{MinBackoff: time.Second, MaxBackoff: 3 * time.Second, Now: clock})
	ctx := context.Background()
	step := func(advance time.Duration, wantErr error, wantOpens int) {
		t.Helper()
		now = now.Add(advance)
		r, err := p.Read(ctx)
		if wantErr == nil && err != nil {
			t.Fatalf("Read at +%v: %v", advance, err)
		}
		if wantErr != nil && !errors.Is(err, wantErr) {
			t.Fatalf("Read at +%v = %v, want %v", advance, err, wantErr)
		}
		if err == nil && (r.TemperatureC != good.TemperatureC || !r.Time.Equal(now)) {
			t.Fatalf("Read = %+v, want %+v at %v", r, good, now)
		}
		if opens != wantOpens {
			t.Fatalf("opens = %d, want %d", opens, wantOpens)
		}
	}
	step(0, ErrNotFound, 1)
	step(500*time.Millisecond, ErrUnavailable, 1) // backoff 1 s not over
	step(500*time.Millisecond, ErrNotFound, 2)    // probe again; backoff now 2 s
	if h := p.Health(); h.Healthy || h.Present || h.Failures != 2 || !h.NextProbe.Equal(now.Add(2*time.Second)) {
		t.Fatalf("health = %+v", h)
	}
	step(2*time.Second, nil, 3)
	if h := p.Health(); !h.Healthy || !h.Present || h.Failures != 0 || h.TotalFailures != 2 || h.LastError != "" {
		t.Fatalf("health after a good read = %+v", h)
	}
	step(time.Second, ErrImplausible, 3)
	if closed != 1 {
		t.Fatalf("device closed %d times after an implausible reading, want 1", closed)
	}
	step(time.Second, ioErr, 4) // backoff reset to 1 s after the good read
	step(2*time.Second, nil, 5)
	if err := p.Close(); err != nil || closed != 3 {
		t.Fatalf("Close = %v, closed %d, want 3", err, closed)
	}
}
