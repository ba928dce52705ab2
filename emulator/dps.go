package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	bolt "go.etcd.io/bbolt"
)

const (
	dpsRegisterPrefix = "$dps/registrations/PUT/iotdps-register/?"
	dpsPollPrefix     = "$dps/registrations/GET/iotdps-get-operationstatus/?"
	dpsResponsePrefix = "$dps/registrations/res/"
)

// dpsOp is a registration operation between the register request and the
// final poll.
type dpsOp struct {
	id      string
	regKey  string // lower-case registration ID
	created time.Time
	polls   int             // polls still answered "assigning"
	final   json.RawMessage // the 200 body
}

// deviceRegistrationResult is registrationState in DPS device answers.
type deviceRegistrationResult struct {
	X509                   *x509RegistrationResult `json:"x509,omitempty"`
	RegistrationID         string                  `json:"registrationId"`
	CreatedDateTimeUTC     *time.Time              `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string                  `json:"assignedHub,omitempty"`
	DeviceID               string                  `json:"deviceId,omitempty"`
	Status                 string                  `json:"status"`
	Substatus              string                  `json:"substatus,omitempty"`
	ErrorCode              int                     `json:"errorCode,omitempty"`
	ErrorMessage           string                  `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *time.Time              `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string                  `json:"etag,omitempty"`
	Payload                json.RawMessage         `json:"payload,omitempty"`
}

type x509RegistrationResult struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

type operationStatus struct {
	OperationID       string                    `json:"operationId"`
	Status            string                    `json:"status"`
	RegistrationState *deviceRegistrationResult `json:"registrationState,omitempty"`
}

// dpsError is the body of a DPS error answer (ProvisioningServiceErrorDetails).
type dpsError struct {
	ErrorCode    int       `json:"errorCode"`
	TrackingID   string    `json:"trackingId"`
	Message      string    `json:"message"`
	TimestampUTC time.Time `json:"timestampUtc"`
}

func newDPSError(code int, msg string) dpsError {
	return dpsError{ErrorCode: code, TrackingID: newUUID(), Message: msg, TimestampUTC: time.Now().UTC()}
}

// dpsPublish validates a DPS device publish (in the client's read loop). Any
// topic other than register and poll closes the connection.
func (e *Emulator) dpsPublish(s *session, pk packets.Packet) error {
	_, q, ok := parseDPSTopic(pk.TopicName)
	if !ok {
		return fmt.Errorf("topic %q is not a DPS device topic", pk.TopicName)
	}
	if q.Get("$rid") == "" {
		return fmt.Errorf("topic %q has no $rid", pk.TopicName)
	}
	return nil
}

// parseDPSTopic returns "register" or "poll" and the topic's query.
func parseDPSTopic(topic string) (string, url.Values, bool) {
	var kind, raw string
	switch {
	case strings.HasPrefix(topic, dpsRegisterPrefix):
		kind, raw = "register", topic[len(dpsRegisterPrefix):]
	case strings.HasPrefix(topic, dpsPollPrefix):
		kind, raw = "poll", topic[len(dpsPollPrefix):]
	default:
		return "", nil, false
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", nil, false
	}
	return kind, q, true
}

// dpsRequest answers a register or poll request; it runs after the PUBACK.
func (e *Emulator) dpsRequest(s *session, topic string, payload []byte) {
	kind, q, _ := parseDPSTopic(topic)
	rid := q.Get("$rid")
	if f, ok := e.faults.nextDPS(); ok {
		e.event(EventDPSFault, s.id, fmt.Sprintf("%s answered %d", kind, f.Status))
		e.dpsReply(s, f.Status, rid, time.Duration(f.RetryAfter), newDPSError(f.Status*1000+1, "injected fault: "+statusText(f.Status)))
		return
	}
	switch kind {
	case "register":
		e.event(EventDPSRegister, s.id, "")
		op, status, body := e.register(s, payload)
		if op == nil {
			e.dpsReply(s, status, rid, 0, body)
			return
		}
		e.dpsReply(s, 202, rid, e.pollAfter(), operationStatus{OperationID: op.id, Status: RegAssigning})
	case "poll":
		opID := q.Get("operationId")
		e.mu.Lock()
		op := e.ops[opID]
		if op != nil && op.regKey != strings.ToLower(s.id) {
			op = nil
		}
		var assigning bool
		if op != nil && op.polls > 0 {
			op.polls--
			assigning = true
		}
		e.mu.Unlock()
		switch {
		case op == nil:
			e.dpsReply(s, 404, rid, 0, newDPSError(404203, fmt.Sprintf("operation %q not found for registration %q", opID, s.id)))
		case assigning:
			e.dpsReply(s, 202, rid, e.pollAfter(), operationStatus{OperationID: op.id, Status: RegAssigning})
		default:
			e.dpsReply(s, 200, rid, 0, op.final)
		}
	}
}

func (e *Emulator) pollAfter() time.Duration {
	switch {
	case e.cfg.DPSPollAfter < 0:
		return 0
	case e.cfg.DPSPollAfter == 0:
		return time.Second
	}
	return e.cfg.DPSPollAfter
}

// dpsReply publishes $dps/registrations/res/{status}/?$rid={rid}[&retry-after=N]
// to the device, if it subscribed to the responses.
func (e *Emulator) dpsReply(s *session, status int, rid string, retryAfter time.Duration, body any) {
	raw, ok := body.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			e.log.Error("encode DPS reply", "err", err)
			return
		}
	}
	topic := dpsResponsePrefix + strconv.Itoa(status) + "/?$rid=" + rid
	if status == 202 || status == 429 || status >= 500 {
		secs := int((retryAfter + time.Second - 1) / time.Second)
		if retryAfter > 0 || status == 202 {
			topic += "&retry-after=" + strconv.Itoa(secs)
		}
	}
	qos, ok := subscribed(s.cl, topic)
	if !ok {
		e.log.Info("DPS reply dropped: device is not subscribed to $dps/registrations/res/#", "registration_id", s.id)
		return
	}
	if err := e.deliver(s, topic, raw, qos); err != nil {
		e.log.Info("DPS reply not delivered", "registration_id", s.id, "err", err)
	}
}

// registerBody is what devices send with a register request; both fields
// are optional (the C# SDK sends an empty body).
type registerBody struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload"`
}

// register attests the device, allocates it and records the registration.
// It returns the operation, or (nil, status, error body) when the request is
// answered at once with an error.
func (e *Emulator) register(s *session, payload []byte) (*dpsOp, int, any) {
	var body registerBody
	if trimmed := bytes.TrimSpace(payload); len(trimmed) > 0 {
		if err := json.Unmarshal(trimmed, &body); err != nil {
			return nil, 400, newDPSError(400004, "the register request body is not a JSON object: "+err.Error())
		}
		if body.RegistrationID != "" && !strings.EqualFold(body.RegistrationID, s.id) {
			return nil, 400, newDPSError(400001, fmt.Sprintf("registrationId %q in the body differs from the connection's %q", body.RegistrationID, s.id))
		}
		if len(body.Payload) > 0 && !json.Valid(body.Payload) {
			return nil, 400, newDPSError(400004, "payload is not valid JSON")
		}
	}
	now := time.Now().UTC()
	// Attestation (chain verification) runs outside the write transaction,
	// so concurrent registrations verify in parallel and the serialised
	// part is a few puts. An enrollment change in between makes the
	// transaction match again.
	key := strings.ToLower(s.id)
	gen := e.enrollGen.Load()
	var match *enrollmentMatch
	var why string
	err := e.store.view(func(tx *bolt.Tx) error {
		var err error
		match, why, err = e.matchEnrollment(tx, s.chain, key, now)
		return err
	})
	var res registrationOutcome
	if err == nil {
		err = e.store.update(func(tx *bolt.Tx) error {
			m, w := match, why
			if e.enrollGen.Load() != gen {
				var err error
				if m, w, err = e.matchEnrollment(tx, s.chain, key, now); err != nil {
					return err
				}
			}
			var err error
			res, err = e.registerTx(tx, s, m, w, body.Payload, now)
			return err
		})
	}
	if err != nil {
		e.log.Error("registration failed", "registration_id", s.id, "err", err)
		return nil, 500, newDPSError(500000, "internal error: "+err.Error())
	}
	e.mu.Lock()
	e.regCounts[strings.ToLower(s.id)] = res.count
	e.mu.Unlock()
	switch res.kind {
	case outcomeUnauthorized:
		e.event(EventDPSFailed, s.id, res.message)
		return nil, 401, newDPSError(401002, "Invalid certificate. "+res.message)
	case outcomeDisabled:
		e.event(EventDPSDisabled, s.id, res.message)
		if n, err := strconv.Atoi(e.cfg.DisabledReply); err == nil {
			return nil, n, newDPSError(n*1000+1, res.message)
		}
	case outcomeFailed:
		e.event(EventDPSFailed, s.id, res.message)
	case outcomeAssigned:
		e.event(EventDPSAssigned, s.id, res.result.Substatus+" as "+res.result.DeviceID)
		if res.created {
			e.event(EventRegistry, res.result.DeviceID, "created by DPS")
		}
	}
	op := &dpsOp{id: "4." + randHex(8) + "." + newUUID(), regKey: strings.ToLower(s.id), created: now, polls: e.cfg.DPSAssigningPolls}
	final, err := json.Marshal(operationStatus{OperationID: op.id, Status: res.result.Status, RegistrationState: &res.result})
	if err != nil {
		return nil, 500, newDPSError(500000, "internal error: "+err.Error())
	}
	op.final = final
	e.mu.Lock()
	e.ops[op.id] = op
	e.mu.Unlock()
	return op, 202, nil
}

type outcomeKind int

const (
	outcomeUnauthorized outcomeKind = iota + 1
	outcomeDisabled
	outcomeFailed
	outcomeAssigned
)

type registrationOutcome struct {
	kind    outcomeKind
	message string
	result  deviceRegistrationResult
	count   int64
	created bool // the hub device was created
}

// enrollmentMatch is the enrollment that admits (or blocks) a device.
type enrollmentMatch struct {
	individual  *IndividualEnrollment
	group       *EnrollmentGroup
	signingCert *x509.Certificate
}

func (m enrollmentMatch) status() string {
	if m.individual != nil {
		return m.individual.ProvisioningStatus
	}
	return m.group.ProvisioningStatus
}

// registerTx records a registration inside one transaction: count the
// request, then record the outcome of the enrollment match.
func (e *Emulator) registerTx(tx *bolt.Tx, s *session, match *enrollmentMatch, why string, payload json.RawMessage, now time.Time) (registrationOutcome, error) {
	var out registrationOutcome
	key := strings.ToLower(s.id)
	count, _, err := getJSON[int64](tx, bucketRegCounts, key)
	if err != nil {
		return out, err
	}
	out.count = count + 1
	if err := putJSON(tx, bucketRegCounts, key, out.count); err != nil {
		return out, err
	}
	if match == nil {
		out.kind, out.message = outcomeUnauthorized, why
		return out, nil
	}
	prev, hadPrev, err := getJSON[registration](tx, bucketRegistrations, key)
	if err != nil {
		return out, err
	}
	created := &now
	if hadPrev && prev.State.CreatedDateTimeUTC != nil {
		created = prev.State.CreatedDateTimeUTC
	}
	leafInfo := certInfo(s.chain[0])
	rec := registration{
		State: RegistrationState{
			RegistrationID:         s.id,
			CreatedDateTimeUTC:     created,
			LastUpdatedDateTimeUTC: &now,
			ETag:                   newETag(),
		},
		Certificate: leafInfo,
		Payload:     payload,
	}
	x5 := &x509RegistrationResult{CertificateInfo: leafInfo}
	if match.individual != nil {
		rec.Individual = true
	} else {
		rec.EnrollmentGroupID = match.group.EnrollmentGroupID
		x5.EnrollmentGroupID = match.group.EnrollmentGroupID
	}
	if match.signingCert != nil {
		rec.SigningCert = certInfo(match.signingCert)
		x5.SigningCertificateInfo = rec.SigningCert
	}
	result := func() deviceRegistrationResult {
		st := rec.State
		return deviceRegistrationResult{
			X509: x5, RegistrationID: st.RegistrationID, CreatedDateTimeUTC: st.CreatedDateTimeUTC,
			AssignedHub: st.AssignedHub, DeviceID: st.DeviceID, Status: st.Status, Substatus: st.Substatus,
			ErrorCode: st.ErrorCode, ErrorMessage: st.ErrorMessage, LastUpdatedDateTimeUTC: st.LastUpdatedDateTimeUTC,
			ETag: st.ETag,
		}
	}
	if match.status() == StatusDisabled {
		rec.State.Status = RegDisabled
		out.kind = outcomeDisabled
		if match.individual != nil {
			out.message = fmt.Sprintf("individual enrollment %q is disabled", match.individual.RegistrationID)
		} else {
			out.message = fmt.Sprintf("enrollment group %q is disabled", match.group.EnrollmentGroupID)
		}
		out.result = result()
		return out, putJSON(tx, bucketRegistrations, key, rec)
	}
	var hubs []string
	var hubName string
	if ie := match.individual; ie != nil {
		hubs, hubName = ie.IoTHubs, ie.IoTHubHostName
	} else {
		hubs, hubName = match.group.IoTHubs, match.group.IoTHubHostName
	}
	if !e.linkedHub(hubName, hubs) {
		rec.State.Status = RegFailed
		rec.State.ErrorCode = 400209
		rec.State.ErrorMessage = fmt.Sprintf("the enrollment's IoT hub %q is not linked to this provisioning service (linked: %s)", firstNonEmpty(hubName, strings.Join(hubs, ",")), e.hubHost())
		out.kind, out.message = outcomeFailed, rec.State.ErrorMessage
		out.result = result()
		return out, putJSON(tx, bucketRegistrations, key, rec)
	}
	deviceID := s.id
	if match.individual != nil && match.individual.DeviceID != "" {
		deviceID = match.individual.DeviceID
	}
	substatus := SubstatusInitial
	if hadPrev && prev.State.Status == RegAssigned && prev.State.DeviceID == deviceID {
		substatus = SubstatusReprovision
	}
	createdDev, err := e.provisionDeviceTx(tx, deviceID, match, now)
	if err != nil {
		return out, err
	}
	rec.State.Status = RegAssigned
	rec.State.Substatus = substatus
	rec.State.AssignedHub = e.hubHost()
	rec.State.DeviceID = deviceID
	out.kind, out.created = outcomeAssigned, createdDev
	out.result = result()
	out.result.Payload = nil
	return out, putJSON(tx, bucketRegistrations, key, rec)
}

// matchEnrollment finds what admits the device: its individual enrollment
// first (which also blocks it when disabled, even if a group would admit it),
// then the enrollment groups whose signing certificate the presented chain
// leads to, preferring an enabled one. A nil match comes with the reason.
func (e *Emulator) matchEnrollment(tx *bolt.Tx, chain []*x509.Certificate, key string, now time.Time) (*enrollmentMatch, string, error) {
	ie, ok, err := getJSON[IndividualEnrollment](tx, bucketEnrollments, key)
	if err != nil {
		return nil, "", err
	}
	if ok {
		if ie.Attestation.X509 == nil {
			return nil, "the individual enrollment has no X.509 attestation", nil
		}
		if cc := ie.Attestation.X509.ClientCertificates; cc != nil {
			for _, c := range attestationCerts(cc) {
				if bytes.Equal(c.Raw, chain[0].Raw) {
					return &enrollmentMatch{individual: &ie}, "", nil
				}
			}
			return nil, "the certificate is not the one in the device's individual enrollment", nil
		}
		if sc := ie.Attestation.X509.SigningCertificates; sc != nil {
			for _, c := range attestationCerts(sc) {
				if chainsTo(chain, c, now) {
					return &enrollmentMatch{individual: &ie, signingCert: c}, "", nil
				}
			}
			return nil, "the certificate chain does not lead to the individual enrollment's signing certificate", nil
		}
		return nil, "the individual enrollment has no certificates", nil
	}
	var best *enrollmentMatch
	err = forEachJSON(tx, bucketGroups, func(_ string, g EnrollmentGroup) error {
		if best != nil && best.group.ProvisioningStatus != StatusDisabled {
			return nil
		}
		if g.Attestation.X509 == nil || g.Attestation.X509.SigningCertificates == nil {
			return nil
		}
		for _, c := range attestationCerts(g.Attestation.X509.SigningCertificates) {
			if chainsTo(chain, c, now) {
				best = &enrollmentMatch{group: &g, signingCert: c}
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if best == nil {
		return nil, "no enrollment matches the certificate: no individual enrollment for it, and its chain leads to no enrollment group's signing certificate", nil
	}
	return best, "", nil
}

// linkedHub reports whether an enrollment's hub (if it names one) is the
// emulator's.
func (e *Emulator) linkedHub(name string, hubs []string) bool {
	if name == "" && len(hubs) == 0 {
		return true
	}
	for _, h := range append([]string{name}, hubs...) {
		if h != "" && e.isHubHost(h) {
			return true
		}
	}
	return false
}

// provisionDeviceTx creates the hub device for a registration, or brings an
// existing one's authentication in line with the enrollment. It reports
// whether it created the device.
func (e *Emulator) provisionDeviceTx(tx *bolt.Tx, deviceID string, m *enrollmentMatch, now time.Time) (bool, error) {
	auth := AuthenticationMechanism{Type: AuthCA}
	if m.individual != nil && m.individual.Attestation.X509.ClientCertificates != nil {
		auth.Type = AuthSelfSigned
		certs := m.individual.Attestation.X509.ClientCertificates
		if certs.Primary != nil && certs.Primary.Info != nil {
			auth.X509Thumbprint.PrimaryThumbprint = ptr(certs.Primary.Info.SHA1Thumbprint)
		}
		if certs.Secondary != nil && certs.Secondary.Info != nil {
			auth.X509Thumbprint.SecondaryThumbprint = ptr(certs.Secondary.Info.SHA1Thumbprint)
		}
	}
	dev, exists, err := getJSON[Device](tx, bucketDevices, deviceID)
	if err != nil {
		return false, err
	}
	if exists {
		if dev.Authentication.Type == auth.Type && dev.Authentication.X509Thumbprint == auth.X509Thumbprint {
			return false, nil
		}
		dev.Authentication = auth
		dev.ETag = newDeviceETag()
		return false, putJSON(tx, bucketDevices, deviceID, dev)
	}
	dev = Device{
		DeviceID:          deviceID,
		GenerationID:      newGenerationID(),
		ETag:              newDeviceETag(),
		Status:            StatusEnabled,
		StatusUpdatedTime: now,
		Authentication:    auth,
	}
	var it *InitialTwin
	var caps *DeviceCapabilities
	if m.individual != nil {
		it, caps = m.individual.InitialTwin, m.individual.Capabilities
	} else {
		it, caps = m.group.InitialTwin, m.group.Capabilities
	}
	if caps != nil {
		dev.Capabilities = *caps
	}
	twin := twinRecord{DesiredVersion: 1, ReportedVersion: 1, Version: 1, DesiredUpdated: now, ReportedUpdated: now}
	if it != nil {
		twin.Tags = it.Tags
		if it.Properties != nil {
			twin.Desired = it.Properties.Desired
		}
	}
	if err := putJSON(tx, bucketDevices, deviceID, dev); err != nil {
		return false, err
	}
	return true, putJSON(tx, bucketTwins, deviceID, twin)
}

// attestationCerts parses the stored certificates of an attestation.
func attestationCerts(xc *X509Certificates) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range []*X509CertificateWithInfo{xc.Primary, xc.Secondary} {
		if c == nil || c.Certificate == "" {
			continue
		}
		if cert, err := parseCertificate(c.Certificate); err == nil {
			out = append(out, cert)
		}
	}
	return out
}

// RegistrationCount returns how many register requests DPS received for
// registration ID id (case-insensitive), across restarts.
func (e *Emulator) RegistrationCount(id string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.regCounts[strings.ToLower(id)]
}

func statusText(code int) string {
	switch code {
	case 429:
		return "too many requests"
	case 500:
		return "internal server error"
	case 503:
		return "service unavailable"
	}
	return "status " + strconv.Itoa(code)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
