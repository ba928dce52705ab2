package emulator

import (
	"crypto/x509"
	"encoding/json"
	"time"
)

// The types below are the JSON bodies of the DPS and IoT Hub service REST
// APIs (DPS api-version 2021-10-01, IoT Hub 2021-04-12), with Azure's field
// names. Only the parts the emulator acts on are typed; the rest is kept as
// raw JSON so it round-trips.

// Provisioning and registration status values.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"

	RegUnassigned = "unassigned"
	RegAssigning  = "assigning"
	RegAssigned   = "assigned"
	RegFailed     = "failed"
	RegDisabled   = "disabled"

	SubstatusInitial     = "initialAssignment"
	SubstatusReprovision = "reprovisionedToInitialAssignment"
)

// Hub device authentication types.
const (
	AuthSAS        = "sas"
	AuthSelfSigned = "selfSigned"
	AuthCA         = "certificateAuthority"
	AuthNone       = "none"
)

// X509CertificateInfo describes a certificate the way DPS reports it.
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint"`
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IssuerName       string    `json:"issuerName"`
	NotBeforeUTC     time.Time `json:"notBeforeUtc"`
	NotAfterUTC      time.Time `json:"notAfterUtc"`
	SerialNumber     string    `json:"serialNumber"`
	Version          int       `json:"version"`
}

// X509CertificateWithInfo is one certificate of an attestation: the
// certificate as uploaded (base64 DER or PEM; write-only, DPS does not return
// it) and its read-only info.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509Certificates is a primary and optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CAReferences names CA certificates registered with DPS.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// X509Attestation holds the certificates of an X.509 attestation: device
// leaves (individual enrollments) or signing certificates (groups).
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// AttestationMechanism is an enrollment's attestation. The emulator
// implements type "x509"; tpm and symmetricKey are refused.
type AttestationMechanism struct {
	Type         string           `json:"type"`
	X509         *X509Attestation `json:"x509,omitempty"`
	TPM          json.RawMessage  `json:"tpm,omitempty"`
	SymmetricKey json.RawMessage  `json:"symmetricKey,omitempty"`
}

// InitialTwin is the twin a device gets when DPS creates it in the hub.
type InitialTwin struct {
	Tags       map[string]any         `json:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty"`
}

// InitialTwinProperties holds the initial desired properties.
type InitialTwinProperties struct {
	Desired map[string]any `json:"desired,omitempty"`
}

// ReprovisionPolicy says what happens when a registered device registers
// again.
type ReprovisionPolicy struct {
	UpdateHubAssignment *bool `json:"updateHubAssignment,omitempty"`
	MigrateDeviceData   *bool `json:"migrateDeviceData,omitempty"`
}

// DeviceCapabilities are a device's capabilities (IoT Edge or not).
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// EnrollmentGroup is a DPS enrollment group.
type EnrollmentGroup struct {
	EnrollmentGroupID          string               `json:"enrollmentGroupId"`
	Attestation                AttestationMechanism `json:"attestation"`
	Capabilities               *DeviceCapabilities  `json:"capabilities,omitempty"`
	IoTHubHostName             string               `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin         `json:"initialTwin,omitempty"`
	ETag                       string               `json:"etag,omitempty"`
	ProvisioningStatus         string               `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy   `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *time.Time           `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *time.Time           `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string               `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string             `json:"iotHubs,omitempty"`
	CustomAllocationDefinition json.RawMessage      `json:"customAllocationDefinition,omitempty"`
}

// IndividualEnrollment is a DPS individual enrollment, keyed by registration
// ID (case-insensitively).
type IndividualEnrollment struct {
	RegistrationID             string               `json:"registrationId"`
	DeviceID                   string               `json:"deviceId,omitempty"`
	RegistrationState          *RegistrationState   `json:"registrationState,omitempty"`
	Attestation                AttestationMechanism `json:"attestation"`
	Capabilities               *DeviceCapabilities  `json:"capabilities,omitempty"`
	IoTHubHostName             string               `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin         `json:"initialTwin,omitempty"`
	ETag                       string               `json:"etag,omitempty"`
	ProvisioningStatus         string               `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy   `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *time.Time           `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *time.Time           `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string               `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string             `json:"iotHubs,omitempty"`
	CustomAllocationDefinition json.RawMessage      `json:"customAllocationDefinition,omitempty"`
}

// RegistrationState is DPS's record of a device registration
// (DeviceRegistrationState).
type RegistrationState struct {
	RegistrationID         string     `json:"registrationId"`
	CreatedDateTimeUTC     *time.Time `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string     `json:"assignedHub,omitempty"`
	DeviceID               string     `json:"deviceId,omitempty"`
	Status                 string     `json:"status"`
	Substatus              string     `json:"substatus,omitempty"`
	ErrorCode              int        `json:"errorCode,omitempty"`
	ErrorMessage           string     `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *time.Time `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string     `json:"etag,omitempty"`
}

// registration is what the emulator stores per registration ID: the public
// state plus how the device was attested and how often it registered.
type registration struct {
	State             RegistrationState    `json:"state"`
	EnrollmentGroupID string               `json:"enrollmentGroupId,omitempty"`
	Individual        bool                 `json:"individual,omitempty"`
	Certificate       *X509CertificateInfo `json:"certificate,omitempty"`
	SigningCert       *X509CertificateInfo `json:"signingCertificate,omitempty"`
	Payload           json.RawMessage      `json:"payload,omitempty"`
}

// SymmetricKey holds a device's SAS keys (base64).
type SymmetricKey struct {
	PrimaryKey   *string `json:"primaryKey"`
	SecondaryKey *string `json:"secondaryKey"`
}

// X509Thumbprint holds a self-signed device's certificate thumbprints
// (SHA-1 or SHA-256, hex).
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// AuthenticationMechanism is how a hub device authenticates.
type AuthenticationMechanism struct {
	Type           string         `json:"type"`
	SymmetricKey   SymmetricKey   `json:"symmetricKey"`
	X509Thumbprint X509Thumbprint `json:"x509Thumbprint"`
}

// Device is an IoT Hub device identity.
type Device struct {
	DeviceID                   string                  `json:"deviceId"`
	GenerationID               string                  `json:"generationId"`
	ETag                       string                  `json:"etag"`
	ConnectionState            string                  `json:"connectionState"`
	Status                     string                  `json:"status"`
	StatusReason               *string                 `json:"statusReason"`
	ConnectionStateUpdatedTime time.Time               `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          time.Time               `json:"statusUpdatedTime"`
	LastActivityTime           time.Time               `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int                     `json:"cloudToDeviceMessageCount"`
	Authentication             AuthenticationMechanism `json:"authentication"`
	Capabilities               DeviceCapabilities      `json:"capabilities"`
}

// TwinProperties are a twin's desired and reported properties, each with its
// "$version" (and "$metadata" on the service API).
type TwinProperties struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

// Twin is a device twin as the service API shows it.
type Twin struct {
	DeviceID                  string             `json:"deviceId"`
	ETag                      string             `json:"etag"`
	DeviceETag                string             `json:"deviceEtag"`
	Status                    string             `json:"status"`
	StatusUpdateTime          time.Time          `json:"statusUpdateTime"`
	ConnectionState           string             `json:"connectionState"`
	LastActivityTime          time.Time          `json:"lastActivityTime"`
	CloudToDeviceMessageCount int                `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string             `json:"authenticationType"`
	X509Thumbprint            X509Thumbprint     `json:"x509Thumbprint"`
	Version                   int64              `json:"version"`
	Tags                      map[string]any     `json:"tags,omitempty"`
	Properties                TwinProperties     `json:"properties"`
	Capabilities              DeviceCapabilities `json:"capabilities"`
}

// twinRecord is the stored twin: properties without the "$" keys, and the
// versions and times kept beside them.
type twinRecord struct {
	Tags            map[string]any `json:"tags,omitempty"`
	Desired         map[string]any `json:"desired,omitempty"`
	Reported        map[string]any `json:"reported,omitempty"`
	DesiredVersion  int64          `json:"desiredVersion"`
	ReportedVersion int64          `json:"reportedVersion"`
	Version         int64          `json:"version"`
	DesiredUpdated  time.Time      `json:"desiredUpdated"`
	ReportedUpdated time.Time      `json:"reportedUpdated"`
}

// certInfo fills an X509CertificateInfo from a certificate.
func certInfo(c *x509.Certificate) *X509CertificateInfo {
	s1, s256 := thumbprints(c)
	return &X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   s1,
		SHA256Thumbprint: s256,
		IssuerName:       c.Issuer.String(),
		NotBeforeUTC:     c.NotBefore.UTC(),
		NotAfterUTC:      c.NotAfter.UTC(),
		SerialNumber:     c.SerialNumber.Text(16),
		Version:          c.Version,
	}
}
