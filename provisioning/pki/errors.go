package pki

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors for the outcomes callers branch on. Errors returned by the
// package wrap one of these (check with errors.Is) and add the file, the
// certificate or the rule involved.
var (
	// ErrNoCA means a directory holds no CA (missing directory or root.pem).
	ErrNoCA = errors.New("pki: no CA")
	// ErrExists means a file would be replaced without force. The error is
	// an *ExistsError carrying the path.
	ErrExists = errors.New("pki: file exists")
	// ErrKeyMismatch means a private key does not belong to the certificate
	// it was loaded with.
	ErrKeyMismatch = errors.New("pki: private key does not match certificate")
	// ErrKeyPermissions means a private key file is accessible by group or
	// others.
	ErrKeyPermissions = errors.New("pki: private key file is accessible by group or others")
	// ErrNoKey means a file holds no usable private key.
	ErrNoKey = errors.New("pki: no private key")
	// ErrNoCert means a file or buffer holds no certificate.
	ErrNoCert = errors.New("pki: no certificate")
	// ErrInvalidID means a registration ID breaks the DPS rules.
	ErrInvalidID = errors.New("pki: invalid registration id")
	// ErrKeyType means a key type name is not one of the supported ones.
	ErrKeyType = errors.New("pki: unsupported key type")
	// ErrNoRootKey means an operation needs the root's private key but the
	// CA was loaded without it (kept offline).
	ErrNoRootKey = errors.New("pki: root key not available")
	// ErrOutlivesIssuer means a certificate would stay valid after its
	// issuer expires.
	ErrOutlivesIssuer = errors.New("pki: certificate would outlive its issuer")
	// ErrExpired means a certificate in a chain had expired at the check time.
	ErrExpired = errors.New("pki: certificate expired")
	// ErrNotYetValid means a certificate in a chain was not yet valid at the
	// check time.
	ErrNotYetValid = errors.New("pki: certificate not yet valid")
	// ErrUntrusted means a chain does not lead to any of the given roots.
	ErrUntrusted = errors.New("pki: certificate not signed by a trusted CA")
	// ErrUsage means a certificate is not allowed for the requested use
	// (for example a server certificate presented as a client).
	ErrUsage = errors.New("pki: certificate not valid for this use")
)

// ExistsError reports a file that would be replaced without force.
type ExistsError struct {
	Path string
}

// Error names the file and says that force replaces it.
func (e *ExistsError) Error() string {
	return fmt.Sprintf("pki: %s exists; replace it only with force", e.Path)
}

// Is makes errors.Is(err, ErrExists) true.
func (e *ExistsError) Is(target error) bool { return target == ErrExists }

// errorf is fmt.Errorf for this package's messages, which start with
// "pki: ". It drops the "pki: " prefix of wrapped errors from the text, so
// context added at several levels reads "pki: load CA: read key ...: ..."
// instead of repeating the prefix. errors.Is and errors.As see the wrapped
// errors as with fmt.Errorf.
func errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	msg := err.Error()
	if !strings.Contains(msg, ": pki: ") {
		return err
	}
	return &prefixedError{msg: strings.ReplaceAll(msg, ": pki: ", ": "), err: err}
}

type prefixedError struct {
	msg string
	err error
}

func (e *prefixedError) Error() string { return e.msg }
func (e *prefixedError) Unwrap() error { return e.err }
