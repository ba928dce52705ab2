package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coldchain/tracker/agent/clock"
	"github.com/coldchain/tracker/telemetry"
)

// EnvSensor reads the environment sensor once. Implementations return an
// error for a missing, failing or implausible sensor; the sampler keeps
// going and re-probes.
type EnvSensor interface {
	Read(ctx context.Context) (telemetry.Env, error)
}

// FixSource runs a GPS receiver and calls emit for every fix epoch until ctx
// ends. A receiver that vanishes is reopened by the source itself; Run
// returns only when ctx ends or on a configuration error.
type FixSource interface {
	Run(ctx context.Context, emit func(telemetry.Fix)) error
}

// recordSink stores records durably and returns their sequence numbers.
type recordSink interface {
	Append(r *telemetry.Record) (uint64, error)
}

// sampler reads the sensor on its own ticker, keeps the latest fix, and
// appends a record every telemetry interval and at once on an alert.
type sampler struct {
	env      EnvSensor
	clock    *clock.Clock
	sink     recordSink
	log      *slog.Logger
	boot     string
	interval func() time.Duration // sensor read interval
	settings func() Settings
	beat     func()
	warn     func(string)

	mu       sync.Mutex
	fix      *telemetry.Fix
	fixAt    time.Duration // clock.Mono() of the last fix
	stale    time.Duration
	lastEnv  *telemetry.Env
	envAt    time.Time
	envErr   string
	envErrs  int
	alertsOn map[string]bool
	appended uint64
	alerts   uint64
	lastSeq  uint64
	errLog   rateLimiter
}

// setFix records the latest fix; called from the GPS goroutine.
func (s *sampler) setFix(f telemetry.Fix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Mode < 2 {
		// No fix: keep the last position, marked stale.
		if s.fix != nil {
			s.fix.Stale = true
		}
		return
	}
	s.fix = &f
	s.fixAt = s.clock.Mono()
	s.clock.SetGPS(f.Time)
}

func (s *sampler) currentFix() *telemetry.Fix {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fix == nil {
		return nil
	}
	f := *s.fix
	if s.clock.Mono()-s.fixAt > s.stale {
		f.Stale = true
	}
	return &f
}

// run samples until ctx ends.
func (s *sampler) run(ctx context.Context) error {
	readEvery := s.interval()
	t := time.NewTicker(readEvery)
	defer t.Stop()
	var lastRecord time.Duration = -1
	for {
		s.sample(ctx, &lastRecord)
		s.beat()
		if iv := s.interval(); iv != readEvery {
			readEvery = iv
			t.Reset(iv)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sample reads the sensor once and appends a record when one is due.
func (s *sampler) sample(ctx context.Context, lastRecord *time.Duration) {
	set := s.settings()
	var env *telemetry.Env
	var fault string
	if s.env != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		e, err := s.env.Read(rctx)
		cancel()
		if err != nil {
			fault = err.Error()
		} else {
			env = &e
		}
	} else {
		fault = "no sensor configured"
	}
	now, src := s.clock.Now()
	mono := s.clock.Mono()

	s.mu.Lock()
	if env != nil {
		s.lastEnv, s.envAt, s.envErr = env, now, ""
	} else {
		s.envErr = fault
		s.envErrs++
	}
	s.mu.Unlock()
	if fault != "" && s.env != nil {
		if n, ok := s.errLog.allow(mono); ok {
			msg := "sensor: " + fault
			if n > 0 {
				msg += fmt.Sprintf(" (%d more since the last report)", n)
			}
			s.log.Warn("sensor read failed", "err", fault, "suppressed", n)
			s.warn(msg)
		}
	}

	var alerts []string
	if env != nil {
		alerts = set.alerts(env.TempC, env.PressureHPa)
	}
	newAlert := s.alertChanged(alerts)
	due := *lastRecord < 0 || mono-*lastRecord >= set.Interval-set.Interval/20
	if !due && !newAlert {
		return
	}
	r := &telemetry.Record{
		Kind:     telemetry.KindReading,
		Time:     now,
		Clock:    string(src),
		Shipment: set.ShipmentID,
		Env:      env,
		EnvFault: fault,
		Fix:      s.currentFix(),
		Alerts:   alerts,
	}
	if src == clock.Unsynced {
		r.Boot, r.Mono = s.boot, mono.Seconds()
	}
	seq, err := s.sink.Append(r)
	if err != nil {
		s.log.Error("buffer append failed: reading lost", "err", err)
		s.warn("buffer: " + err.Error())
		return
	}
	*lastRecord = mono
	s.mu.Lock()
	s.appended++
	s.lastSeq = seq
	if len(alerts) > 0 {
		s.alerts++
	}
	s.mu.Unlock()
}

// alertChanged reports whether alerts contains an alert that was not active
// at the previous sample, and remembers the active set.
func (s *sampler) alertChanged(alerts []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := map[string]bool{}
	changed := false
	for _, a := range alerts {
		now[a] = true
		if !s.alertsOn[a] {
			changed = true
		}
	}
	s.alertsOn = now
	return changed
}

// rateLimiter lets the first event through, then at most one per minute,
// doubling up to an hour while events keep coming, and reports how many it
// suppressed. A quiet spell resets it.
type rateLimiter struct {
	next       time.Duration
	period     time.Duration
	suppressed int
}

func (r *rateLimiter) allow(now time.Duration) (suppressed int, ok bool) {
	if r.period == 0 || now-r.next > 2*time.Hour {
		r.period = time.Minute
		r.next = now + r.period
		r.suppressed = 0
		return 0, true
	}
	if now < r.next {
		r.suppressed++
		return 0, false
	}
	n := r.suppressed
	r.suppressed = 0
	r.period = min(2*r.period, time.Hour)
	r.next = now + r.period
	return n, true
}
