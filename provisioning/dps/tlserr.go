package dps

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"
	"time"
)

// TLS alert codes (RFC 8446 §6.2) a server sends about the client's
// certificate.
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertAccessDenied           = 49
	alertCertificateRequired    = 116
)

// remoteAlert returns the TLS alert the peer sent, if err carries one.
// crypto/tls reports a received alert as a *net.OpError with Op "remote
// error" whose Err is its unexported uint8 alert type, so the code is read
// by reflection rather than by matching the message.
func remoteAlert(err error) (*net.OpError, uint8, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return nil, 0, false
	}
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 || v.Type().PkgPath() != "crypto/tls" {
		return nil, 0, false
	}
	return op, uint8(v.Uint()), true
}

// classifyTLS turns a connection error into a *TLSError when it is a
// certificate or handshake problem, and returns nil otherwise. leaf is the
// device certificate and now the device's time, used in the hints.
func classifyTLS(err error, serverName string, leaf *x509.Certificate, now time.Time) *TLSError {
	var (
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalid     x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &unknownAuth):
		return &TLSError{Problem: ServerUnknownAuthority, Err: unknownAuth,
			Hint: "add the CA that signed the DPS server certificate to the trust bundle; for Azure keep the Azure roots, for the emulator use its ca.pem"}
	case errors.As(err, &hostErr):
		return &TLSError{Problem: ServerNameMismatch, Err: hostErr,
			Hint: fmt.Sprintf("the endpoint host %q must be one of the certificate's names; check dps.endpoint", serverName)}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &TLSError{Problem: ServerNotValidNow, Err: invalid,
			Hint: fmt.Sprintf("the device's time is %s; if that is wrong, fix the clock (NTP or GPS) and retry", now.UTC().Format(time.RFC3339))}
	case errors.As(err, &invalid), errors.As(err, &verifyErr):
		return &TLSError{Problem: ServerCertInvalid, Err: err}
	}
	if op, code, ok := remoteAlert(err); ok {
		err = op // drop the wrappers of the MQTT library
		validity := ""
		if leaf != nil {
			validity = fmt.Sprintf("the device certificate %q is valid from %s to %s", leaf.Subject.CommonName,
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		switch code {
		case alertCertificateExpired:
			return &TLSError{Problem: DeviceCertExpired, Err: err,
				Hint: validity + "; issue a new device certificate"}
		case alertUnknownCA:
			return &TLSError{Problem: DeviceCertRejected, Err: err,
				Hint: "the server does not know the CA that issued the device certificate; check that the device's CA is uploaded and verified in DPS and that the chain file includes the intermediates"}
		case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked,
			alertCertificateUnknown, alertAccessDenied, alertCertificateRequired:
			return &TLSError{Problem: DeviceCertRejected, Err: err,
				Hint: "check the device certificate and chain; " + validity}
		}
		return &TLSError{Problem: HandshakeFailed, Err: err}
	}
	var (
		recErr   tls.RecordHeaderError
		alertErr tls.AlertError
	)
	if errors.As(err, &recErr) {
		return &TLSError{Problem: HandshakeFailed, Err: err,
			Hint: "the endpoint did not answer with TLS; check dps.endpoint and its port (8883)"}
	}
	if errors.As(err, &alertErr) {
		return &TLSError{Problem: HandshakeFailed, Err: err}
	}
	return nil
}
