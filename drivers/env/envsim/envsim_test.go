package envsim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/coldchain/tracker/drivers/env"
)

var t0 = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

func TestPlausibleAndDeterministic(t *testing.T) {
	for _, name := range ProfileNames() {
		a, err := New(Opts{Seed: 7, Profile: name, Start: t0})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := New(Opts{Seed: 7, Profile: name, Start: t0})
		c, _ := New(Opts{Seed: 8, Profile: name, Start: t0})
		differs := false
		prev := math.NaN()
		for m := range 48 * 60 {
			at := t0.Add(time.Duration(m) * time.Minute)
			r, err := a.At(at)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Check(env.BoschLimits); err != nil {
				t.Fatalf("%s at +%dm: %v", name, m, err)
			}
			p := Profiles[name]
			if math.Abs(r.TemperatureC-p.BaseC) > p.SwingC+p.DriftC+0.1 {
				t.Fatalf("%s at +%dm: %.2f °C strays from %.1f", name, m, r.TemperatureC, p.BaseC)
			}
			if !math.IsNaN(prev) && math.Abs(r.TemperatureC-prev) > 0.5 {
				t.Fatalf("%s at +%dm: jumped %.2f → %.2f °C in a minute", name, m, prev, r.TemperatureC)
			}
			prev = r.TemperatureC
			if (r.HumidityPct != nil) != (p.HumidityPct > 0) {
				t.Fatalf("%s: humidity %v, profile humidity %v", name, r.HumidityPct, p.HumidityPct)
			}
			rb, _ := b.At(at)
			if rb.TemperatureC != r.TemperatureC || rb.PressureHPa != r.PressureHPa {
				t.Fatalf("%s: same seed, different readings %v vs %v", name, r, rb)
			}
			if rc, _ := c.At(at); rc.TemperatureC != r.TemperatureC {
				differs = true
			}
		}
		if !differs {
			t.Errorf("%s: seeds 7 and 8 gave identical temperatures", name)
		}
	}
}

func TestScript(t *testing.T) {
	script, err := ParseScript("excursion+8@1h/30m, fail@2h/10m,missing@3h/1h,implausible@5h/1m")
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	s, err := New(Opts{Seed: 1, Script: script, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := s.At(t0.Add(75 * time.Minute).Add(-time.Hour))
	peak, _ := s.At(t0.Add(75 * time.Minute))
	if peak.TemperatureC-base.TemperatureC < 6 {
		t.Errorf("excursion peak %.2f °C vs %.2f an hour earlier, want about +8", peak.TemperatureC, base.TemperatureC)
	}
	if _, err := s.At(t0.Add(2*time.Hour + 5*time.Minute)); !errors.Is(err, ErrFault) {
		t.Errorf("during fail: %v, want ErrFault", err)
	}
	now = t0.Add(3*time.Hour + time.Minute)
	if _, err := s.Read(context.Background()); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("during missing: %v, want ErrNotFound", err)
	}
	if _, err := s.OpenFunc()(context.Background()); !errors.Is(err, env.ErrNotFound) {
		t.Errorf("open during missing: %v, want ErrNotFound", err)
	}
	r, _ := s.At(t0.Add(5*time.Hour + 30*time.Second))
	if err := r.Check(env.BoschLimits); !errors.Is(err, env.ErrImplausible) {
		t.Errorf("during implausible: Check = %v, want ErrImplausible", err)
	}
	now = t0.Add(6 * time.Hour)
	if _, err := s.OpenFunc()(context.Background()); err != nil {
		t.Errorf("open after the script: %v", err)
	}
}

func TestParseScriptErrors(t *testing.T) {
	for _, spec := range []string{"excursion@1h/1m", "fail+3@1h/1m", "boom@1h/1m", "fail@1h", "fail@x/1m", "fail@1h/0s", "excursion+hot@1h/1m"} {
		if _, err := ParseScript(spec); err == nil {
			t.Errorf("ParseScript(%q) succeeded", spec)
		}
	}
	if _, err := New(Opts{Profile: "sauna"}); err == nil {
		t.Error("New with an unknown profile succeeded")
	}
}

// BenchmarkRead shows the cost of one simulated device's reading.
func BenchmarkRead(b *testing.B) {
	s, _ := New(Opts{Seed: 3, Profile: "pharma", Start: t0})
	at := t0
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(time.Second)
		_, _ = s.At(at)
	}
}
