package dps

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors for the outcomes callers branch on. Register's errors
// wrap them; check with errors.Is. Errors that match none of them (network
// failures, timeouts, protocol violations) are worth retrying with backoff.
var (
	// ErrUnauthorized means DPS refused the device's attestation: its
	// certificate is unknown, from a CA DPS does not trust, expired, or the
	// registration ID does not match it. It comes from a CONNACK refusal
	// (return codes 2, 4, 5), a TLS alert about the device's certificate,
	// or a 401 answer. Registering again with the same certificate will not
	// help until the enrollment or the certificate changes.
	ErrUnauthorized = errors.New("dps: attestation failed (device not authorized)")
	// ErrDisabled means the device's enrollment (individual or group) is
	// disabled: the operator deprovisioned it.
	ErrDisabled = errors.New("dps: enrollment disabled")
	// ErrServerUntrusted means the server's certificate could not be
	// verified: not signed by a trusted CA, not for the dialled name, or
	// not valid at the device's time. The error is a *TLSError.
	ErrServerUntrusted = errors.New("dps: server certificate not trusted")
	// ErrDeviceCertExpired means the server refused the device certificate
	// as expired (or not yet valid). It also matches ErrUnauthorized.
	ErrDeviceCertExpired = errors.New("dps: device certificate expired")
	// ErrTimeout means DPS did not answer a request (CONNACK, SUBACK,
	// PUBACK or the response) within the configured timeout.
	ErrTimeout = errors.New("dps: no answer from the server in time")
	// ErrProtocol means the server broke the DPS protocol: an answer that
	// cannot be parsed, a session present on a clean session, a refused
	// subscription.
	ErrProtocol = errors.New("dps: protocol error")
	// ErrConnectionLost means the connection dropped in the middle of the
	// registration.
	ErrConnectionLost = errors.New("dps: connection lost")
	// ErrStillAssigning means DPS was still assigning after the maximum
	// number of polls.
	ErrStillAssigning = errors.New("dps: still assigning")
	// ErrConfig means the Config is unusable; the message says which field.
	ErrConfig = errors.New("dps: invalid config")
)

// ThrottledError reports a 429 (throttled) or 5xx answer that persisted
// through the client's own retries within one Register call (see
// Config.ThrottleRetries). RetryAfter is what DPS asked for (zero when it
// did not say); the caller should wait at least that long, with its own
// backoff, before registering again.
type ThrottledError struct {
	// Status is the last status code: 429 or 5xx.
	Status int
	// RetryAfter is the wait DPS asked for in its last answer.
	RetryAfter time.Duration
	// ErrorCode, Message and TrackingID come from the error body, when
	// DPS sent one.
	ErrorCode  int
	Message    string
	TrackingID string
}

func (e *ThrottledError) Error() string {
	var b strings.Builder
	if e.Status == 429 {
		fmt.Fprintf(&b, "dps: throttled (status 429)")
	} else {
		fmt.Fprintf(&b, "dps: service unavailable (status %d)", e.Status)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %v", e.RetryAfter)
	}
	return b.String()
}

// FailedError reports a registration DPS refused for a reason other than
// throttling: an operation that ended with status "failed" (allocation
// failed, hub not linked, custom allocation error), or a 4xx answer with a
// DPS error body. A 401 also matches ErrUnauthorized, and an error that
// says the enrollment is disabled matches ErrDisabled.
type FailedError struct {
	// Status is the answer's status code (200 for a failed operation).
	Status int
	// ErrorCode is DPS's six-digit code, such as 401002 or 400209 (status
	// times 1000 plus a detail); zero when none was sent.
	ErrorCode int
	// Message is DPS's explanation.
	Message string
	// TrackingID identifies the request in DPS's logs (for support).
	TrackingID string
	// OperationID is the operation, for a failed operation.
	OperationID string
}

func (e *FailedError) Error() string {
	var b strings.Builder
	if e.OperationID != "" {
		fmt.Fprintf(&b, "dps: registration failed (operation %s", e.OperationID)
	} else {
		fmt.Fprintf(&b, "dps: registration refused (status %d", e.Status)
	}
	if e.ErrorCode != 0 {
		fmt.Fprintf(&b, ", error code %d", e.ErrorCode)
	}
	b.WriteString(")")
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.TrackingID != "" {
		fmt.Fprintf(&b, " [tracking id %s]", e.TrackingID)
	}
	return b.String()
}

// Is makes a 401 match ErrUnauthorized and a refusal that names a
// disabled enrollment match ErrDisabled.
func (e *FailedError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == 401 || e.ErrorCode/1000 == 401
	case ErrDisabled:
		return e.disabled()
	}
	return false
}

// disabled reports whether DPS said the enrollment is disabled. DPS has no
// dedicated status code for it: a 4xx body says so in its message.
func (e *FailedError) disabled() bool {
	return e.Status >= 400 && e.Status < 500 && strings.Contains(strings.ToLower(e.Message), "disabled")
}

// ConnackError reports a CONNECT refused by the server with a non-zero
// CONNACK return code. Codes 2 (identifier rejected), 4 (bad user name or
// password) and 5 (not authorized) match ErrUnauthorized: DPS answers so
// when the registration ID, the user name and the certificate disagree, or
// when it does not accept the certificate.
type ConnackError struct {
	// Code is the CONNACK return code (1 to 5).
	Code byte
	// CertNotValid is set when the device certificate is expired or not
	// yet valid by the device's own clock, the likely reason for the
	// refusal; the error then also matches ErrDeviceCertExpired.
	CertNotValid bool
	// Hint is the client's diagnosis, such as the certificate's validity.
	Hint string
}

func (e *ConnackError) Error() string {
	var what string
	switch e.Code {
	case 1:
		what = "unacceptable protocol version"
	case 2:
		what = "identifier rejected: the registration ID (client ID) is not accepted"
	case 3:
		what = "server unavailable"
	case 4:
		what = "bad user name or password: check the ID scope and registration ID"
	case 5:
		what = "not authorized: DPS does not accept this device certificate for this registration ID"
	default:
		what = "unknown refusal"
	}
	msg := fmt.Sprintf("dps: connection refused (CONNACK %d): %s", e.Code, what)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Is makes return codes 2, 4 and 5 match ErrUnauthorized (and
// ErrDeviceCertExpired when CertNotValid) and code 1 match ErrProtocol.
func (e *ConnackError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == 2 || e.Code == 4 || e.Code == 5
	case ErrDeviceCertExpired:
		return e.CertNotValid && (e.Code == 2 || e.Code == 4 || e.Code == 5)
	case ErrProtocol:
		return e.Code == 1
	}
	return false
}

// TLSProblem classifies a *TLSError.
type TLSProblem int

// The TLS problems Register tells apart.
const (
	// ServerUnknownAuthority: the server's chain does not lead to a
	// certificate in Config.RootCAs.
	ServerUnknownAuthority TLSProblem = iota + 1
	// ServerNameMismatch: the server's certificate is not for the host in
	// Config.Endpoint.
	ServerNameMismatch
	// ServerNotValidNow: the server's certificate is expired or not yet
	// valid at Config.Time; on a board this usually means the clock is
	// wrong.
	ServerNotValidNow
	// ServerCertInvalid: the server's certificate is unusable for another
	// reason (wrong key usage, malformed).
	ServerCertInvalid
	// DeviceCertRejected: the server refused the device certificate
	// (unknown CA, bad or unsupported certificate).
	DeviceCertRejected
	// DeviceCertExpired: the server refused the device certificate as
	// expired or not yet valid by its clock.
	DeviceCertExpired
	// HandshakeFailed: any other TLS failure (protocol version, cipher
	// suites).
	HandshakeFailed
)

func (p TLSProblem) String() string {
	switch p {
	case ServerUnknownAuthority:
		return "server certificate not signed by a trusted CA"
	case ServerNameMismatch:
		return "server certificate is for another host"
	case ServerNotValidNow:
		return "server certificate not valid at the device's time"
	case ServerCertInvalid:
		return "server certificate invalid"
	case DeviceCertRejected:
		return "server rejected the device certificate"
	case DeviceCertExpired:
		return "server rejected the device certificate as expired"
	case HandshakeFailed:
		return "TLS handshake failed"
	}
	return "TLS problem"
}

// TLSError reports a failed TLS connection to DPS with what went wrong, so
// the agent can say "server certificate not trusted" or "device
// certificate expired" rather than "handshake failed".
type TLSError struct {
	// Problem says which side's certificate, and why.
	Problem TLSProblem
	// Hint tells the operator what to check.
	Hint string
	// Err is the underlying error (an x509 or tls error).
	Err error
}

func (e *TLSError) Error() string {
	s := "dps: " + e.Problem.String()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Unwrap returns the x509 or tls error.
func (e *TLSError) Unwrap() error { return e.Err }

// Is matches ErrServerUntrusted for the server-side problems,
// ErrUnauthorized for the device-side ones and ErrDeviceCertExpired for
// DeviceCertExpired.
func (e *TLSError) Is(target error) bool {
	switch target {
	case ErrServerUntrusted:
		return e.Problem == ServerUnknownAuthority || e.Problem == ServerNameMismatch ||
			e.Problem == ServerNotValidNow || e.Problem == ServerCertInvalid
	case ErrUnauthorized:
		return e.Problem == DeviceCertRejected || e.Problem == DeviceCertExpired
	case ErrDeviceCertExpired:
		return e.Problem == DeviceCertExpired
	}
	return false
}
