package service

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Sentinel errors of the lifecycle operations.
var (
	// ErrCertMismatch means a device certificate does not belong to the
	// device it was given for (its CN is another registration ID).
	ErrCertMismatch = errors.New("service: certificate is not the device's")
	// ErrDeviceRefused means the device answered a deprovision request with
	// an error status; nothing was changed in DPS or the hub.
	ErrDeviceRefused = errors.New("service: device refused to deprovision")
	// ErrIncomplete means a group deprovisioning left some devices behind;
	// running it again finishes the job.
	ErrIncomplete = errors.New("service: deprovisioning incomplete")
)

// Outcomes of one step of a lifecycle operation.
const (
	OutcomeDeleted  = "deleted"
	OutcomeDisabled = "disabled"
	OutcomeAbsent   = "absent"  // there was nothing to delete
	OutcomeSkipped  = "skipped" // left alone on purpose (another hub)
	OutcomeFailed   = "failed"
)

// Names in the device-side deprovisioning contract: the direct method, its
// C2D fallback's application property and body.
const (
	DeprovisionMethod  = "deprovision"
	DeprovisionCommand = "deprovision"
)

// Fleet runs the operator's lifecycle operations, which span DPS and the
// IoT hub: disenrolling, deregistering and deprovisioning devices and
// groups. Both clients are required.
type Fleet struct {
	DPS *DPSClient
	Hub *HubClient
}

// Disenroll blocks the device whose leaf certificate is leaf from
// provisioning again, the way DPS documents it for one device of a group:
// a disabled individual enrollment with the device's certificate, keyed by
// the certificate's CN (the registration ID). An existing individual
// enrollment of the device is disabled in place. Deleting the enrollment
// later ([Fleet.Reenroll]) re-admits the device through its group.
func (f *Fleet) Disenroll(ctx context.Context, leaf *x509.Certificate) (*IndividualEnrollment, error) {
	id := leaf.Subject.CommonName
	if id == "" {
		return nil, fmt.Errorf("%w: the certificate has no subject CN", ErrCertMismatch)
	}
	existing, err := f.DPS.GetEnrollment(ctx, id)
	switch {
	case IsNotFound(err):
		return f.DPS.PutEnrollment(ctx, &IndividualEnrollment{
			RegistrationID:     id,
			Attestation:        X509DeviceAttestation(leaf),
			ProvisioningStatus: StatusDisabled,
		})
	case err != nil:
		return nil, err
	case existing.ProvisioningStatus == StatusDisabled:
		return existing, nil
	}
	existing.ProvisioningStatus = StatusDisabled
	existing.RegistrationState = nil
	return f.DPS.PutEnrollment(ctx, existing)
}

// Reenroll deletes the individual enrollment of registrationID, so the
// device provisions through its group again. It reports false when there
// was no individual enrollment.
func (f *Fleet) Reenroll(ctx context.Context, registrationID string) (bool, error) {
	err := f.DPS.DeleteEnrollment(ctx, registrationID, "")
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// DeregisterReport says what [Fleet.Deregister] did.
type DeregisterReport struct {
	// HubDevice is OutcomeDeleted, OutcomeDisabled or OutcomeAbsent.
	HubDevice string `json:"hubDevice"`
	// Registration is OutcomeDeleted or OutcomeAbsent.
	Registration string `json:"registration"`
}

// Deregister removes device id's hub identity (or disables it, keeping its
// twin, when disable is set) and deletes its DPS registration record, so
// that the device can neither connect nor reuse a cached assignment.
// Absent objects are not errors, so it can be run again after a failure.
func (f *Fleet) Deregister(ctx context.Context, id string, disable bool) (DeregisterReport, error) {
	var rep DeregisterReport
	reg, err := f.DPS.GetRegistration(ctx, id)
	switch {
	case IsNotFound(err):
		reg = nil
	case err != nil:
		return rep, err
	}
	deviceID := id
	if reg != nil && reg.DeviceID != "" {
		deviceID = reg.DeviceID
	}
	if rep.HubDevice, err = f.removeHubDevice(ctx, deviceID, disable); err != nil {
		return rep, err
	}
	rep.Registration = OutcomeAbsent
	if reg != nil {
		err := f.DPS.DeleteRegistration(ctx, id, "")
		switch {
		case err == nil:
			rep.Registration = OutcomeDeleted
		case !IsNotFound(err):
			return rep, err
		}
	}
	return rep, nil
}

// removeHubDevice deletes or disables a hub device and returns the outcome.
func (f *Fleet) removeHubDevice(ctx context.Context, deviceID string, disable bool) (string, error) {
	if !disable {
		err := f.Hub.DeleteDevice(ctx, deviceID, "")
		switch {
		case err == nil:
			return OutcomeDeleted, nil
		case IsNotFound(err):
			return OutcomeAbsent, nil
		}
		return OutcomeFailed, err
	}
	for attempt := 0; ; attempt++ {
		d, err := f.Hub.GetDevice(ctx, deviceID)
		if IsNotFound(err) {
			return OutcomeAbsent, nil
		}
		if err != nil {
			return OutcomeFailed, err
		}
		if d.Status == DeviceDisabled {
			return OutcomeDisabled, nil
		}
		d.Status = DeviceDisabled
		d.StatusReason = "deprovisioned"
		_, err = f.Hub.PutDevice(ctx, d)
		if err == nil {
			return OutcomeDisabled, nil
		}
		// Another writer changed the device between read and write: read
		// it again, a few times.
		if !IsPreconditionFailed(err) || attempt >= 3 {
			return OutcomeFailed, err
		}
	}
}

// DeprovisionAnswer is a device's answer to the deprovision direct method.
type DeprovisionAnswer struct {
	Sealed     bool   `json:"sealed"`
	ShipmentID string `json:"shipmentId,omitempty"`
	Unsent     int    `json:"unsent"`
	Drained    bool   `json:"drained"`
}

// DeviceDeprovisionOptions configures [Fleet.DeprovisionDevice].
type DeviceDeprovisionOptions struct {
	// DrainTimeout is how long the device may take to flush its buffer
	// before it seals the shipment anyway (default 2 minutes).
	DrainTimeout time.Duration
	// OfflineWait is how long to wait, after queueing the C2D request to
	// an offline device, for it to connect and answer; zero does not wait.
	OfflineWait time.Duration
	// PollInterval is how often the device's connection state is checked
	// while waiting (default: a tenth of OfflineWait, between 100 ms and
	// 2 s).
	PollInterval time.Duration
	// Disable disables the hub identity instead of deleting it.
	Disable bool
	// Progress, if set, is told about each step as it starts.
	Progress func(step string)
}

// DeviceReport says what [Fleet.DeprovisionDevice] did.
type DeviceReport struct {
	DeviceID string `json:"deviceId"`
	// HubIdentity is false when the hub had no device to ask.
	HubIdentity bool `json:"hubIdentity"`
	// HubDisabled is true when the hub identity was already disabled, so
	// the device could not connect to be asked.
	HubDisabled bool `json:"hubDisabled,omitempty"`
	// Answer is the device's answer; nil when it did not answer.
	Answer *DeprovisionAnswer `json:"answer,omitempty"`
	// SentC2D is true when the request went by cloud-to-device message
	// because the device was offline.
	SentC2D bool `json:"sentC2D"`
	// C2DError says why the cloud-to-device request could not be queued
	// (Azure IoT Hub takes them over AMQP only); deprovisioning goes on.
	C2DError string `json:"c2dError,omitempty"`
	// UnsentEstimate is, for a device that did not answer, the buffer
	// depth it last reported in its twin, or -1 when unknown.
	UnsentEstimate int `json:"unsentEstimate"`
	// Enrollment is the disabled individual enrollment now blocking the
	// device.
	Enrollment string `json:"enrollment"`
	// Deregister says what happened to the hub identity and the
	// registration record.
	Deregister DeregisterReport `json:"deregister"`
}

// DeprovisionDevice is the delivery step for one tracker: it asks the
// device (direct method "deprovision" with {"drainTimeoutSeconds":N}, or a
// C2D message with property command=deprovision when it is offline) to
// flush its buffer and seal the shipment, waits for the answer, then
// disenrolls it (a disabled individual enrollment with leaf, which must be
// the device's certificate) and deregisters it. A device that answers with
// an error status stops the operation before anything is changed
// ([ErrDeviceRefused]).
func (f *Fleet) DeprovisionDevice(ctx context.Context, id string, leaf *x509.Certificate, opts DeviceDeprovisionOptions) (*DeviceReport, error) {
	if leaf == nil || !strings.EqualFold(leaf.Subject.CommonName, id) {
		cn := ""
		if leaf != nil {
			cn = leaf.Subject.CommonName
		}
		return nil, fmt.Errorf("%w: device %s, certificate CN %q", ErrCertMismatch, id, cn)
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 2 * time.Minute
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	rep := &DeviceReport{DeviceID: id, UnsentEstimate: -1}
	deviceID := id
	if reg, err := f.DPS.GetRegistration(ctx, id); err == nil && reg.DeviceID != "" {
		deviceID = reg.DeviceID
	} else if err != nil && !IsNotFound(err) {
		return nil, err
	}
	dev, err := f.Hub.GetDevice(ctx, deviceID)
	switch {
	case IsNotFound(err):
	case err != nil:
		return nil, err
	case dev.Status == DeviceDisabled:
		rep.HubIdentity, rep.HubDisabled = true, true
		if twin, err := f.Hub.GetTwin(ctx, dev.DeviceID); err == nil {
			if n, ok := ReportedUnsent(twin.Properties.Reported); ok {
				rep.UnsentEstimate = n
			}
		}
	default:
		rep.HubIdentity = true
		progress("asking the device to flush its buffer and seal the shipment")
		if err := f.askDevice(ctx, dev, opts, rep, progress); err != nil {
			return rep, err
		}
	}
	progress("disenrolling in DPS")
	enr, err := f.Disenroll(ctx, leaf)
	if err != nil {
		return rep, fmt.Errorf("service: disenroll %s: %w", id, err)
	}
	rep.Enrollment = enr.ProvisioningStatus
	progress("deregistering")
	if rep.Deregister, err = f.Deregister(ctx, id, opts.Disable); err != nil {
		return rep, fmt.Errorf("service: deregister %s: %w", id, err)
	}
	return rep, nil
}

// askDevice invokes the deprovision method, falling back to C2D and an
// optional wait for the device to come online.
func (f *Fleet) askDevice(ctx context.Context, dev *Device, opts DeviceDeprovisionOptions, rep *DeviceReport, progress func(string)) error {
	answered, err := f.invokeDeprovision(ctx, dev.DeviceID, opts.DrainTimeout, rep)
	if answered || err != nil {
		return err
	}
	// No answer: the device is offline, or did not answer in time.
	body, _ := json.Marshal(map[string]string{"command": DeprovisionCommand})
	if err := f.Hub.SendC2D(ctx, dev.DeviceID, body, map[string]string{"command": DeprovisionCommand}); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("service: send deprovision to %s by C2D: %w", dev.DeviceID, err)
		}
		rep.C2DError = err.Error()
	} else {
		rep.SentC2D = true
	}
	if twin, err := f.Hub.GetTwin(ctx, dev.DeviceID); err == nil {
		if n, ok := ReportedUnsent(twin.Properties.Reported); ok {
			rep.UnsentEstimate = n
		}
	}
	if opts.OfflineWait <= 0 || !rep.SentC2D {
		return nil
	}
	progress(fmt.Sprintf("device offline; waiting up to %v for it to connect", opts.OfflineWait))
	poll := opts.PollInterval
	if poll <= 0 {
		poll = min(max(opts.OfflineWait/10, 100*time.Millisecond), 2*time.Second)
	}
	deadline := time.NewTimer(opts.OfflineWait)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	announced := false
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("service: waiting for %s to connect: %w", dev.DeviceID, ctx.Err())
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
		d, err := f.Hub.GetDevice(ctx, dev.DeviceID)
		if err != nil {
			return err
		}
		if d.ConnectionState != DeviceConnected {
			continue
		}
		if !announced {
			progress("device connected; asking it again")
			announced = true
		}
		// A device that just connected may not have subscribed to direct
		// methods yet: keep asking until it answers or the wait ends.
		answered, err := f.invokeDeprovision(ctx, dev.DeviceID, opts.DrainTimeout, rep)
		if answered || err != nil {
			return err
		}
	}
}

// invokeDeprovision calls the method; answered is false when the device
// is offline or did not answer in time.
func (f *Fleet) invokeDeprovision(ctx context.Context, deviceID string, drain time.Duration, rep *DeviceReport) (answered bool, err error) {
	payload := map[string]int{"drainTimeoutSeconds": int((drain + time.Second - 1) / time.Second)}
	status, resp, err := f.Hub.InvokeMethod(ctx, deviceID, DeprovisionMethod, payload, drain+15*time.Second)
	switch {
	case IsNotFound(err) || errors.Is(err, ErrTimeout):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("service: invoke %s on %s: %w", DeprovisionMethod, deviceID, err)
	case status < 200 || status > 299:
		return false, fmt.Errorf("%w: %s answered status %d: %s; nothing was changed", ErrDeviceRefused, deviceID, status, strings.TrimSpace(string(resp)))
	}
	var ans DeprovisionAnswer
	if err := json.Unmarshal(resp, &ans); err != nil {
		return false, fmt.Errorf("%w: %s answered status %d with %q, not the deprovision answer; nothing was changed", ErrDeviceRefused, deviceID, status, string(resp))
	}
	rep.Answer = &ans
	return true, nil
}

// ReportedUnsent looks for the device's last reported buffer depth in its
// twin's reported properties ("unsent", "buffer.unsent" or
// "buffer.depth").
func ReportedUnsent(reported map[string]any) (int, bool) {
	num := func(v any) (int, bool) {
		if f, ok := v.(float64); ok && f >= 0 {
			return int(f), true
		}
		return 0, false
	}
	if n, ok := num(reported["unsent"]); ok {
		return n, true
	}
	if b, ok := reported["buffer"].(map[string]any); ok {
		for _, k := range []string{"unsent", "depth"} {
			if n, ok := num(b[k]); ok {
				return n, true
			}
		}
	}
	return 0, false
}

// GroupDeprovisionOptions configures [Fleet.DeprovisionGroup].
type GroupDeprovisionOptions struct {
	// Parallel is how many devices are removed at once (default 8).
	Parallel int
	// Progress, if set, is called after each device (from the calling
	// goroutine's helpers, one call at a time).
	Progress func(GroupProgress)
}

// GroupProgress reports one device of a group deprovisioning.
type GroupProgress struct {
	Done, Total    int
	RegistrationID string
	Err            error
}

// DeviceFailure is a device a group deprovisioning could not remove.
type DeviceFailure struct {
	RegistrationID string `json:"registrationId"`
	Error          string `json:"error"`
}

// GroupReport says what [Fleet.DeprovisionGroup] did.
type GroupReport struct {
	GroupID string `json:"groupId"`
	// Group is OutcomeDeleted, OutcomeAbsent (already gone) or
	// OutcomeFailed (left disabled because devices remain).
	Group         string `json:"group"`
	Registrations int    `json:"registrations"`
	// RegistrationsDeleted counts records deleted by this run.
	RegistrationsDeleted int `json:"registrationsDeleted"`
	// DevicesDeleted and DevicesAbsent count hub devices deleted and
	// already gone.
	DevicesDeleted int `json:"devicesDeleted"`
	DevicesAbsent  int `json:"devicesAbsent"`
	// OtherHub lists devices assigned to a hub other than this client's,
	// whose hub identity was left alone.
	OtherHub []string        `json:"otherHub,omitempty"`
	Failed   []DeviceFailure `json:"failed,omitempty"`
}

// DeprovisionGroup removes a whole enrollment group: it disables the group
// (so no device registers meanwhile), deletes the hub identity and the
// registration record of every device that provisioned through it, and
// deletes the group once nothing is left. Missing objects count as done,
// so after a partial failure (an error wrapping [ErrIncomplete], the group
// left disabled) running it again finishes the job.
func (f *Fleet) DeprovisionGroup(ctx context.Context, groupID string, opts GroupDeprovisionOptions) (*GroupReport, error) {
	rep := &GroupReport{GroupID: groupID}
	g, err := f.DPS.GetGroup(ctx, groupID)
	switch {
	case IsNotFound(err):
		g = nil
	case err != nil:
		return rep, err
	}
	if g != nil && g.ProvisioningStatus != StatusDisabled {
		if err := f.disableGroup(ctx, g); err != nil {
			return rep, fmt.Errorf("service: disable group %s: %w", groupID, err)
		}
	}
	regs, err := f.DPS.ListRegistrations(ctx, groupID)
	if err != nil && !IsNotFound(err) {
		return rep, err
	}
	rep.Registrations = len(regs)
	var (
		mu   sync.Mutex
		done int
	)
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	eg, egctx := errgroup.WithContext(ctx)
	eg.SetLimit(parallel)
	for _, reg := range regs {
		if egctx.Err() != nil {
			break
		}
		eg.Go(func() error {
			hubOutcome, regDeleted, err := f.removeRegistered(egctx, reg)
			mu.Lock()
			defer mu.Unlock()
			done++
			switch hubOutcome {
			case OutcomeDeleted:
				rep.DevicesDeleted++
			case OutcomeAbsent:
				rep.DevicesAbsent++
			case OutcomeSkipped:
				rep.OtherHub = append(rep.OtherHub, reg.RegistrationID)
			}
			if regDeleted {
				rep.RegistrationsDeleted++
			}
			if err != nil {
				rep.Failed = append(rep.Failed, DeviceFailure{RegistrationID: reg.RegistrationID, Error: err.Error()})
			}
			if opts.Progress != nil {
				opts.Progress(GroupProgress{Done: done, Total: len(regs), RegistrationID: reg.RegistrationID, Err: err})
			}
			// One device's failure does not stop the others; only a
			// cancelled context does.
			return nil
		})
	}
	_ = eg.Wait()
	if err := ctx.Err(); err != nil {
		rep.Group = OutcomeFailed
		return rep, fmt.Errorf("%w: group %s: %d of %d devices done: %w", ErrIncomplete, groupID, done, len(regs), err)
	}
	if len(rep.Failed) > 0 {
		rep.Group = OutcomeFailed
		return rep, fmt.Errorf("%w: group %s: %d of %d devices failed (first: %s: %s); the group is left disabled, run again to finish",
			ErrIncomplete, groupID, len(rep.Failed), len(regs), rep.Failed[0].RegistrationID, rep.Failed[0].Error)
	}
	if g == nil {
		rep.Group = OutcomeAbsent
		return rep, nil
	}
	err = f.DPS.DeleteGroup(ctx, groupID, "")
	switch {
	case err == nil:
		rep.Group = OutcomeDeleted
	case IsNotFound(err):
		rep.Group = OutcomeAbsent
	default:
		rep.Group = OutcomeFailed
		return rep, fmt.Errorf("service: delete group %s: %w", groupID, err)
	}
	return rep, nil
}

// disableGroup sets a group's provisioning status to disabled, re-reading
// it when another writer got there first.
func (f *Fleet) disableGroup(ctx context.Context, g *EnrollmentGroup) error {
	for attempt := 0; ; attempt++ {
		g.ProvisioningStatus = StatusDisabled
		_, err := f.DPS.PutGroup(ctx, g)
		if err == nil || !IsPreconditionFailed(err) || attempt >= 3 {
			return err
		}
		if g, err = f.DPS.GetGroup(ctx, g.EnrollmentGroupID); err != nil {
			return err
		}
	}
}

// removeRegistered deletes the hub device of reg (when it is on this
// client's hub), then its registration record. The order makes a rerun
// find the record again if the hub step failed.
func (f *Fleet) removeRegistered(ctx context.Context, reg RegistrationState) (hubOutcome string, regDeleted bool, err error) {
	deviceID := reg.DeviceID
	if deviceID == "" {
		deviceID = reg.RegistrationID
	}
	switch {
	case reg.AssignedHub != "" && !SameHost(reg.AssignedHub, f.Hub.HostName()):
		hubOutcome = OutcomeSkipped
	default:
		if hubOutcome, err = f.removeHubDevice(ctx, deviceID, false); err != nil {
			return hubOutcome, false, err
		}
	}
	err = f.DPS.DeleteRegistration(ctx, reg.RegistrationID, "")
	switch {
	case err == nil:
		return hubOutcome, true, nil
	case IsNotFound(err):
		return hubOutcome, false, nil
	}
	return hubOutcome, false, err
}

// SameHost reports whether two host names ("hub1.azure-devices.net",
// "localhost:8883") name the same host, ignoring case and ports.
func SameHost(a, b string) bool {
	strip := func(h string) string {
		if host, _, err := net.SplitHostPort(h); err == nil {
			return host
		}
		return h
	}
	return strings.EqualFold(strip(a), strip(b))
}
