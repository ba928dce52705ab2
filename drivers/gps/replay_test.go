package gps

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

// TestReplay plays a capture at double speed in a loop inside a synctest
// bubble: fixes come every half second of fake time, stamped with the time
// they are emitted, and the second lap follows the first seamlessly.
func TestReplay(t *testing.T) {
	capture := filepath.Join("nmea", "testdata", "ublox-m8.nmea")
	synctest.Test(t, func(t *testing.T) {
		r, err := OpenReplay(capture, ReplayOpts{Speed: 2, Loop: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.Len() != 20 || r.Duration() != 20*time.Second {
			t.Fatalf("capture: %d epochs over %v, want 20 over 20s", r.Len(), r.Duration())
		}
		start := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		var got []Fix
		done := make(chan error)
		go func() {
			done <- r.Run(ctx, func(f Fix) {
				if !f.Time.Equal(time.Now().UTC()) {
					t.Errorf("fix stamped %v, emitted at %v", f.Time, time.Now())
				}
				got = append(got, f)
				if len(got) == 45 {
					cancel()
				}
			})
		}()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for i, f := range got {
			want := start.Add(time.Duration(i) * 500 * time.Millisecond)
			if !f.Time.Equal(want) {
				t.Fatalf("fix %d at %v, want %v", i, f.Time, want)
			}
		}
		// The same epoch of both laps has the same position.
		if got[5].Lat != got[25].Lat || got[5].Lon != got[25].Lon || !got[5].Valid() {
			t.Errorf("lap 2 differs: %v vs %v", got[5], got[25])
		}
		if got[0].Valid() || got[0].Mode != nmea.ModeNoFix {
			t.Errorf("first epoch of the capture has no fix, replayed as %v", got[0])
		}
	})
}

func TestReplayOnceWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := NewReplay(strings.NewReader(epoch("120000", "4807.038")+epoch("120001", "4807.039")), ReplayOpts{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		n := 0
		done := make(chan struct{})
		go func() {
			r.Run(ctx, func(Fix) { n++ })
			close(done)
		}()
		time.Sleep(time.Minute) // fake time: the capture ends after 1 s
		synctest.Wait()
		if n != 2 {
			t.Errorf("emitted %d fixes, want 2", n)
		}
		select {
		case <-done:
			t.Fatal("Run returned before its context ended")
		default:
		}
		cancel()
		<-done
	})
}

func TestReplayErrors(t *testing.T) {
	if _, err := NewReplay(strings.NewReader(sentence("GPGGA,120000.00,,,,,0,00,,,M,,M,,")), ReplayOpts{}); !errors.Is(err, ErrNoFixes) {
		t.Errorf("no-fix capture: %v, want ErrNoFixes", err)
	}
	if _, err := OpenReplay(filepath.Join(t.TempDir(), "missing.nmea"), ReplayOpts{}); err == nil {
		t.Error("OpenReplay of a missing file succeeded")
	}
	if _, err := NewReplay(strings.NewReader(""), ReplayOpts{Speed: -1}); err == nil {
		t.Error("negative speed accepted")
	}
}

func TestSim(t *testing.T) {
	s := NewSim(SimOpts{Seed: 2, SpeedMPS: 10, RadiusM: 1000})
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := s.At(t0)
	for i := 1; i <= 700; i++ {
		f := s.At(t0.Add(time.Duration(i) * time.Second))
		if !f.Valid() || f.Lat < -90 || f.Lat > 90 {
			t.Fatalf("fix %d = %v", i, f)
		}
		// 10 m/s: consecutive fixes are about 10 m apart.
		dn := (f.Lat - prev.Lat) * metresPerDegree
		de := (f.Lon - prev.Lon) * metresPerDegree * math.Cos(f.Lat*math.Pi/180)
		if d := math.Hypot(dn, de); math.Abs(d-10) > 0.1 {
			t.Fatalf("fix %d moved %.2f m in 1 s, want 10", i, d)
		}
		// The reported track points the way the fix moved.
		heading := math.Mod(math.Atan2(de, dn)*180/math.Pi+360, 360)
		if diff := math.Abs(math.Mod(heading-f.Track+540, 360) - 180); diff > 1 {
			t.Fatalf("fix %d: track %.1f, moved towards %.1f", i, f.Track, heading)
		}
		prev = f
	}
	// Seed 2 picks Shanghai.
	if math.Abs(prev.Lat-31.36) > 0.02 {
		t.Errorf("loop centre lat %v, want near 31.36", prev.Lat)
	}
}
