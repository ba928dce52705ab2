package env

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Device is a sensor that holds a resource (a bus, a file) until Close.
type Device interface {
	Sensor
	Close() error
}

// OpenFunc finds and initialises a sensor. It returns an error wrapping
// [ErrNotFound] when nothing answers.
type OpenFunc func(ctx context.Context) (Device, error)

// ProberOpts tunes a [Prober].
type ProberOpts struct {
	// MinBackoff is the wait before the first re-probe after a failure; it
	// doubles with each further failure up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Limits is the plausibility range (default [BoschLimits]).
	Limits *Limits
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// DefaultProberOpts re-probes after 5 s, then backs off to 5 minutes.
var DefaultProberOpts = ProberOpts{MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Minute}

// Health is a [Prober]'s view of its sensor, for status pages and
// telemetry flags.
type Health struct {
	// Healthy is true when the last read succeeded and was plausible.
	Healthy bool
	// Present is true while a device is open.
	Present bool
	// Failures counts failed probes and reads since the last good one.
	Failures int
	// TotalFailures counts every failure since the prober was made.
	TotalFailures int
	// LastError is the last failure, "" after a good read.
	LastError string
	// LastOK is the time of the last good reading.
	LastOK time.Time
	// NextProbe is when a missing sensor is probed again (zero while one is
	// open).
	NextProbe time.Time
}

// Prober wraps an [OpenFunc] into a [Sensor] that never gives up: a read
// opens the device when none is open, a failed or implausible read closes
// it, and a missing device is probed again with exponential backoff. It
// starts no goroutine: all work happens inside Read, driven by the caller's
// ticker. It is safe for concurrent use.
type Prober struct {
	open OpenFunc
	opts ProberOpts
	lim  Limits

	mu      sync.Mutex
	dev     Device
	backoff time.Duration
	health  Health
}

var _ Sensor = (*Prober)(nil)

// NewProber returns a prober for open; opts nil means [DefaultProberOpts].
func NewProber(open OpenFunc, opts *ProberOpts) *Prober {
	o := DefaultProberOpts
	if opts != nil {
		o = *opts
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultProberOpts.MinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(o.MinBackoff, DefaultProberOpts.MaxBackoff)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	lim := BoschLimits
	if o.Limits != nil {
		lim = *o.Limits
	}
	return &Prober{open: open, opts: o, lim: lim}
}

// Read returns a plausible reading, opening the device first if needed. While
// a failed device waits for its next probe, Read returns an error wrapping
// [ErrUnavailable] and the last failure, without touching the hardware.
func (p *Prober) Read(ctx context.Context) (Reading, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	if p.dev == nil {
		if now.Before(p.health.NextProbe) {
			return Reading{}, fmt.Errorf("%w until %s: %s", ErrUnavailable,
				p.health.NextProbe.Format(time.TimeOnly), p.health.LastError)
		}
		dev, err := p.open(ctx)
		if err != nil {
			return Reading{}, p.fail(now, fmt.Errorf("env: probe: %w", err))
		}
		p.dev = dev
		p.health.Present = true
		p.health.NextProbe = time.Time{}
	}
	r, err := p.dev.Read(ctx)
	if err == nil {
		err = r.Check(p.lim)
	}
	if err != nil {
		// Closing and re-opening re-reads the chip's calibration and
		// settings, which is what recovers a chip that was reset.
		cerr := p.dev.Close()
		p.dev = nil
		p.health.Present = false
		return Reading{}, p.fail(now, errors.Join(err, cerr))
	}
	if r.Time.IsZero() {
		r.Time = now
	}
	p.backoff = 0
	p.health.Healthy = true
	p.health.Failures = 0
	p.health.LastError = ""
	p.health.LastOK = now
	return r, nil
}

// fail records err and schedules the next probe.
func (p *Prober) fail(now time.Time, err error) error {
	if p.backoff == 0 {
		p.backoff = p.opts.MinBackoff
	} else {
		p.backoff = min(2*p.backoff, p.opts.MaxBackoff)
	}
	p.health.Healthy = false
	p.health.Failures++
	p.health.TotalFailures++
	p.health.LastError = err.Error()
	p.health.NextProbe = now.Add(p.backoff)
	return err
}

// Health returns the prober's view of its sensor.
func (p *Prober) Health() Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.health
}

// Close closes the open device, if any. A later Read probes again.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dev == nil {
		return nil
	}
	err := p.dev.Close()
	p.dev = nil
	p.health.Present = false
	return err
}
