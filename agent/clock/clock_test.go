package clock

import (
	"path/filepath"
	"testing"
	"time"
)

var build = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestUnsyncedBoardAt1970UsesFloor(t *testing.T) {
	c := New(Options{BuildTime: build, TrustSystem: true, UseGPS: true, System: fixed(time.Unix(30, 0))})
	now, src := c.Now()
	if src != Unsynced {
		t.Fatalf("source = %s, want unsynced for a 1970 system clock", src)
	}
	if now.Before(build) || now.After(build.Add(time.Minute)) {
		t.Errorf("Now() = %v, want the build time floor %v", now, build)
	}
	if c.Trusted() {
		t.Error("Trusted() = true at 1970")
	}
	if _, ok := c.Retime(0); ok {
		t.Error("Retime succeeded while unsynced")
	}
}

func TestSystemClockTrustedPastFloor(t *testing.T) {
	sys := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	c := New(Options{BuildTime: build, TrustSystem: true, System: fixed(sys)})
	now, src := c.Now()
	if src != System || now.Sub(sys) > time.Second || now.Before(sys.Add(-time.Second)) {
		t.Fatalf("Now() = %v %s, want ~%v system", now, src, sys)
	}
	c = New(Options{BuildTime: build, TrustSystem: false, System: fixed(sys)})
	if _, src := c.Now(); src != Unsynced {
		t.Errorf("TrustSystem=false: source %s", src)
	}
}

func TestGPSTimeWinsAndRetimes(t *testing.T) {
	c := New(Options{BuildTime: build, TrustSystem: true, UseGPS: true, System: fixed(time.Unix(0, 0))})
	before := c.Mono()
	gps := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	c.SetGPS(time.Date(1980, 1, 6, 0, 0, 0, 0, time.UTC)) // pre-almanac junk is ignored
	if c.Trusted() {
		t.Fatal("a 1980 GPS time made the clock trusted")
	}
	c.SetGPS(gps)
	now, src := c.Now()
	if src != GPS || now.Before(gps) || now.After(gps.Add(time.Minute)) {
		t.Fatalf("Now() = %v %s after GPS %v", now, src, gps)
	}
	rt, ok := c.Retime(before)
	if !ok || rt.After(gps) || rt.Before(gps.Add(-time.Minute)) {
		t.Errorf("Retime(before) = %v %v, want a time just before %v", rt, ok, gps)
	}
	off := New(Options{BuildTime: build, UseGPS: false})
	off.SetGPS(gps)
	if _, src := off.Now(); src == GPS {
		t.Error("UseGPS=false still used GPS")
	}
}

func TestFloorPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock.json")
	sys := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	c := New(Options{FloorFile: path, BuildTime: build, TrustSystem: true, System: fixed(sys)})
	if err := c.Save(true); err != nil {
		t.Fatal(err)
	}
	// Next boot: the system clock is back at 1970.
	c2 := New(Options{FloorFile: path, BuildTime: build, TrustSystem: true, System: fixed(time.Unix(0, 0))})
	if f := c2.Floor(); f.Before(sys) || f.After(sys.Add(time.Second)) {
		t.Fatalf("Floor() after reboot = %v, want %v", f, sys)
	}
	if now, src := c2.Now(); src != Unsynced || now.Before(sys) {
		t.Errorf("Now() = %v %s, want unsynced at or after %v", now, src, sys)
	}
	// A system clock behind the persisted floor is not trusted.
	c3 := New(Options{FloorFile: path, BuildTime: build, TrustSystem: true, System: fixed(sys.Add(-24 * time.Hour))})
	if _, src := c3.Now(); src != Unsynced {
		t.Errorf("system clock behind the floor: source %s", src)
	}
}

func TestUnstampedBuildStillDistrusts1970(t *testing.T) {
	c := New(Options{TrustSystem: true, System: fixed(time.Unix(5, 0))})
	if now, src := c.Now(); src != Unsynced || now.Before(MinFloor) {
		t.Fatalf("Now() = %v %s without a build time, want unsynced at or after %v", now, src, MinFloor)
	}
}
