package emulator

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coldchain/tracker/provisioning/pki"
)

// ErrPreconditionFailed means an If-Match etag did not match.
var ErrPreconditionFailed = errors.New("emulator: etag mismatch")

// APIError is an error answer of the service APIs: an HTTP status, Azure's
// error code and a message. Go callers get it from the exported registry
// methods; REST clients get it as the body Azure would send.
type APIError struct {
	Status int
	// Code is the DPS numeric error code (status*1000 + detail).
	Code int
	// HubCode is the IoT Hub error code name (DeviceNotFound, ...).
	HubCode string
	Message string
}

// Error formats the status and message.
func (a *APIError) Error() string {
	return fmt.Sprintf("emulator: %d %s", a.Status, a.Message)
}

// Is makes errors.Is(err, ErrNotFound) and errors.Is(err,
// ErrPreconditionFailed) work on API errors.
func (a *APIError) Is(target error) bool {
	return (target == ErrNotFound && a.Status == 404) || (target == ErrPreconditionFailed && a.Status == 412)
}

func badRequest(code int, format string, args ...any) *APIError {
	return &APIError{Status: 400, Code: code, HubCode: "ArgumentInvalid", Message: fmt.Sprintf(format, args...)}
}

func notFound(code int, hubCode, format string, args ...any) *APIError {
	return &APIError{Status: 404, Code: code, HubCode: hubCode, Message: fmt.Sprintf(format, args...)}
}

func preconditionFailed(format string, args ...any) *APIError {
	return &APIError{Status: 412, Code: 412002, HubCode: "PreconditionFailed", Message: fmt.Sprintf(format, args...)}
}

func internalError(err error) *APIError {
	return &APIError{Status: 500, Code: 500000, HubCode: "ServerError", Message: err.Error()}
}

// checkIfMatch applies If-Match to an object with etag current (exists says
// whether it exists). An empty ifMatch means unconditional; "*" matches any
// existing object.
func checkIfMatch(ifMatch, current string, exists bool, what string) *APIError {
	ifMatch = strings.TrimSpace(ifMatch)
	if ifMatch == "" {
		return nil
	}
	// The SDKs send the wildcard quoted ("*") as well as bare.
	star := unquote(ifMatch) == "*"
	if !exists {
		if star {
			return nil
		}
		return preconditionFailed("%s does not exist, so it cannot match etag %s", what, ifMatch)
	}
	if star || unquote(ifMatch) == unquote(current) {
		return nil
	}
	return preconditionFailed("etag %s does not match the current etag of %s", ifMatch, what)
}

func unquote(s string) string { return strings.Trim(strings.TrimSpace(s), `"`) }

// parseCertificate reads a certificate given as PEM or as base64 DER, the two
// forms DPS accepts.
func parseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "-----BEGIN") {
		certs, err := pki.ParseCertsPEM([]byte(s))
		if err != nil {
			return nil, err
		}
		return certs[0], nil
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("certificate is neither PEM nor base64 DER")
	}
	return x509.ParseCertificate(der)
}

// normalizeCerts parses the certificates of an attestation, stores them as
// base64 DER and fills their info.
func normalizeCerts(xc *X509Certificates, field string) *APIError {
	if xc.Primary == nil || xc.Primary.Certificate == "" {
		return badRequest(400004, "attestation.x509.%s.primary.certificate is required (PEM or base64 DER)", field)
	}
	for name, c := range map[string]*X509CertificateWithInfo{"primary": xc.Primary, "secondary": xc.Secondary} {
		if c == nil {
			continue
		}
		if c.Certificate == "" {
			return badRequest(400004, "attestation.x509.%s.%s has no certificate", field, name)
		}
		cert, err := parseCertificate(c.Certificate)
		if err != nil {
			return badRequest(400004, "attestation.x509.%s.%s.certificate: %v", field, name, err)
		}
		c.Certificate = base64.StdEncoding.EncodeToString(cert.Raw)
		c.Info = certInfo(cert)
	}
	return nil
}

// hasCertificates reports whether an attestation carries certificate bodies
// (a body fetched with GET has only their info).
func hasCertificates(a AttestationMechanism) bool {
	if a.X509 == nil {
		return false
	}
	for _, xc := range []*X509Certificates{a.X509.ClientCertificates, a.X509.SigningCertificates} {
		if xc == nil {
			continue
		}
		for _, c := range []*X509CertificateWithInfo{xc.Primary, xc.Secondary} {
			if c != nil && c.Certificate != "" {
				return true
			}
		}
	}
	return false
}

// checkAttestation validates an X.509 attestation; individual says which
// certificate kinds are allowed.
func checkAttestation(a *AttestationMechanism, individual bool) *APIError {
	if !strings.EqualFold(a.Type, "x509") {
		return badRequest(400004, "attestation type %q is not supported by the emulator; use \"x509\"", a.Type)
	}
	a.Type = "x509"
	x := a.X509
	if x == nil {
		return badRequest(400004, "attestation.x509 is required for type x509")
	}
	if x.CAReferences != nil {
		return badRequest(400004, "attestation.x509.caReferences is not supported by the emulator; put the CA certificate in signingCertificates")
	}
	switch {
	case x.ClientCertificates != nil && x.SigningCertificates != nil:
		return badRequest(400004, "attestation.x509 has both clientCertificates and signingCertificates")
	case x.ClientCertificates != nil:
		if !individual {
			return badRequest(400004, "an enrollment group attests with signingCertificates, not clientCertificates")
		}
		return normalizeCerts(x.ClientCertificates, "clientCertificates")
	case x.SigningCertificates != nil:
		return normalizeCerts(x.SigningCertificates, "signingCertificates")
	}
	return badRequest(400004, "attestation.x509 needs signingCertificates (groups) or clientCertificates (individual enrollments)")
}

func checkProvisioningStatus(s *string) *APIError {
	switch *s {
	case "":
		*s = StatusEnabled
	case StatusEnabled, StatusDisabled:
	default:
		return badRequest(400004, "provisioningStatus %q must be \"enabled\" or \"disabled\"", *s)
	}
	return nil
}

func checkAllocation(policy string, custom []byte) *APIError {
	switch policy {
	case "", "hashed", "geoLatency", "static":
	case "custom":
		return badRequest(400004, "custom allocation (webhooks) is not supported by the emulator")
	default:
		return badRequest(400004, "allocationPolicy %q must be hashed, geoLatency, static or custom", policy)
	}
	return nil
}

// PutEnrollmentGroup creates or replaces an enrollment group, as
// PUT /enrollmentGroups/{id} does; ifMatch is the If-Match header ("" for
// none).
func (e *Emulator) PutEnrollmentGroup(g EnrollmentGroup, ifMatch string) (EnrollmentGroup, error) {
	out, aerr := e.putEnrollmentGroup(g.EnrollmentGroupID, g, ifMatch)
	if aerr != nil {
		return out, aerr
	}
	return out, nil
}

func (e *Emulator) putEnrollmentGroup(id string, g EnrollmentGroup, ifMatch string) (EnrollmentGroup, *APIError) {
	if g.EnrollmentGroupID == "" {
		g.EnrollmentGroupID = id
	}
	if !strings.EqualFold(g.EnrollmentGroupID, id) {
		return g, badRequest(400004, "enrollmentGroupId %q in the body differs from %q in the path", g.EnrollmentGroupID, id)
	}
	if err := pki.ValidateRegistrationID(id); err != nil {
		return g, badRequest(400004, "enrollment group ID %q: %v", id, err)
	}
	if aerr := checkProvisioningStatus(&g.ProvisioningStatus); aerr != nil {
		return g, aerr
	}
	if aerr := checkAllocation(g.AllocationPolicy, g.CustomAllocationDefinition); aerr != nil {
		return g, aerr
	}
	key := strings.ToLower(id)
	now := time.Now().UTC()
	var out EnrollmentGroup
	var aerr *APIError
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr = nil
		cur, exists, err := getJSON[EnrollmentGroup](tx, bucketGroups, key)
		if err != nil {
			return err
		}
		if aerr = checkIfMatch(ifMatch, cur.ETag, exists, "enrollment group "+id); aerr != nil {
			return nil
		}
		ng := g
		if exists && !hasCertificates(ng.Attestation) {
			ng.Attestation = cur.Attestation
		} else if aerr = checkAttestation(&ng.Attestation, false); aerr != nil {
			return nil
		}
		ng.ETag = newETag()
		ng.CreatedDateTimeUTC = &now
		if exists && cur.CreatedDateTimeUTC != nil {
			ng.CreatedDateTimeUTC = cur.CreatedDateTimeUTC
		}
		ng.LastUpdatedDateTimeUTC = &now
		for _, c := range attestationCerts(ng.Attestation.X509.SigningCertificates) {
			if err := tx.Bucket([]byte(bucketHubCAs)).Put([]byte(certInfo(c).SHA256Thumbprint), c.Raw); err != nil {
				return err
			}
		}
		out = ng
		e.enrollGen.Add(1)
		return putJSON(tx, bucketGroups, key, ng)
	})
	if err != nil {
		return out, internalError(err)
	}
	if aerr != nil {
		return out, aerr
	}
	if err := e.loadHubCAs(); err != nil {
		return out, internalError(err)
	}
	e.event(EventEnrollment, "", fmt.Sprintf("group %s %s", id, out.ProvisioningStatus))
	return redactGroup(out), nil
}

// EnrollmentGroup returns an enrollment group (certificates as info only).
func (e *Emulator) EnrollmentGroup(id string) (EnrollmentGroup, error) {
	g, aerr := e.getEnrollmentGroup(id)
	if aerr != nil {
		return g, aerr
	}
	return g, nil
}

func (e *Emulator) getEnrollmentGroup(id string) (EnrollmentGroup, *APIError) {
	g, ok, err := viewGet[EnrollmentGroup](e, bucketGroups, strings.ToLower(id))
	if err != nil {
		return g, internalError(err)
	}
	if !ok {
		return g, notFound(404202, "EnrollmentGroupNotFound", "enrollment group %q not found", id)
	}
	return redactGroup(g), nil
}

func (e *Emulator) deleteEnrollmentGroup(id, ifMatch string) *APIError {
	return deleteChecked(e, bucketGroups, strings.ToLower(id), ifMatch, "enrollment group "+id,
		notFound(404202, "EnrollmentGroupNotFound", "enrollment group %q not found", id),
		func(g EnrollmentGroup) string { return g.ETag })
}

func (e *Emulator) listEnrollmentGroups() ([]EnrollmentGroup, *APIError) {
	var out []EnrollmentGroup
	err := e.store.view(func(tx *bolt.Tx) error {
		return forEachJSON(tx, bucketGroups, func(_ string, g EnrollmentGroup) error {
			out = append(out, redactGroup(g))
			return nil
		})
	})
	if err != nil {
		return nil, internalError(err)
	}
	return out, nil
}

// PutEnrollment creates or replaces an individual enrollment, as
// PUT /enrollments/{registrationId} does.
func (e *Emulator) PutEnrollment(ie IndividualEnrollment, ifMatch string) (IndividualEnrollment, error) {
	out, aerr := e.putEnrollment(ie.RegistrationID, ie, ifMatch)
	if aerr != nil {
		return out, aerr
	}
	return out, nil
}

func (e *Emulator) putEnrollment(id string, ie IndividualEnrollment, ifMatch string) (IndividualEnrollment, *APIError) {
	if ie.RegistrationID == "" {
		ie.RegistrationID = id
	}
	if !strings.EqualFold(ie.RegistrationID, id) {
		return ie, badRequest(400004, "registrationId %q in the body differs from %q in the path", ie.RegistrationID, id)
	}
	if err := pki.ValidateRegistrationID(id); err != nil {
		return ie, badRequest(400004, "registration ID %q: %v", id, err)
	}
	if aerr := checkProvisioningStatus(&ie.ProvisioningStatus); aerr != nil {
		return ie, aerr
	}
	if aerr := checkAllocation(ie.AllocationPolicy, ie.CustomAllocationDefinition); aerr != nil {
		return ie, aerr
	}
	ie.RegistrationState = nil
	key := strings.ToLower(id)
	now := time.Now().UTC()
	var out IndividualEnrollment
	var aerr *APIError
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr = nil
		cur, exists, err := getJSON[IndividualEnrollment](tx, bucketEnrollments, key)
		if err != nil {
			return err
		}
		if aerr = checkIfMatch(ifMatch, cur.ETag, exists, "enrollment "+id); aerr != nil {
			return nil
		}
		n := ie
		if exists && !hasCertificates(n.Attestation) {
			n.Attestation = cur.Attestation
		} else if aerr = checkAttestation(&n.Attestation, true); aerr != nil {
			return nil
		}
		if cc := n.Attestation.X509.ClientCertificates; cc != nil && !strings.EqualFold(cc.Primary.Info.subjectCN(), id) {
			aerr = badRequest(400004, "the certificate's subject CN %q must be the registration ID %q", cc.Primary.Info.subjectCN(), id)
			return nil
		}
		n.ETag = newETag()
		n.CreatedDateTimeUTC = &now
		if exists && cur.CreatedDateTimeUTC != nil {
			n.CreatedDateTimeUTC = cur.CreatedDateTimeUTC
		}
		n.LastUpdatedDateTimeUTC = &now
		out = n
		e.enrollGen.Add(1)
		return putJSON(tx, bucketEnrollments, key, n)
	})
	if err != nil {
		return out, internalError(err)
	}
	if aerr != nil {
		return out, aerr
	}
	e.event(EventEnrollment, id, "individual "+out.ProvisioningStatus)
	return redactEnrollment(out), nil
}

// Enrollment returns an individual enrollment (certificates as info only).
func (e *Emulator) Enrollment(id string) (IndividualEnrollment, error) {
	ie, aerr := e.getEnrollment(id)
	if aerr != nil {
		return ie, aerr
	}
	return ie, nil
}

func (e *Emulator) getEnrollment(id string) (IndividualEnrollment, *APIError) {
	ie, ok, err := viewGet[IndividualEnrollment](e, bucketEnrollments, strings.ToLower(id))
	if err != nil {
		return ie, internalError(err)
	}
	if !ok {
		return ie, notFound(404201, "EnrollmentNotFound", "enrollment %q not found", id)
	}
	return redactEnrollment(ie), nil
}

func (e *Emulator) deleteEnrollment(id, ifMatch string) *APIError {
	return deleteChecked(e, bucketEnrollments, strings.ToLower(id), ifMatch, "enrollment "+id,
		notFound(404201, "EnrollmentNotFound", "enrollment %q not found", id),
		func(ie IndividualEnrollment) string { return ie.ETag })
}

func (e *Emulator) listEnrollments() ([]IndividualEnrollment, *APIError) {
	var out []IndividualEnrollment
	err := e.store.view(func(tx *bolt.Tx) error {
		return forEachJSON(tx, bucketEnrollments, func(_ string, ie IndividualEnrollment) error {
			out = append(out, redactEnrollment(ie))
			return nil
		})
	})
	if err != nil {
		return nil, internalError(err)
	}
	return out, nil
}

// Registration returns DPS's registration record for a registration ID.
func (e *Emulator) Registration(id string) (RegistrationState, error) {
	st, aerr := e.getRegistration(id)
	if aerr != nil {
		return st, aerr
	}
	return st, nil
}

func (e *Emulator) getRegistration(id string) (RegistrationState, *APIError) {
	r, ok, err := viewGet[registration](e, bucketRegistrations, strings.ToLower(id))
	if err != nil {
		return RegistrationState{}, internalError(err)
	}
	if !ok {
		return RegistrationState{}, notFound(404203, "RegistrationNotFound", "registration %q not found", id)
	}
	return r.State, nil
}

func (e *Emulator) deleteRegistration(id, ifMatch string) *APIError {
	return deleteChecked(e, bucketRegistrations, strings.ToLower(id), ifMatch, "registration "+id,
		notFound(404203, "RegistrationNotFound", "registration %q not found", id),
		func(r registration) string { return r.State.ETag })
}

func (e *Emulator) listRegistrations(groupID string) ([]RegistrationState, *APIError) {
	var out []RegistrationState
	err := e.store.view(func(tx *bolt.Tx) error {
		return forEachJSON(tx, bucketRegistrations, func(_ string, r registration) error {
			if strings.EqualFold(r.EnrollmentGroupID, groupID) {
				out = append(out, r.State)
			}
			return nil
		})
	})
	if err != nil {
		return nil, internalError(err)
	}
	return out, nil
}

func viewGet[T any](e *Emulator, bucket, key string) (T, bool, error) {
	var v T
	var ok bool
	err := e.store.view(func(tx *bolt.Tx) error {
		var err error
		v, ok, err = getJSON[T](tx, bucket, key)
		return err
	})
	return v, ok, err
}

// deleteChecked deletes bucket/key after checking If-Match against the etag
// etagOf extracts.
func deleteChecked[T any](e *Emulator, bucket, key, ifMatch, what string, missing *APIError, etagOf func(T) string) *APIError {
	var aerr *APIError
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr = nil
		cur, exists, err := getJSON[T](tx, bucket, key)
		if err != nil {
			return err
		}
		if !exists {
			aerr = missing
			return nil
		}
		if aerr = checkIfMatch(ifMatch, etagOf(cur), true, what); aerr != nil {
			return nil
		}
		e.enrollGen.Add(1)
		return deleteKey(tx, bucket, key)
	})
	if err != nil {
		return internalError(err)
	}
	if aerr == nil {
		e.event(EventEnrollment, "", what+" deleted")
	}
	return aerr
}

func (i *X509CertificateInfo) subjectCN() string {
	if i == nil {
		return ""
	}
	for _, part := range strings.Split(i.SubjectName, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == "CN" {
			return v
		}
	}
	return ""
}

// redactGroup removes certificate bodies, which DPS never returns.
func redactGroup(g EnrollmentGroup) EnrollmentGroup {
	g.Attestation = redactAttestation(g.Attestation)
	return g
}

func redactEnrollment(ie IndividualEnrollment) IndividualEnrollment {
	ie.Attestation = redactAttestation(ie.Attestation)
	return ie
}

func redactAttestation(a AttestationMechanism) AttestationMechanism {
	if a.X509 == nil {
		return a
	}
	x := *a.X509
	strip := func(xc *X509Certificates) *X509Certificates {
		if xc == nil {
			return nil
		}
		out := &X509Certificates{}
		if xc.Primary != nil {
			out.Primary = &X509CertificateWithInfo{Info: xc.Primary.Info}
		}
		if xc.Secondary != nil {
			out.Secondary = &X509CertificateWithInfo{Info: xc.Secondary.Info}
		}
		return out
	}
	x.ClientCertificates = strip(x.ClientCertificates)
	x.SigningCertificates = strip(x.SigningCertificates)
	a.X509 = &x
	return a
}

// sortByID sorts service query results for stable paging.
func sortByID[T any](items []T, id func(T) string) {
	sort.Slice(items, func(i, j int) bool { return strings.ToLower(id(items[i])) < strings.ToLower(id(items[j])) })
}

func newGenerationID() string {
	var b [8]byte
	copy(b[:], []byte(randHex(4)))
	return fmt.Sprintf("63%016d", binary.BigEndian.Uint64(b[:])%1e16)
}

// newDeviceETag returns an etag shaped like the registry's (base64 of a
// short number).
func newDeviceETag() string {
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprint(time.Now().UnixNano() % 1e9)))
}
