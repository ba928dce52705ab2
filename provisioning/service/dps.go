package service

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

// Provisioning status of an enrollment.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Registration record statuses.
const (
	RegistrationUnassigned = "unassigned"
	RegistrationAssigning  = "assigning"
	RegistrationAssigned   = "assigned"
	RegistrationFailed     = "failed"
	RegistrationDisabled   = "disabled"
)

// DefaultPageSize is the page size of queries when none is given.
const DefaultPageSize = 100

// maxPages bounds how many pages a ListAll call follows, so a service that
// keeps returning continuation tokens cannot keep a client looping.
const maxPages = 100000

// EnrollmentGroup is a DPS enrollment group: every device whose certificate
// chain leads to the group's signing certificate may provision through it.
type EnrollmentGroup struct {
	EnrollmentGroupID  string             `json:"enrollmentGroupId"`
	Attestation        Attestation        `json:"attestation"`
	IoTHubHostName     string             `json:"iotHubHostName,omitempty"`
	IoTHubs            []string           `json:"iotHubs,omitempty"`
	AllocationPolicy   string             `json:"allocationPolicy,omitempty"`
	InitialTwin        *InitialTwin       `json:"initialTwin,omitempty"`
	Capabilities       *Capabilities      `json:"capabilities,omitempty"`
	ReprovisionPolicy  *ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	ProvisioningStatus string             `json:"provisioningStatus,omitempty"`
	// ETag is set by the service; PutGroup sends it as If-Match.
	ETag        string    `json:"etag,omitempty"`
	CreatedAt   time.Time `json:"createdDateTimeUtc,omitzero"`
	LastUpdated time.Time `json:"lastUpdatedDateTimeUtc,omitzero"`
}

// IndividualEnrollment is a DPS enrollment of one device, keyed by its
// registration ID. A disabled individual enrollment blocks the device even
// when an enabled group would admit it.
type IndividualEnrollment struct {
	RegistrationID     string             `json:"registrationId"`
	DeviceID           string             `json:"deviceId,omitempty"`
	Attestation        Attestation        `json:"attestation"`
	IoTHubHostName     string             `json:"iotHubHostName,omitempty"`
	IoTHubs            []string           `json:"iotHubs,omitempty"`
	AllocationPolicy   string             `json:"allocationPolicy,omitempty"`
	InitialTwin        *InitialTwin       `json:"initialTwin,omitempty"`
	Capabilities       *Capabilities      `json:"capabilities,omitempty"`
	ReprovisionPolicy  *ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	ProvisioningStatus string             `json:"provisioningStatus,omitempty"`
	// RegistrationState is read-only, filled in by the service.
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
	ETag              string             `json:"etag,omitempty"`
	CreatedAt         time.Time          `json:"createdDateTimeUtc,omitzero"`
	LastUpdated       time.Time          `json:"lastUpdatedDateTimeUtc,omitzero"`
}

// Attestation is how an enrollment's devices prove their identity. This
// package fills in X.509 attestations; other types round-trip as read.
type Attestation struct {
	Type         string           `json:"type"`
	X509         *X509Attestation `json:"x509,omitempty"`
	TPM          json.RawMessage  `json:"tpm,omitempty"`
	SymmetricKey json.RawMessage  `json:"symmetricKey,omitempty"`
}

// X509Attestation holds the certificates of an X.509 attestation: signing
// certificates (a CA, for groups), client certificates (a device leaf, for
// individual enrollments) or references to CAs verified in the service.
type X509Attestation struct {
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509Certificate `json:"primary,omitempty"`
	Secondary *X509Certificate `json:"secondary,omitempty"`
}

// X509Certificate is one certificate as sent (PEM or base64 DER in
// Certificate) and as returned (the service's summary in Info).
type X509Certificate struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509CertificateInfo is the service's read-only summary of a certificate.
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName,omitempty"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint,omitempty"`
	SHA256Thumbprint string    `json:"sha256Thumbprint,omitempty"`
	IssuerName       string    `json:"issuerName,omitempty"`
	NotBefore        time.Time `json:"notBeforeUtc,omitzero"`
	NotAfter         time.Time `json:"notAfterUtc,omitzero"`
	SerialNumber     string    `json:"serialNumber,omitempty"`
	Version          int       `json:"version,omitempty"`
}

// X509CAReferences names CA certificates uploaded to and verified by the
// service.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// InitialTwin is the twin a device starts with when it is first assigned.
type InitialTwin struct {
	Tags       map[string]any         `json:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty"`
}

// InitialTwinProperties holds the initial desired properties.
type InitialTwinProperties struct {
	Desired map[string]any `json:"desired,omitempty"`
}

// Capabilities are device capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ReprovisionPolicy says what happens when a registered device provisions
// again.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// RegistrationState is a DPS registration record: the outcome of a device's
// last registration.
type RegistrationState struct {
	RegistrationID string    `json:"registrationId"`
	CreatedAt      time.Time `json:"createdDateTimeUtc,omitzero"`
	AssignedHub    string    `json:"assignedHub,omitempty"`
	DeviceID       string    `json:"deviceId,omitempty"`
	Status         string    `json:"status,omitempty"`
	Substatus      string    `json:"substatus,omitempty"`
	ErrorCode      int       `json:"errorCode,omitempty"`
	ErrorMessage   string    `json:"errorMessage,omitempty"`
	LastUpdated    time.Time `json:"lastUpdatedDateTimeUtc,omitzero"`
	ETag           string    `json:"etag,omitempty"`
}

// X509GroupAttestation returns the attestation of an enrollment group whose
// devices chain to signer (the CA certificate that issues them).
func X509GroupAttestation(signer *x509.Certificate) Attestation {
	return Attestation{Type: "x509", X509: &X509Attestation{
		SigningCertificates: &X509Certificates{Primary: &X509Certificate{Certificate: string(pki.EncodePEM(signer))}},
	}}
}

// X509DeviceAttestation returns the attestation of an individual enrollment
// for the device whose leaf certificate is leaf.
func X509DeviceAttestation(leaf *x509.Certificate) Attestation {
	return Attestation{Type: "x509", X509: &X509Attestation{
		ClientCertificates: &X509Certificates{Primary: &X509Certificate{Certificate: string(pki.EncodePEM(leaf))}},
	}}
}

// DPSClient calls the DPS service API. It is safe for concurrent use.
type DPSClient struct {
	r *rest
}

// NewDPS returns a client for the DPS instance of cs.
func NewDPS(cs ConnectionString, opts Options) (*DPSClient, error) {
	r, err := newRest(cs, opts, DPSAPIVersion)
	if err != nil {
		return nil, err
	}
	return &DPSClient{r: r}, nil
}

// HostName returns the DPS host name of the connection string.
func (c *DPSClient) HostName() string { return c.r.cs.HostName }

// GetGroup returns enrollment group id.
func (c *DPSClient) GetGroup(ctx context.Context, id string) (*EnrollmentGroup, error) {
	return get[EnrollmentGroup](ctx, c, "/enrollmentGroups/"+seg(id))
}

// PutGroup creates or replaces g and returns the stored group. When g.ETag
// is set it is sent as If-Match, so the call fails with
// [ErrPreconditionFailed] if the group changed since it was read.
func (c *DPSClient) PutGroup(ctx context.Context, g *EnrollmentGroup) (*EnrollmentGroup, error) {
	return put[EnrollmentGroup](ctx, c, "/enrollmentGroups/"+seg(g.EnrollmentGroupID), g.ETag, g)
}

// DeleteGroup deletes enrollment group id, only if its ETag is etag when
// etag is not empty. Registration records of the group's devices stay.
func (c *DPSClient) DeleteGroup(ctx context.Context, id, etag string) error {
	return c.delete(ctx, "/enrollmentGroups/"+seg(id), etag)
}

// QueryGroups returns one page of enrollment groups (pageSize 0 means
// [DefaultPageSize]) starting at continuation ("" for the first page), and
// the continuation token of the next page ("" after the last).
func (c *DPSClient) QueryGroups(ctx context.Context, pageSize int, continuation string) ([]EnrollmentGroup, string, error) {
	return query[EnrollmentGroup](ctx, c, "/enrollmentGroups/query", pageSize, continuation)
}

// ListGroups returns every enrollment group, following continuation tokens.
func (c *DPSClient) ListGroups(ctx context.Context) ([]EnrollmentGroup, error) {
	return all(ctx, c.QueryGroups)
}

// GetEnrollment returns the individual enrollment of registrationID.
func (c *DPSClient) GetEnrollment(ctx context.Context, registrationID string) (*IndividualEnrollment, error) {
	return get[IndividualEnrollment](ctx, c, "/enrollments/"+seg(registrationID))
}

// PutEnrollment creates or replaces e (If-Match e.ETag when set) and
// returns the stored enrollment.
func (c *DPSClient) PutEnrollment(ctx context.Context, e *IndividualEnrollment) (*IndividualEnrollment, error) {
	return put[IndividualEnrollment](ctx, c, "/enrollments/"+seg(e.RegistrationID), e.ETag, e)
}

// DeleteEnrollment deletes the individual enrollment of registrationID
// (If-Match etag when not empty).
func (c *DPSClient) DeleteEnrollment(ctx context.Context, registrationID, etag string) error {
	return c.delete(ctx, "/enrollments/"+seg(registrationID), etag)
}

// QueryEnrollments returns one page of individual enrollments; see
// [DPSClient.QueryGroups] for paging.
func (c *DPSClient) QueryEnrollments(ctx context.Context, pageSize int, continuation string) ([]IndividualEnrollment, string, error) {
	return query[IndividualEnrollment](ctx, c, "/enrollments/query", pageSize, continuation)
}

// ListEnrollments returns every individual enrollment.
func (c *DPSClient) ListEnrollments(ctx context.Context) ([]IndividualEnrollment, error) {
	return all(ctx, c.QueryEnrollments)
}

// GetRegistration returns the registration record of registrationID.
func (c *DPSClient) GetRegistration(ctx context.Context, registrationID string) (*RegistrationState, error) {
	return get[RegistrationState](ctx, c, "/registrations/"+seg(registrationID))
}

// DeleteRegistration deletes the registration record of registrationID
// (If-Match etag when not empty), so the device's next registration is a
// fresh initial assignment.
func (c *DPSClient) DeleteRegistration(ctx context.Context, registrationID, etag string) error {
	return c.delete(ctx, "/registrations/"+seg(registrationID), etag)
}

// QueryRegistrations returns one page of the registration records of the
// devices that provisioned through enrollment group groupID; see
// [DPSClient.QueryGroups] for paging.
func (c *DPSClient) QueryRegistrations(ctx context.Context, groupID string, pageSize int, continuation string) ([]RegistrationState, string, error) {
	return query[RegistrationState](ctx, c, "/registrations/"+seg(groupID)+"/query", pageSize, continuation)
}

// ListRegistrations returns every registration record of group groupID.
func (c *DPSClient) ListRegistrations(ctx context.Context, groupID string) ([]RegistrationState, error) {
	return all(ctx, func(ctx context.Context, n int, cont string) ([]RegistrationState, string, error) {
		return c.QueryRegistrations(ctx, groupID, n, cont)
	})
}

// get reads the record at path.
func get[T any](ctx context.Context, c *DPSClient, path string) (*T, error) {
	return exchange[T](ctx, c.r, call{method: http.MethodGet, path: path})
}

// put stores in at path (If-Match etag when not empty) and returns the
// stored record.
func put[T any](ctx context.Context, c *DPSClient, path, etag string, in *T) (*T, error) {
	return exchange[T](ctx, c.r, call{method: http.MethodPut, path: path, header: ifMatch(etag), body: in})
}

func (c *DPSClient) delete(ctx context.Context, path, etag string) error {
	_, err := c.r.do(ctx, call{method: http.MethodDelete, path: path, header: ifMatch(etag)})
	return err
}

// query runs a DPS query ({"query":"*"}) for one page.
func query[T any](ctx context.Context, c *DPSClient, path string, pageSize int, continuation string) ([]T, string, error) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	h := http.Header{"X-Ms-Max-Item-Count": []string{strconv.Itoa(pageSize)}}
	if continuation != "" {
		h.Set("X-Ms-Continuation", continuation)
	}
	cl := call{method: http.MethodPost, path: path, header: h, body: map[string]string{"query": "*"}}
	resp, err := c.r.do(ctx, cl)
	if err != nil {
		return nil, "", err
	}
	var out []T
	if len(resp.body) > 0 {
		if err := decode(cl, resp, &out); err != nil {
			return nil, "", err
		}
	}
	return out, resp.header.Get("X-Ms-Continuation"), nil
}

// all follows continuation tokens until the last page.
func all[T any](ctx context.Context, page func(context.Context, int, string) ([]T, string, error)) ([]T, error) {
	var out []T
	cont := ""
	seen := map[string]bool{}
	for range maxPages {
		items, next, err := page(ctx, DefaultPageSize, cont)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("service: query: the service repeated continuation token %q", next)
		}
		seen[next] = true
		cont = next
	}
	return nil, fmt.Errorf("service: query: more than %d pages", maxPages)
}
