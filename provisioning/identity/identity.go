package identity

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

// Identity is a device's X.509 identity: its certificate chain and the
// signer for the leaf's key. It is read-only once loaded.
type Identity struct {
	// Chain is the leaf certificate followed by the intermediates up to
	// (usually not including) the CA enrolled in DPS; the device sends all
	// of it in the TLS handshake.
	Chain []*x509.Certificate
	// Key signs with the leaf's private key. It is a crypto.Signer so that
	// a TPM or secure element can stand in for a key file.
	Key crypto.Signer
	// RegistrationID is the leaf's subject common name, which DPS requires
	// as the registration ID for X.509 attestation.
	RegistrationID string
}

// New checks chain and key the way [LoadFiles] does and returns them as an
// Identity. Use it for keys that do not come from a file.
func New(chain []*x509.Certificate, key crypto.Signer) (*Identity, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: empty certificate chain", ErrNoIdentity)
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no private key", ErrNoIdentity)
	}
	if err := checkChain(chain); err != nil {
		return nil, err
	}
	if err := checkKey(chain, key, "the private key"); err != nil {
		return nil, err
	}
	cn, err := leafCN(chain[0])
	if err != nil {
		return nil, err
	}
	return &Identity{Chain: chain, Key: key, RegistrationID: cn}, nil
}

// LoadFiles loads a device identity from a PEM certificate chain (leaf
// first, then intermediates) and a PEM private key. Each problem gets an
// error that says how to fix it:
//   - a missing file wraps [ErrNoIdentity] and fs.ErrNotExist;
//   - a key file readable by group or others wraps [ErrKeyPermissions] and
//     says "chmod 600 PATH";
//   - a key that is not the leaf's wraps [ErrKeyMismatch];
//   - certificates out of order wrap [ErrChainOrder];
//   - a leaf without a valid common name wraps [ErrNoCN].
func LoadFiles(certPath, keyPath string) (*Identity, error) {
	if _, err := os.Stat(certPath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: certificate chain file %s does not exist (point identity.cert at the device's PEM chain): %w", ErrNoIdentity, certPath, err)
		}
		return nil, fmt.Errorf("identity: certificate chain: %w", err)
	}
	if _, err := os.Stat(keyPath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: private key file %s does not exist (point identity.key at the device's PEM key): %w", ErrNoIdentity, keyPath, err)
		}
		return nil, fmt.Errorf("identity: private key: %w", err)
	}
	chain, err := pki.ReadCertsFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("identity: certificate chain %s: %w", certPath, err)
	}
	if err := pki.CheckKeyPerm(keyPath); err != nil {
		return nil, fmt.Errorf("identity: private key: %w", err)
	}
	key, err := pki.ReadKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("identity: private key %s: %w", keyPath, err)
	}
	if err := checkKey(chain, key, keyPath); err != nil {
		return nil, fmt.Errorf("%w (chain %s)", err, certPath)
	}
	if err := checkChain(chain); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, certPath)
	}
	cn, err := leafCN(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, certPath)
	}
	return &Identity{Chain: chain, Key: key, RegistrationID: cn}, nil
}

// checkKey makes sure key is the private half of the leaf, and recognises
// the common mistake of a chain whose leaf is not first.
func checkKey(chain []*x509.Certificate, key crypto.Signer, keyName string) error {
	if publicEqual(key.Public(), chain[0].PublicKey) {
		return nil
	}
	for i, c := range chain[1:] {
		if publicEqual(key.Public(), c.PublicKey) {
			return fmt.Errorf("%w: %s belongs to certificate %d (%s), not to the first one (%s); put the device certificate first, then its issuers", ErrChainOrder, keyName, i+2, describe(c), describe(chain[0]))
		}
	}
	return fmt.Errorf("%w: %s is not the key of %s; use the key generated with this certificate", ErrKeyMismatch, keyName, describe(chain[0]))
}

// checkChain makes sure every certificate is issued by the one after it.
func checkChain(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("%w: certificate %d (%s) is not issued by certificate %d (%s); list the device certificate first, then each issuer in turn: %v", ErrChainOrder, i+1, describe(chain[i]), i+2, describe(chain[i+1]), err)
		}
	}
	return nil
}

// leafCN returns the leaf's common name if it is a valid registration ID.
func leafCN(leaf *x509.Certificate) (string, error) {
	cn := leaf.Subject.CommonName
	if cn == "" {
		return "", fmt.Errorf("%w: the device certificate's subject (%s) has no CN; DPS uses the CN as the registration ID, so issue a certificate with CN=<registration id>", ErrNoCN, leaf.Subject)
	}
	if err := pki.ValidateRegistrationID(cn); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoCN, err)
	}
	return cn, nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func describe(c *x509.Certificate) string {
	return fmt.Sprintf("CN=%q issued by %q", c.Subject.CommonName, c.Issuer.CommonName)
}

// Leaf returns the device certificate, the first of the chain.
func (id *Identity) Leaf() *x509.Certificate { return id.Chain[0] }

// TLSCertificate returns the chain and key as a tls.Certificate for a
// client configuration. The private key is the Signer itself, so
// handshakes call Key.Sign and never see key bytes.
func (id *Identity) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: id.Key, Leaf: id.Chain[0]}
	for _, x := range id.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// Expiry returns the earliest NotAfter in the chain: from then on the
// servers reject the device until it gets a new certificate.
func (id *Identity) Expiry() time.Time {
	return slices.MinFunc(id.Chain, func(a, b *x509.Certificate) int { return a.NotAfter.Compare(b.NotAfter) }).NotAfter
}

// NotBefore returns the latest NotBefore in the chain: before then the
// servers reject the device. Since the certificate was issued after this
// time, it is also a lower bound for a plausible wall clock.
func (id *Identity) NotBefore() time.Time {
	return slices.MaxFunc(id.Chain, func(a, b *x509.Certificate) int { return a.NotBefore.Compare(b.NotBefore) }).NotBefore
}

// Thumbprint returns the SHA-256 digest of the leaf in upper-case hex, as
// the Azure portal shows it.
func (id *Identity) Thumbprint() string {
	sum := sha256.Sum256(id.Chain[0].Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// String describes the identity for people and logs: the registration ID,
// the leaf thumbprint and the validity. It never includes key material.
func (id *Identity) String() string {
	return fmt.Sprintf("%s (sha256 %s, valid %s to %s)", id.RegistrationID, id.Thumbprint(),
		id.NotBefore().UTC().Format(time.RFC3339), id.Expiry().UTC().Format(time.RFC3339))
}

// LogValue logs the identity as its registration ID, thumbprint, issuer
// and validity, never the key.
func (id *Identity) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("registration_id", id.RegistrationID),
		slog.String("sha256", id.Thumbprint()),
		slog.String("issuer", id.Chain[0].Issuer.CommonName),
		slog.Time("not_before", id.NotBefore()),
		slog.Time("not_after", id.Expiry()),
	)
}
