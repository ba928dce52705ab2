package emulator

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coldchain/tracker/provisioning/pki"
)

// The console's operator actions, the same as trackerctl's: invoke the
// flush method, disenroll (a disabled individual enrollment with the
// device's certificate) and deprovision (ask the device to drain and seal,
// then disenroll, delete the hub identity and the registration record).
// They work on the emulator's own state; they do not go through the
// service REST clients.

// Names of the device-side contract the actions use (trackerd answers
// them).
const (
	consoleFlushMethod       = "flush"
	consoleDeprovisionMethod = "deprovision"
	// consoleDefaultDrain is the deprovision drain timeout when the
	// request names none; consoleMaxDrain caps it.
	consoleDefaultDrain = 30 * time.Second
	consoleMaxDrain     = 5 * time.Minute
)

// Outcomes of the deprovisioning steps, as trackerctl reports them.
const (
	consoleDeleted = "deleted"
	consoleAbsent  = "absent"
)

// ConsoleDisenrollResult says what a disenroll did.
type ConsoleDisenrollResult struct {
	RegistrationID string `json:"registrationId"`
	// Enrollment is the individual enrollment's status now ("disabled").
	Enrollment string `json:"enrollment"`
	// Changed is false when a disabled enrollment already blocked the
	// device.
	Changed bool `json:"changed"`
	// Created is true when a new individual enrollment was made from the
	// device's certificate.
	Created bool `json:"created"`
	// Thumbprint is the SHA-256 thumbprint of the certificate it blocks.
	Thumbprint string `json:"thumbprint,omitempty"`
}

// ConsoleDeprovisionResult says what a deprovision did.
type ConsoleDeprovisionResult struct {
	DeviceID       string `json:"deviceId"`
	RegistrationID string `json:"registrationId"`
	// HubIdentity is false when the hub had no device to ask;
	// HubDisabled when it had one that could not connect.
	HubIdentity bool `json:"hubIdentity"`
	HubDisabled bool `json:"hubDisabled,omitempty"`
	// Answered is true when the device answered the deprovision method;
	// Answer is its payload.
	Answered bool            `json:"answered"`
	Answer   json.RawMessage `json:"answer,omitempty"`
	// SentC2D is true when the request was queued as a cloud-to-device
	// message because the device did not answer; C2DError says why it
	// could not be.
	SentC2D  bool   `json:"sentC2D"`
	C2DError string `json:"c2dError,omitempty"`
	// Disenroll, HubDevice and Registration say what happened to the
	// enrollment, the hub identity (deleted or absent) and the
	// registration record (deleted or absent).
	Disenroll    ConsoleDisenrollResult `json:"disenroll"`
	HubDevice    string                 `json:"hubDevice"`
	Registration string                 `json:"registration"`
}

// consoleIDs maps a device ID to its registration ID (they differ only when
// DPS assigned another device ID) through the registration records.
func (e *Emulator) consoleIDs(deviceID string) (regID string, err error) {
	regID = deviceID
	err = e.store.view(func(tx *bolt.Tx) error {
		if _, ok, err := getJSON[registration](tx, bucketRegistrations, strings.ToLower(deviceID)); err != nil || ok {
			return err
		}
		return forEachJSON(tx, bucketRegistrations, func(_ string, r registration) error {
			if r.State.DeviceID == deviceID {
				regID = r.State.RegistrationID
			}
			return nil
		})
	})
	return regID, err
}

// consoleLeaf finds the certificate device regID connects with: from a
// live connection first, else from the certificates the console stored.
func (e *Emulator) consoleLeaf(regID, deviceID string) (*x509.Certificate, error) {
	e.mu.Lock()
	var live *x509.Certificate
	if s := e.hub[deviceID]; s != nil && len(s.chain) > 0 {
		live = s.chain[0]
	}
	for _, s := range e.sessions {
		if live == nil && s.kind == kindDPS && strings.EqualFold(s.id, regID) && len(s.chain) > 0 {
			live = s.chain[0]
		}
	}
	e.mu.Unlock()
	if live != nil {
		return live, nil
	}
	var der []byte
	err := e.store.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucketConsoleLeaves)); b != nil {
			if v := b.Get([]byte(strings.ToLower(regID))); v != nil {
				der = append([]byte(nil), v...)
			}
		}
		return nil
	})
	if err != nil || der == nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("emulator: stored certificate of %s: %w", regID, err)
	}
	return c, nil
}

// ConsoleDisenroll blocks device deviceID from provisioning again, as
// trackerctl device disenroll does: an existing individual enrollment is
// disabled in place; otherwise a disabled individual enrollment is created
// with the certificate the device connects with.
func (e *Emulator) ConsoleDisenroll(deviceID string) (ConsoleDisenrollResult, error) {
	regID, err := e.consoleIDs(deviceID)
	if err != nil {
		return ConsoleDisenrollResult{}, fmt.Errorf("emulator: disenroll %s: %w", deviceID, err)
	}
	leaf, err := e.consoleLeaf(regID, deviceID)
	if err != nil {
		return ConsoleDisenrollResult{}, fmt.Errorf("emulator: disenroll %s: %w", deviceID, err)
	}
	res, aerr := e.consoleDisenroll(regID, leaf)
	if aerr != nil {
		return res, aerr
	}
	return res, nil
}

func (e *Emulator) consoleDisenroll(regID string, leaf *x509.Certificate) (ConsoleDisenrollResult, *APIError) {
	res := ConsoleDisenrollResult{RegistrationID: regID}
	existing, aerr := e.getEnrollment(regID)
	switch {
	case aerr == nil && existing.ProvisioningStatus == StatusDisabled:
		res.Enrollment = existing.ProvisioningStatus
		return res, nil
	case aerr == nil:
		existing.ProvisioningStatus = StatusDisabled
		existing.RegistrationState = nil
		// The stored attestation is kept: a body without certificates
		// does not replace it.
		out, aerr := e.putEnrollment(regID, existing, "")
		if aerr != nil {
			return res, aerr
		}
		res.Enrollment, res.Changed = out.ProvisioningStatus, true
		return res, nil
	case aerr.Status != http.StatusNotFound:
		return res, aerr
	}
	if leaf == nil {
		return res, &APIError{Status: http.StatusConflict, Code: 409000, HubCode: "PreconditionFailed", Message: fmt.Sprintf(
			"%s has no individual enrollment and the emulator has not seen its certificate on a connection; "+
				"let the device connect once, or run 'trackerctl device disenroll' with its certificate", regID)}
	}
	if !strings.EqualFold(leaf.Subject.CommonName, regID) {
		return res, badRequest(400004, "the certificate %s connects with has CN %q, not the registration ID %q", regID, leaf.Subject.CommonName, regID)
	}
	ie := IndividualEnrollment{
		RegistrationID: leaf.Subject.CommonName,
		Attestation: AttestationMechanism{Type: "x509", X509: &X509Attestation{
			ClientCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: string(pki.EncodePEM(leaf))}},
		}},
		ProvisioningStatus: StatusDisabled,
	}
	out, aerr := e.putEnrollment(ie.RegistrationID, ie, "")
	if aerr != nil {
		return res, aerr
	}
	_, res.Thumbprint = thumbprints(leaf)
	res.Enrollment, res.Changed, res.Created = out.ProvisioningStatus, true, true
	return res, nil
}

// ConsoleDeprovision runs the delivery step for one tracker, as
// trackerctl device deprovision does: it asks the device (direct method
// "deprovision" with {"drainTimeoutSeconds": N}, or a C2D message with
// property command=deprovision when it does not answer) to drain its buffer
// and seal the shipment, then disenrolls it, deletes its hub identity and
// its registration record. A device that answers with an error status
// stops it before anything is changed.
func (e *Emulator) ConsoleDeprovision(ctx context.Context, deviceID string, drain time.Duration) (ConsoleDeprovisionResult, error) {
	res, aerr := e.consoleDeprovision(ctx, deviceID, drain)
	if aerr != nil {
		return res, aerr
	}
	return res, nil
}

func (e *Emulator) consoleDeprovision(ctx context.Context, deviceID string, drain time.Duration) (ConsoleDeprovisionResult, *APIError) {
	res := ConsoleDeprovisionResult{DeviceID: deviceID}
	if drain <= 0 {
		drain = consoleDefaultDrain
	}
	regID, err := e.consoleIDs(deviceID)
	if err != nil {
		return res, internalError(err)
	}
	res.RegistrationID = regID
	// The certificate goes with the connection: take it before the device
	// is asked (it may disconnect once sealed) and before its identity is
	// deleted. Without it and without an enrollment nothing can block the
	// device, so nothing is started.
	leaf, err := e.consoleLeaf(regID, deviceID)
	if err != nil {
		return res, internalError(err)
	}
	if leaf == nil {
		if _, aerr := e.getEnrollment(regID); aerr != nil && aerr.Status == http.StatusNotFound {
			_, aerr := e.consoleDisenroll(regID, nil)
			return res, aerr
		}
	}
	dev, aerr := e.getDevice(deviceID)
	switch {
	case aerr != nil && aerr.Status == http.StatusNotFound:
	case aerr != nil:
		return res, aerr
	case dev.Status == StatusDisabled:
		res.HubIdentity, res.HubDisabled = true, true
	default:
		res.HubIdentity = true
		payload, _ := json.Marshal(map[string]int{"drainTimeoutSeconds": int((drain + time.Second - 1) / time.Second)})
		mr, aerr := e.invokeMethod(ctx, deviceID, consoleDeprovisionMethod, payload, drain+15*time.Second, 0)
		switch {
		case aerr == nil && (mr.Status < 200 || mr.Status > 299):
			return res, &APIError{Status: http.StatusConflict, Code: 409000, HubCode: "DeviceRefused",
				Message: fmt.Sprintf("%s answered deprovision with status %d: %s; nothing was changed", deviceID, mr.Status, strings.TrimSpace(string(mr.Payload)))}
		case aerr == nil:
			res.Answered, res.Answer = true, mr.Payload
		case aerr.HubCode == "DeviceNotOnline" || aerr.HubCode == "GatewayTimeout":
			if ctx.Err() != nil {
				return res, aerr
			}
			body, _ := json.Marshal(map[string]string{"command": consoleDeprovisionMethod})
			if cerr := e.sendC2D(deviceID, C2DMessage{Payload: body, ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: map[string]string{"command": consoleDeprovisionMethod}}); cerr != nil {
				res.C2DError = cerr.Message
			} else {
				res.SentC2D = true
			}
		default:
			return res, aerr
		}
	}
	if res.Disenroll, aerr = e.consoleDisenroll(regID, leaf); aerr != nil {
		return res, aerr
	}
	res.HubDevice = consoleDeleted
	if aerr := e.deleteDevice(deviceID, ""); aerr != nil {
		if aerr.Status != http.StatusNotFound {
			return res, aerr
		}
		res.HubDevice = consoleAbsent
	}
	res.Registration = consoleDeleted
	if aerr := e.deleteRegistration(regID, ""); aerr != nil {
		if aerr.Status != http.StatusNotFound {
			return res, aerr
		}
		res.Registration = consoleAbsent
	}
	e.log.Info("console: device deprovisioned", "device_id", deviceID, "answered", res.Answered, "c2d", res.SentC2D)
	return res, nil
}

// consoleActionBody decodes an optional JSON object body into v.
func consoleActionBody(r *http.Request, v any) error {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("request body must be a JSON object: %w", err)
	}
	return nil
}

// consoleAPIError answers with an API error's status and message.
func consoleAPIError(w http.ResponseWriter, err error) {
	var aerr *APIError
	if errors.As(err, &aerr) {
		writeJSON(w, aerr.Status, map[string]string{"error": aerr.Message, "code": aerr.HubCode})
		return
	}
	consoleError(w, http.StatusInternalServerError, err.Error())
}

func (e *Emulator) consoleFlush(w http.ResponseWriter, r *http.Request, _ string, _ *consoleSession) {
	id := r.PathValue("id")
	var body struct {
		TimeoutSeconds float64 `json:"timeoutSeconds"`
	}
	if err := consoleActionBody(r, &body); err != nil {
		consoleError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.TimeoutSeconds < 0 || body.TimeoutSeconds > 300 {
		consoleError(w, http.StatusBadRequest, fmt.Sprintf("timeoutSeconds %v must be between 0 and 300", body.TimeoutSeconds))
		return
	}
	if body.TimeoutSeconds == 0 {
		body.TimeoutSeconds = 25
	}
	payload, _ := json.Marshal(map[string]float64{"timeoutSeconds": body.TimeoutSeconds})
	timeout := time.Duration(body.TimeoutSeconds*float64(time.Second)) + 10*time.Second
	res, aerr := e.invokeMethod(r.Context(), id, consoleFlushMethod, payload, timeout, 0)
	if aerr != nil {
		consoleAPIError(w, aerr)
		return
	}
	e.log.Info("console: flush invoked", "device_id", id, "status", res.Status)
	writeJSON(w, http.StatusOK, res)
}

func (e *Emulator) consoleDisenrollAPI(w http.ResponseWriter, r *http.Request, _ string, _ *consoleSession) {
	res, err := e.ConsoleDisenroll(r.PathValue("id"))
	if err != nil {
		consoleAPIError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (e *Emulator) consoleDeprovisionAPI(w http.ResponseWriter, r *http.Request, _ string, _ *consoleSession) {
	var body struct {
		DrainTimeoutSeconds float64 `json:"drainTimeoutSeconds"`
	}
	if err := consoleActionBody(r, &body); err != nil {
		consoleError(w, http.StatusBadRequest, err.Error())
		return
	}
	drain := time.Duration(body.DrainTimeoutSeconds * float64(time.Second))
	if drain < 0 || drain > consoleMaxDrain {
		consoleError(w, http.StatusBadRequest, fmt.Sprintf("drainTimeoutSeconds %v must be between 0 and %d", body.DrainTimeoutSeconds, int(consoleMaxDrain.Seconds())))
		return
	}
	res, err := e.ConsoleDeprovision(r.Context(), r.PathValue("id"), drain)
	if err != nil {
		var aerr *APIError
		if errors.As(err, &aerr) {
			writeJSON(w, aerr.Status, map[string]any{"error": aerr.Message, "code": aerr.HubCode, "result": res})
			return
		}
		consoleError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}
