// Package clock decides what time it is on a board that may have no
// real-time clock.
//
// A Raspberry Pi class board without an RTC boots in 1970 (or at the time
// fake-hwclock saved) until NTP or GPS sets the time. Certificates then look
// "not yet valid" and readings get absurd timestamps. A [Clock] combines the
// sources it has, best first:
//
//  1. GPS time, once a receiver has reported a fix (when enabled);
//  2. the system clock, when it is not earlier than the floor: the later of
//     the build time and the last known good time persisted in the state
//     directory (when enabled);
//  3. otherwise the floor plus the monotonic time since the process started,
//     reported as [Unsynced]: good enough to validate certificates (which
//     were issued before the floor) but never presented as a real time.
//
// Readings taken while unsynced carry their monotonic offset, so they can be
// re-timestamped once a trusted source appears ([Clock.Retime]). A Clock is
// safe for concurrent use.
package clock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Source says where a timestamp came from.
type Source string

// The clock sources, best first.
const (
	GPS      Source = "gps"
	System   Source = "system"
	Unsynced Source = "unsynced"
)

// MinFloor is the earliest time a Clock ever reports: no tracker software
// ran before it, so a clock showing an earlier time is wrong.
var MinFloor = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options configures a Clock.
type Options struct {
	// FloorFile persists the last known good time ("" keeps it in memory).
	FloorFile string
	// BuildTime is a lower bound for the current time.
	BuildTime time.Time
	// TrustSystem accepts the system clock once it is past the floor.
	TrustSystem bool
	// UseGPS accepts GPS time.
	UseGPS bool
	// System reads the system clock; nil means time.Now. Tests set it.
	System func() time.Time
}

// Clock is the agent's best knowledge of the current time.
type Clock struct {
	opts  Options
	start time.Time // monotonic reference (time.Now with monotonic reading)

	mu        sync.Mutex
	floor     time.Time
	gpsBase   time.Time     // GPS time at gpsMono
	gpsMono   time.Duration // monotonic offset of gpsBase
	haveGPS   bool
	lastSaved time.Time
}

// New returns a Clock, reading the persisted floor if there is one. A
// missing or unreadable floor file is not an error: the build time is used.
func New(opts Options) *Clock {
	if opts.System == nil {
		opts.System = time.Now
	}
	c := &Clock{opts: opts, start: time.Now(), floor: opts.BuildTime.UTC()}
	if c.floor.Before(MinFloor) {
		// A binary built without a stamped build time still knows it was
		// not built before this; a board at 1970 is never "synchronised".
		c.floor = MinFloor
	}
	if opts.FloorFile != "" {
		if t, err := readFloor(opts.FloorFile); err == nil && t.After(c.floor) {
			c.floor = t
		}
	}
	return c
}

// Mono returns the monotonic time since the clock was created. Readings
// store it so they can be re-timestamped.
func (c *Clock) Mono() time.Duration { return time.Since(c.start) }

// Now returns the best known time and its source.
func (c *Clock) Now() (time.Time, Source) {
	m := c.Mono()
	return c.at(m, m)
}

// at returns the time at monotonic offset mono, judged at offset cur (now).
func (c *Clock) at(mono, cur time.Duration) (time.Time, Source) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.haveGPS {
		return c.gpsBase.Add(mono - c.gpsMono), GPS
	}
	if c.opts.TrustSystem {
		// The system clock's reading for the moment mono.
		sys := c.opts.System().Add(mono - cur)
		if !sys.Before(c.floor) {
			return sys.UTC(), System
		}
	}
	return c.floor.Add(mono), Unsynced
}

// Trusted reports whether the current time comes from GPS or a plausible
// system clock.
func (c *Clock) Trusted() bool {
	_, src := c.Now()
	return src != Unsynced
}

// TLSTime returns the time to validate certificates with: the best known
// time. While unsynced this is the floor, at which the fleet's certificates
// were already valid.
func (c *Clock) TLSTime() time.Time {
	t, _ := c.Now()
	return t
}

// SetGPS feeds a GPS fix time, received at the current monotonic time.
// Times before the build time are ignored (a receiver that has not yet
// decoded the almanac may report 1980 or a week-rollover date).
func (c *Clock) SetGPS(t time.Time) {
	if !c.opts.UseGPS || t.IsZero() {
		return
	}
	mono := c.Mono()
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.opts.BuildTime) {
		return
	}
	c.gpsBase, c.gpsMono, c.haveGPS = t.UTC(), mono, true
}

// Retime returns the trusted time of a reading taken at monotonic offset
// mono of this clock, and true, when the clock is trusted now; otherwise it
// returns false.
func (c *Clock) Retime(mono time.Duration) (time.Time, bool) {
	t, src := c.at(mono, c.Mono())
	if src == Unsynced {
		return time.Time{}, false
	}
	return t, true
}

// Floor returns the current lower bound for the time.
func (c *Clock) Floor() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.floor
}

// Save raises the floor to the current time when it is trusted and
// persists it, at most once a minute unless force is set.
func (c *Clock) Save(force bool) error {
	t, src := c.Now()
	if src == Unsynced {
		return nil
	}
	c.mu.Lock()
	if t.After(c.floor) {
		c.floor = t
	}
	if c.opts.FloorFile == "" || (!force && t.Sub(c.lastSaved) < time.Minute) {
		c.mu.Unlock()
		return nil
	}
	c.lastSaved = t
	floor := c.floor
	c.mu.Unlock()
	return writeFloor(c.opts.FloorFile, floor)
}

type floorDoc struct {
	LastKnownGood time.Time `json:"lastKnownGood"`
}

func readFloor(path string) (time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	var d floorDoc
	if err := json.Unmarshal(data, &d); err != nil {
		return time.Time{}, fmt.Errorf("clock: %s: %w", path, err)
	}
	return d.LastKnownGood, nil
}

func writeFloor(path string, t time.Time) error {
	data, _ := json.Marshal(floorDoc{LastKnownGood: t.UTC()})
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clock: state directory %s missing: %w", filepath.Dir(path), err)
		}
		return fmt.Errorf("clock: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("clock: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("clock: %w", err)
	}
	return nil
}
