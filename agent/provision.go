package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/provisioning/dps"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/telemetry/hub"
)

// Provisioning states shown in the status.
const (
	stateUnprovisioned = "unprovisioned"
	stateRegistering   = "registering"
	stateAssigned      = "assigned"
	stateDisabled      = "disabled"
	stateRejected      = "rejected"
	stateBackoff       = "backoff"
	stateDeprovisioned = "deprovisioned"
)

// errReprovision ends a hub session because a reprovision was requested.
var errReprovision = errors.New("reprovision requested")

// errDeprovisioned ends a hub session after the device was deprovisioned.
var errDeprovisioned = errors.New("device deprovisioned")

// provisionLoop owns the device's cloud identity: it uses the cached DPS
// assignment, registers with DPS when there is none, and runs the hub
// connection; it goes back to DPS only when the hub refuses the identity or
// a reprovision is requested. Failures back off exponentially with full
// jitter, seeded per device, so a fleet never retries in lockstep.
func (a *Agent) provisionLoop(ctx context.Context, beat func()) error {
	log := a.log.With("component", "provisioner")
	h := fnv.New64a()
	h.Write([]byte(a.id.RegistrationID))
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(time.Now().UnixNano())))
	failures := 0
	backoff := func(floor time.Duration) time.Duration {
		ceil := a.cfg.DPS.RetryMin.D() << min(failures, 20)
		if ceil > a.cfg.DPS.RetryMax.D() || ceil <= 0 {
			ceil = a.cfg.DPS.RetryMax.D()
		}
		d := time.Duration(rng.Int64N(int64(ceil) + 1)) // full jitter
		return max(d, floor, a.cfg.DPS.RetryMin.D()/2)
	}
	// A DPS out of reach for days must not fill the journal on flash: the
	// first failure of a kind is logged (and listed in the status), repeats
	// at most hourly with a count; the rest only at debug level.
	var failLog rateLimiter
	var failState string
	var initialWait time.Duration
	for ctx.Err() == nil {
		beat()
		if initialWait > 0 {
			if !a.wait(ctx, initialWait, beat) {
				return nil
			}
			initialWait = 0
		}
		asg, err := a.store.Assignment()
		if err != nil {
			if !errors.Is(err, identity.ErrNotProvisioned) {
				log.Warn("cached assignment unusable; registering again", "err", err)
				a.warn("cached assignment unusable: " + err.Error())
			}
			a.setProv(stateRegistering, "", time.Time{}, nil)
			asg, err = a.register(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				failures++
				state, wait, msg := a.classify(err, backoff)
				if state != failState {
					failLog, failState = rateLimiter{}, state
				}
				if n, ok := failLog.allow(a.clock.Mono()); ok {
					log.Warn("provisioning failed", "state", state, "err", msg, "failures", failures, "suppressed", n, "retry_in", wait.Round(time.Second))
					a.warn("provisioning: " + msg)
				} else {
					log.Debug("provisioning failed", "state", state, "err", msg, "failures", failures, "retry_in", wait.Round(time.Second))
				}
				next, _ := a.clock.Now()
				a.setProv(state, msg, next.Add(wait), nil)
				if !a.wait(ctx, wait, beat) {
					return nil
				}
				continue
			}
			failures = 0
			failLog, failState = rateLimiter{}, ""
			log.Info("provisioned", "hub", asg.AssignedHub, "device_id", asg.DeviceID, "substatus", asg.Substatus)
		} else {
			log.Info("using the cached assignment", "hub", asg.AssignedHub, "device_id", asg.DeviceID)
		}
		a.setProv(stateAssigned, "", time.Time{}, asg)
		err = a.runHub(ctx, asg, beat)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, hub.ErrUnauthorized):
			// The hub no longer knows this identity (deleted, disabled or
			// moved): DPS decides what happens next.
			msg := "the hub refused the device identity; registering with DPS again"
			log.Warn(msg, "hub", asg.AssignedHub, "err", err)
			a.warn(msg)
			if err := a.store.ClearAssignment(); err != nil {
				return fmt.Errorf("clear assignment: %w", err)
			}
			failures++
			initialWait = backoff(0)
		case errors.Is(err, errReprovision):
			log.Info("reprovisioning")
		case errors.Is(err, errDeprovisioned):
			// Wait for the next loading: a restart, a local reprovision
			// command, or the DPS retry schedule.
			next, _ := a.clock.Now()
			wait := a.cfg.DPS.DisabledRetry.D()
			a.setProv(stateDeprovisioned, "waiting for the next loading (trackerd reprovision, a restart, or the DPS retry schedule)", next.Add(wait), nil)
			initialWait = wait
		case err != nil:
			log.Error("hub session ended", "err", err)
			failures++
			initialWait = backoff(0)
		}
	}
	return nil
}

// wait pauses for d, feeding the watchdog, and returns early on a
// reprovision request. It returns false when ctx ended.
func (a *Agent) wait(ctx context.Context, d time.Duration, beat func()) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.reprovision:
			return true
		case <-t.C:
			return true
		case <-tick.C:
			beat()
		}
	}
}

func (a *Agent) setProv(state, lastErr string, next time.Time, asg *identity.Assignment) {
	a.mu.Lock()
	a.prov.state, a.prov.lastErr, a.prov.nextAttempt, a.prov.assignment = state, lastErr, next, asg
	if state == stateRegistering {
		a.prov.attempts++
	}
	attempts := a.prov.attempts
	a.mu.Unlock()
	var line string
	switch {
	case state == stateRegistering:
		line = fmt.Sprintf("registering with DPS (attempt %d)", attempts)
	case state == stateAssigned && asg != nil:
		line = fmt.Sprintf("assigned to %s as %s; connecting", asg.AssignedHub, asg.DeviceID)
	case lastErr != "":
		line = fmt.Sprintf("provisioning %s: %s", state, lastErr)
	default:
		line = "provisioning " + state
	}
	a.showStatus(line)
}

// showStatus sets the line "systemctl status trackerd" shows (STATUS=) while
// every component makes progress; the supervisor shows stalls instead.
// Failures are logged by the supervisor.
func (a *Agent) showStatus(line string) { _ = a.super.SetStatus(line) }

// register runs one DPS registration and caches the assignment.
func (a *Agent) register(ctx context.Context) (*identity.Assignment, error) {
	regID := a.cfg.DPS.RegistrationID
	if regID == "" {
		regID = a.id.RegistrationID
	}
	res, err := dps.Register(ctx, dps.Config{
		Endpoint:       a.cfg.DPS.Endpoint,
		IDScope:        a.cfg.DPS.IDScope,
		RegistrationID: regID,
		Certificate:    a.id.TLSCertificate(),
		RootCAs:        a.roots,
		Payload: map[string]string{
			"firmwareVersion": buildinfo.Version,
			"hardwareModel":   a.cfg.HardwareModel,
		},
		Time:          a.clock.TLSTime,
		Logger:        a.log, // dps names its component itself
		ClientVersion: "trackerd/" + buildinfo.Version,
	})
	if err != nil {
		return nil, err
	}
	now, _ := a.clock.Now()
	asg := &identity.Assignment{
		AssignedHub: res.AssignedHub, DeviceID: res.DeviceID, RegistrationID: regID,
		Substatus: res.Substatus, OperationID: res.OperationID, ETag: res.ETag,
		AssignedAt: now, Result: json.RawMessage(res.RegistrationState),
	}
	if err := a.store.SaveAssignment(asg); err != nil {
		return nil, fmt.Errorf("cache assignment: %w", err)
	}
	return asg, nil
}

// classify turns a registration error into a status, a wait and a message
// that says what to do.
func (a *Agent) classify(err error, backoff func(time.Duration) time.Duration) (string, time.Duration, string) {
	var thr *dps.ThrottledError
	var failed *dps.FailedError
	switch {
	case errors.Is(err, dps.ErrDisabled):
		return stateDisabled, a.cfg.DPS.DisabledRetry.D(),
			"DPS says this device's enrollment is disabled (disenrolled); waiting for an operator to re-enroll it"
	case errors.Is(err, dps.ErrUnauthorized):
		return stateRejected, backoff(time.Minute),
			"DPS refused the device certificate: check that it chains to the enrollment group's CA and is not expired (" + err.Error() + ")"
	case errors.As(err, &thr):
		return stateBackoff, backoff(thr.RetryAfter), err.Error()
	case errors.As(err, &failed):
		return stateBackoff, backoff(time.Minute), err.Error()
	}
	msg := err.Error()
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(msg, "connection refused") {
		msg = "DPS unreachable (" + msg + ")"
	}
	return stateBackoff, backoff(0), msg
}

// runHub runs the IoT Hub connection for asg, with twin and method
// handling, until the hub refuses the identity, a reprovision or
// deprovision ends it, or ctx ends.
func (a *Agent) runHub(ctx context.Context, asg *identity.Assignment, beat func()) error {
	host := asg.AssignedHub
	if !strings.Contains(host, ":") && a.cfg.Hub.Port != 8883 {
		host = net.JoinHostPort(host, fmt.Sprint(a.cfg.Hub.Port))
	}
	client, err := hub.New(hub.Config{
		Host:          host,
		DeviceID:      asg.DeviceID,
		Certificate:   a.id.TLSCertificate(),
		RootCAs:       a.roots,
		Time:          a.clock.TLSTime,
		KeepAlive:     a.cfg.Hub.KeepAlive.D(),
		ReconnectMin:  a.cfg.Hub.ReconnectMin.D(),
		ReconnectMax:  a.cfg.Hub.ReconnectMax.D(),
		MaxInFlight:   a.cfg.Hub.MaxInFlight,
		ClientVersion: "trackerd/" + buildinfo.Version,
		Logger:        a.log.With("component", "hub"),
	})
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c := &control{a: a, client: client, ctx: sctx, end: cancel}
	client.OnDesired(c.onDesired)
	client.OnMethod(c.onMethod)
	client.OnC2D(c.onC2D)

	a.mu.Lock()
	a.client = client
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.client = nil
		a.mu.Unlock()
	}()

	done := make(chan error, 1)
	go func() { done <- client.Run(sctx) }()
	report := time.NewTicker(5 * time.Minute)
	defer report.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	wasConnected := false
	// up is closed when the connection comes up: the publisher is woken
	// at once rather than at the next poll, so the backlog and the live
	// lane resume without waiting up to a second. Re-armed by the poll
	// once the connection is seen down.
	up := client.Connected()
	for {
		select {
		case err := <-done:
			if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
				return cause
			}
			return err
		case <-a.reprovision:
			cancel(errReprovision)
		case <-report.C:
			c.report(sctx)
		case <-up:
			up = nil
			a.pub.Wake()
		case <-poll.C:
			beat()
			st := client.State()
			connected := st.Connected
			if !connected && up == nil {
				up = client.Connected()
			}
			if connected && !wasConnected {
				a.showStatus(fmt.Sprintf("connected to %s as %s", asg.AssignedHub, asg.DeviceID))
				a.pub.Wake()
				c.report(sctx)
			} else if !connected && wasConnected {
				a.showStatus(fmt.Sprintf("connection to %s lost, reconnecting: %s", asg.AssignedHub, st.LastError))
			}
			wasConnected = connected
		}
	}
}
