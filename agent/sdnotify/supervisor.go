package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrDuplicate reports a second registration under a name already in use.
var ErrDuplicate = errors.New("sdnotify: component already registered")

// Supervisor feeds the systemd watchdog while every registered component makes
// progress. Create it with [NewSupervisor].
type Supervisor struct {
	n   *Notifier
	log *slog.Logger

	mu       sync.Mutex
	comps    map[string]*component
	status   string // the caller's status line, shown while healthy
	shown    string // the STATUS= text last sent successfully
	failing  bool   // the last notification failed (logged once)
	lastFeed time.Time
}

type component struct {
	name  string
	stale time.Duration
	last  time.Time
}

// Stall describes a component that has not made progress within its allowed
// staleness.
type Stall struct {
	Name string
	// Idle is how long ago the component last made progress (or registered).
	Idle time.Duration
	// Allowed is the staleness it registered with.
	Allowed time.Duration
}

// String describes the stall for logs and the status API.
func (s Stall) String() string {
	return fmt.Sprintf("%s (no progress for %v, allowed %v)", s.Name, s.Idle.Round(time.Second), s.Allowed)
}

// NewSupervisor returns a Supervisor that notifies through n, feeding at half
// of n.WatchdogInterval(). logger receives notification failures (once per
// failure streak); nil discards them.
func NewSupervisor(n *Notifier, logger *slog.Logger) *Supervisor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{n: n, log: logger, comps: make(map[string]*component)}
}

// Heartbeat is one component's handle for reporting progress.
type Heartbeat struct {
	s *Supervisor
	c *component
}

// Register adds a component that must call Beat at least once every
// staleAfter; registering counts as its first beat. Choose staleAfter well
// above the component's normal cycle (a sampler reading every 30 s might
// allow 2 min).
func (s *Supervisor) Register(name string, staleAfter time.Duration) (*Heartbeat, error) {
	if name == "" {
		return nil, errors.New("sdnotify: register: empty component name")
	}
	if staleAfter <= 0 {
		return nil, fmt.Errorf("sdnotify: register %q: staleness %v must be positive", name, staleAfter)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.comps[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	c := &component{name: name, stale: staleAfter, last: time.Now()}
	s.comps[name] = c
	return &Heartbeat{s: s, c: c}, nil
}

// Beat records that the component made progress now.
func (h *Heartbeat) Beat() {
	h.s.mu.Lock()
	h.c.last = time.Now()
	h.s.mu.Unlock()
}

// Unregister removes the component, for one that ends on purpose. Beat after
// Unregister has no effect on the supervisor.
func (h *Heartbeat) Unregister() {
	h.s.mu.Lock()
	if h.s.comps[h.c.name] == h.c {
		delete(h.s.comps, h.c.name)
	}
	h.s.mu.Unlock()
}

// Stalled returns the components past their allowed staleness, by name.
func (s *Supervisor) Stalled() []Stall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalledLocked(time.Now())
}

func (s *Supervisor) stalledLocked(now time.Time) []Stall {
	var out []Stall
	for _, c := range s.comps {
		if idle := now.Sub(c.last); idle > c.stale {
			out = append(out, Stall{Name: c.name, Idle: idle, Allowed: c.stale})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LastFeed returns when WATCHDOG=1 was last sent successfully, or the zero
// time if never.
func (s *Supervisor) LastFeed() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFeed
}

// SetStatus sets the status line shown while every component is healthy and
// sends it now unless a stall report is showing.
func (s *Supervisor) SetStatus(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = text
	if len(s.stalledLocked(time.Now())) > 0 {
		return nil
	}
	return s.showLocked(text)
}

// Run checks the components at half the watchdog interval, feeding the
// watchdog while all are healthy, until ctx ends; it returns nil then. With
// the watchdog off it only waits for ctx. A failed notification is logged and
// retried at the next check, never returned: without keep-alives systemd
// restarts the service anyway.
func (s *Supervisor) Run(ctx context.Context) error {
	period := s.n.WatchdogInterval() / 2
	if period <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		s.Check()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check runs one supervision round now: WATCHDOG=1 if every component is
// within its staleness, otherwise a STATUS= line naming the stalled ones. It
// reports whether the watchdog was fed. Run calls it on its ticker.
func (s *Supervisor) Check() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	stalled := s.stalledLocked(now)
	if len(stalled) > 0 {
		// The line names each component and its allowance, not the idle
		// time, so it stays the same (and is sent once) while the stall lasts.
		parts := make([]string, len(stalled))
		for i, st := range stalled {
			parts[i] = fmt.Sprintf("%s (no progress for over %v)", st.Name, st.Allowed)
		}
		_ = s.showLocked("stalled: " + strings.Join(parts, "; "))
		return false
	}
	// Restore the caller's status line after a stall report. If that fails,
	// keep feeding anyway: a lost status line is no reason for a restart.
	_ = s.showLocked(s.status)
	if s.noteLocked(s.n.Watchdog()) != nil {
		return false
	}
	s.lastFeed = now
	return true
}

// showLocked sends STATUS=text unless it is already showing.
func (s *Supervisor) showLocked(text string) error {
	if text == s.shown {
		return nil
	}
	if err := s.noteLocked(s.n.Status(text)); err != nil {
		return err
	}
	s.shown = text
	return nil
}

// noteLocked logs the first error of a failure streak and its end.
func (s *Supervisor) noteLocked(err error) error {
	switch {
	case err != nil && !s.failing:
		s.failing = true
		s.log.Warn("service manager notification failed", "component", "watchdog", "err", err)
	case err == nil && s.failing:
		s.failing = false
		s.log.Info("service manager notifications work again", "component", "watchdog")
	}
	return err
}
