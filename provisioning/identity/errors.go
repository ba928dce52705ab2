package identity

import (
	"errors"
	"fmt"

	"github.com/coldchain/tracker/provisioning/pki"
)

// Sentinel errors for the outcomes callers branch on. Returned errors wrap
// them with the file or certificate involved; check with errors.Is.
var (
	// ErrNotProvisioned means no usable assignment is cached: the device
	// must register with DPS. A *CorruptError matches it too.
	ErrNotProvisioned = errors.New("identity: not provisioned")
	// ErrCorrupt means a state file exists but cannot be used. The error
	// is a *CorruptError.
	ErrCorrupt = errors.New("identity: state file corrupt")
	// ErrNoIdentity means no device certificate or key is present.
	ErrNoIdentity = errors.New("identity: no device identity")
	// ErrStateDir means the state directory cannot be used (not a
	// directory, or owned by another user).
	ErrStateDir = errors.New("identity: unusable state directory")
	// ErrChainOrder means the certificates of a chain file are not in
	// leaf-first order, each followed by its issuer.
	ErrChainOrder = errors.New("identity: certificate chain out of order")
	// ErrNoCN means the leaf certificate has no usable subject common name,
	// which DPS needs as the registration ID.
	ErrNoCN = errors.New("identity: certificate has no usable common name")
	// ErrNoTrust means no trusted CA certificate was configured.
	ErrNoTrust = errors.New("identity: no trusted CA certificates")

	// ErrKeyMismatch means the private key does not belong to the leaf
	// certificate. It is pki.ErrKeyMismatch.
	ErrKeyMismatch = pki.ErrKeyMismatch
	// ErrKeyPermissions means the private key file is readable or
	// writable by group or others. It is pki.ErrKeyPermissions.
	ErrKeyPermissions = pki.ErrKeyPermissions
)

// CorruptError reports a state file that exists but cannot be decoded or
// fails validation. It matches both [ErrCorrupt] and [ErrNotProvisioned]
// with errors.Is, so a caller that only asks "am I provisioned?" treats a
// damaged file as absent, while one that wants to report it can.
type CorruptError struct {
	// Path is the damaged file.
	Path string
	// Err says what is wrong with it.
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("identity: %s is corrupt (it will be replaced after the next registration): %v", e.Path, e.Err)
}

// Unwrap returns the decoding or validation error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is match ErrCorrupt and ErrNotProvisioned.
func (e *CorruptError) Is(target error) bool {
	return target == ErrCorrupt || target == ErrNotProvisioned
}
