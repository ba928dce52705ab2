package emulator

import (
	"context"
	"sync"
	"time"
)

// Event kinds recorded by the emulator.
const (
	EventDPSConnect     = "dps.connect"       // a device connected to DPS
	EventDPSRefused     = "dps.refused"       // a DPS CONNECT was refused
	EventDPSRegister    = "dps.register"      // a register request arrived
	EventDPSAssigned    = "dps.assigned"      // a registration was assigned
	EventDPSFailed      = "dps.failed"        // a registration failed (attestation, allocation)
	EventDPSDisabled    = "dps.disabled"      // a registration hit a disabled enrollment
	EventDPSFault       = "dps.fault"         // an injected DPS error answered a request
	EventHubConnect     = "hub.connect"       // a device connected to the hub
	EventHubRefused     = "hub.refused"       // a hub CONNECT was refused
	EventHubDisconnect  = "hub.disconnect"    // a hub connection ended
	EventHubKicked      = "hub.kicked"        // the emulator closed a connection (violation, fault, new connection, registry change)
	EventTwinReported   = "hub.twin.reported" // a device patched its reported properties
	EventTwinDesired    = "hub.twin.desired"  // desired properties changed
	EventMethod         = "hub.method"        // a direct method completed or failed
	EventC2D            = "hub.c2d"           // a cloud-to-device message was delivered
	EventPubackWithheld = "fault.puback"      // a PUBACK was withheld
	EventThrottled      = "fault.throttle"    // a D2C message was delayed or refused by the throttle
	EventRegistry       = "registry"          // a device identity was created, changed or deleted
	EventEnrollment     = "enrollment"        // an enrollment was created, changed or deleted
)

// Event is one thing that happened in the emulator, for tests and demos.
type Event struct {
	// Seq numbers events from 1 in the order they were recorded.
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	DeviceID string    `json:"deviceId,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

// Events returns the recorded events (the most recent TelemetryMemory ones),
// oldest first.
func (e *Emulator) Events() []Event { return e.events.snapshot() }

// WaitEvent returns the first recorded event, past or future, for which match
// returns true, or ctx's error. match runs under a lock: it must not call the
// emulator.
func (e *Emulator) WaitEvent(ctx context.Context, match func(Event) bool) (Event, error) {
	return e.events.wait(ctx, match)
}

func (e *Emulator) event(kind, device, detail string) {
	e.events.add(func(seq int64) Event {
		return Event{Seq: seq, Time: time.Now().UTC(), Kind: kind, DeviceID: device, Detail: detail}
	})
	e.log.Debug("event", "kind", kind, "device_id", device, "detail", detail)
}

// feed is a bounded in-memory log with waiters: the emulator's event log
// and its telemetry memory.
type feed[T any] struct {
	mu      sync.Mutex
	max     int
	items   []T
	seq     int64
	waiters map[*feedWaiter[T]]struct{}
}

type feedWaiter[T any] struct {
	match func(T) bool
	ch    chan T
}

func newFeed[T any](max int) *feed[T] {
	return &feed[T]{max: max, waiters: map[*feedWaiter[T]]struct{}{}}
}

// add appends the item built by mk (which gets the item's sequence number)
// and wakes the waiters it matches.
func (f *feed[T]) add(mk func(seq int64) T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	it := mk(f.seq)
	if len(f.items) >= f.max {
		// Drop the oldest tenth at once so appends stay amortised O(1).
		n := copy(f.items, f.items[f.max/10+1:])
		clear(f.items[n:])
		f.items = f.items[:n]
	}
	f.items = append(f.items, it)
	for w := range f.waiters {
		if w.match(it) {
			w.ch <- it
			delete(f.waiters, w)
		}
	}
	return it
}

func (f *feed[T]) snapshot() []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]T(nil), f.items...)
}

func (f *feed[T]) wait(ctx context.Context, match func(T) bool) (T, error) {
	f.mu.Lock()
	for _, it := range f.items {
		if match(it) {
			f.mu.Unlock()
			return it, nil
		}
	}
	w := &feedWaiter[T]{match: match, ch: make(chan T, 1)}
	f.waiters[w] = struct{}{}
	f.mu.Unlock()
	select {
	case it := <-w.ch:
		return it, nil
	case <-ctx.Done():
		f.mu.Lock()
		delete(f.waiters, w)
		f.mu.Unlock()
		// The item may have arrived between ctx and the lock.
		select {
		case it := <-w.ch:
			return it, nil
		default:
		}
		var zero T
		return zero, ctx.Err()
	}
}
