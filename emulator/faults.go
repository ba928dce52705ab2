package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1.5s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("emulator: duration %q: %v (want e.g. \"1.5s\")", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("emulator: duration %s: want a string such as \"1.5s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// FaultSpec describes faults to inject, as the control endpoint
// (POST /emulator/faults) and the CLI flags take them. Zero fields change
// nothing; Clear first removes every fault.
type FaultSpec struct {
	// Clear removes all faults before the others are applied.
	Clear bool `json:"clear,omitempty"`
	// DropDevice closes the hub and DPS connections of this device ID.
	DropDevice string `json:"dropDevice,omitempty"`
	// RefuseConnections answers every CONNECT with "server unavailable"
	// (CONNACK 3) for this long.
	RefuseConnections Duration `json:"refuseConnections,omitempty"`
	// DPSStatus answers the next DPSCount DPS requests (default 1) with this
	// HTTP status (429 or 5xx) and retry-after DPSRetryAfter.
	DPSStatus     int      `json:"dpsStatus,omitempty"`
	DPSRetryAfter Duration `json:"dpsRetryAfter,omitempty"`
	DPSCount      int      `json:"dpsCount,omitempty"`
	// WithholdDevice gets no PUBACK for its next WithholdCount QoS 1
	// publishes, or for all of them during WithholdFor. A withheld
	// telemetry message is still recorded (the acknowledgement is what got
	// lost); a withheld DPS or twin request is dropped.
	WithholdDevice string   `json:"withholdDevice,omitempty"`
	WithholdCount  int      `json:"withholdCount,omitempty"`
	WithholdFor    Duration `json:"withholdFor,omitempty"`
	// Latency delays the handling (and so the PUBACK) of every device
	// publish; a negative value removes it.
	Latency Duration `json:"latency,omitempty"`
	// ThrottleD2C limits device-to-cloud messages to this many per second
	// across the hub, like an S1 unit (100/s): messages over the rate are
	// delayed (traffic shaping) and, when the delay would pass 10s, the
	// device is disconnected. A negative value removes the limit.
	ThrottleD2C float64 `json:"throttleD2C,omitempty"`
}

// FaultState is a snapshot of the active faults.
type FaultState struct {
	RefuseUntil  *time.Time        `json:"refuseUntil,omitempty"`
	DPS          []DPSFault        `json:"dps,omitempty"`
	Withheld     map[string]string `json:"withheld,omitempty"`
	Latency      Duration          `json:"latency,omitempty"`
	ThrottleD2C  float64           `json:"throttleD2C,omitempty"`
	DroppedCount int64             `json:"dropped,omitempty"`
}

// DPSFault is a pending injected DPS answer.
type DPSFault struct {
	Status     int      `json:"status"`
	RetryAfter Duration `json:"retryAfter"`
	Remaining  int      `json:"remaining"`
}

// Faults injects failures into the emulator, for tests and demos. Its methods
// are safe for concurrent use and take effect at once.
type Faults struct {
	e *Emulator

	mu          sync.Mutex
	refuseUntil time.Time
	dps         []DPSFault
	withhold    map[string]*withhold
	latency     time.Duration
	rate        float64 // D2C messages per second, 0 = unlimited
	tokens      float64
	last        time.Time
	dropped     int64
}

type withhold struct {
	count int
	until time.Time
}

// maxShaping is the longest a throttled message is delayed before the device
// is disconnected instead.
const maxShaping = 10 * time.Second

// DropDevice closes the connections (hub and DPS) of device id, as a network
// failure would. It reports whether there was one.
func (f *Faults) DropDevice(id string) bool {
	f.mu.Lock()
	f.dropped++
	f.mu.Unlock()
	return f.e.kickDevice(id, "fault: connection dropped")
}

// RefuseConnections makes every CONNECT fail with "server unavailable" for
// d (zero or negative ends a refusal).
func (f *Faults) RefuseConnections(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		f.refuseUntil = time.Time{}
		return
	}
	f.refuseUntil = time.Now().Add(d)
}

// DPSStatus answers the next count DPS requests (register or poll) with
// status (429, 500, 503...) and retry-after, queued after earlier ones.
func (f *Faults) DPSStatus(status int, retryAfter time.Duration, count int) error {
	if status < 400 || status > 599 {
		return fmt.Errorf("emulator: DPS fault status %d: want an error status (429, 500-599, or another 4xx)", status)
	}
	if count <= 0 {
		count = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dps = append(f.dps, DPSFault{Status: status, RetryAfter: Duration(retryAfter), Remaining: count})
	return nil
}

// WithholdPubacks withholds the PUBACK of the next n QoS 1 publishes of
// device id.
func (f *Faults) WithholdPubacks(id string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.withhold == nil {
		f.withhold = map[string]*withhold{}
	}
	w := f.withhold[id]
	if w == nil {
		w = &withhold{}
		f.withhold[id] = w
	}
	w.count += n
}

// WithholdPubacksFor withholds every PUBACK to device id for d.
func (f *Faults) WithholdPubacksFor(id string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.withhold == nil {
		f.withhold = map[string]*withhold{}
	}
	w := f.withhold[id]
	if w == nil {
		w = &withhold{}
		f.withhold[id] = w
	}
	w.until = time.Now().Add(d)
}

// Latency delays every device publish by d before it is handled.
func (f *Faults) Latency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = max(d, 0)
}

// ThrottleD2C limits device-to-cloud messages to perSecond across the hub
// (0 removes the limit). S1 allows 100 per second per unit.
func (f *Faults) ThrottleD2C(perSecond float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = max(perSecond, 0)
	f.tokens = f.rate
	f.last = time.Now()
}

// Clear removes every fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuseUntil = time.Time{}
	f.dps = nil
	f.withhold = nil
	f.latency = 0
	f.rate = 0
}

// Apply applies a FaultSpec.
func (f *Faults) Apply(s FaultSpec) error {
	var errs []error
	if s.DPSStatus != 0 {
		if s.DPSStatus < 400 || s.DPSStatus > 599 {
			errs = append(errs, fmt.Errorf("dpsStatus %d: want an HTTP error status such as 429 or 503", s.DPSStatus))
		}
	}
	if s.WithholdDevice == "" && (s.WithholdCount != 0 || s.WithholdFor != 0) {
		errs = append(errs, errors.New("withholdCount/withholdFor need withholdDevice"))
	}
	if s.WithholdDevice != "" && s.WithholdCount <= 0 && s.WithholdFor <= 0 {
		errs = append(errs, errors.New("withholdDevice needs withholdCount > 0 or withholdFor > 0"))
	}
	if math.IsNaN(s.ThrottleD2C) || math.IsInf(s.ThrottleD2C, 0) {
		errs = append(errs, errors.New("throttleD2C must be a finite number of messages per second"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("emulator: bad fault spec: %w", errors.Join(errs...))
	}
	if s.Clear {
		f.Clear()
	}
	if s.RefuseConnections != 0 {
		f.RefuseConnections(time.Duration(s.RefuseConnections))
	}
	if s.DPSStatus != 0 {
		f.DPSStatus(s.DPSStatus, time.Duration(s.DPSRetryAfter), s.DPSCount)
	}
	if s.WithholdDevice != "" {
		if s.WithholdCount > 0 {
			f.WithholdPubacks(s.WithholdDevice, s.WithholdCount)
		}
		if s.WithholdFor > 0 {
			f.WithholdPubacksFor(s.WithholdDevice, time.Duration(s.WithholdFor))
		}
	}
	if s.Latency != 0 {
		f.Latency(time.Duration(s.Latency))
	}
	if s.ThrottleD2C != 0 {
		f.ThrottleD2C(s.ThrottleD2C)
	}
	if s.DropDevice != "" && f.e.started.Load() {
		f.DropDevice(s.DropDevice)
	}
	return nil
}

// State returns the active faults.
func (f *Faults) State() FaultState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := FaultState{DPS: append([]DPSFault(nil), f.dps...), Latency: Duration(f.latency), ThrottleD2C: f.rate, DroppedCount: f.dropped}
	if time.Now().Before(f.refuseUntil) {
		t := f.refuseUntil
		st.RefuseUntil = &t
	}
	for id, w := range f.withhold {
		var parts []string
		if w.count > 0 {
			parts = append(parts, fmt.Sprintf("next %d", w.count))
		}
		if time.Now().Before(w.until) {
			parts = append(parts, "until "+w.until.UTC().Format(time.RFC3339))
		}
		if len(parts) > 0 {
			if st.Withheld == nil {
				st.Withheld = map[string]string{}
			}
			st.Withheld[id] = strings.Join(parts, ", ")
		}
	}
	return st
}

func (f *Faults) refusing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.refuseUntil)
}

// nextDPS consumes one injected DPS answer, if any.
func (f *Faults) nextDPS() (DPSFault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dps) == 0 {
		return DPSFault{}, false
	}
	d := f.dps[0]
	f.dps[0].Remaining--
	if f.dps[0].Remaining <= 0 {
		f.dps = f.dps[1:]
	}
	return d, true
}

// withholdPuback reports whether the PUBACK of this publish of device id is
// to be withheld, consuming one count.
func (f *Faults) withholdPuback(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.withhold[id]
	if w == nil {
		return false
	}
	if time.Now().Before(w.until) {
		return true
	}
	if w.count > 0 {
		w.count--
		return true
	}
	delete(f.withhold, id)
	return false
}

func (f *Faults) delay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latency
}

// reserveD2C takes a token from the D2C bucket and says how long the message
// must wait for it; ok is false when the wait would exceed maxShaping (the
// message is refused and its token not taken).
func (f *Faults) reserveD2C(now time.Time) (wait time.Duration, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rate <= 0 {
		return 0, true
	}
	f.tokens = min(f.rate, f.tokens+now.Sub(f.last).Seconds()*f.rate)
	f.last = now
	if f.tokens >= 1 {
		f.tokens--
		return 0, true
	}
	wait = time.Duration((1 - f.tokens) / f.rate * float64(time.Second))
	if wait > maxShaping {
		return wait, false
	}
	f.tokens--
	return wait, true
}
