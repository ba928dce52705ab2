package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// Backdate is how long before the issuing time a new certificate's validity
// starts, so that a board whose clock runs a little behind still accepts it.
const Backdate = 5 * time.Minute

// EncodePEM encodes certs as consecutive "CERTIFICATE" PEM blocks.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// pem.Encode only fails on invalid headers; there are none.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM decodes every "CERTIFICATE" block in data, in order.
// Blocks of other types (keys, parameters) are skipped; data without any
// certificate is an error wrapping [ErrNoCert].
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, errorf("pki: parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errorf("%w: no CERTIFICATE PEM block found", ErrNoCert)
	}
	return certs, nil
}

// ReadCertsFile reads the certificates in a PEM file (see [ParseCertsPEM]).
// A file without PEM blocks is parsed as one DER certificate, the form the
// Azure portal offers as ".cer".
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errorf("pki: read certificates: %w", err)
	}
	certs, err := ParseCertsPEM(data)
	if errors.Is(err, ErrNoCert) && len(data) > 0 && data[0] == 0x30 { // DER SEQUENCE
		c, derr := x509.ParseCertificate(data)
		if derr != nil {
			return nil, errorf("pki: read certificates %s: not PEM, and as DER: %w", path, derr)
		}
		return []*x509.Certificate{c}, nil
	}
	if err != nil {
		return nil, errorf("pki: read certificates %s: %w", path, err)
	}
	return certs, nil
}

// Thumbprints returns the SHA-1 and SHA-256 digests of the certificate's DER
// encoding in upper-case hex without separators, as the Azure portal and the
// IoT Hub registry show them.
func Thumbprints(c *x509.Certificate) (sha1Hex, sha256Hex string) {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s256[:]))
}

// randomSerial returns a positive random 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, errorf("pki: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID computes the key identifier of RFC 5280 section 4.2.1.2,
// method 1: the SHA-1 of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, errorf("pki: encode public key: %w", err)
	}
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, errorf("pki: decode public key: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// Verify checks that leafAndChain[0] chains up to one of roots through the
// other certificates of leafAndChain, that every certificate is valid at
// time at (zero means now) and that the leaf may be used for TLS client
// authentication. Errors wrap [ErrExpired], [ErrNotYetValid], [ErrUntrusted]
// or [ErrUsage] and name the certificate at fault.
func Verify(leafAndChain []*x509.Certificate, roots []*x509.Certificate, at time.Time) error {
	return VerifyFor(leafAndChain, roots, at, x509.ExtKeyUsageClientAuth)
}

// VerifyFor is [Verify] for another use of the leaf, such as
// x509.ExtKeyUsageServerAuth, or x509.ExtKeyUsageAny for no usage check.
func VerifyFor(leafAndChain []*x509.Certificate, roots []*x509.Certificate, at time.Time, usage x509.ExtKeyUsage) error {
	if len(leafAndChain) == 0 {
		return errorf("pki: verify: %w: empty chain", ErrNoCert)
	}
	if len(roots) == 0 {
		return errorf("pki: verify: %w: no trusted CA certificates given", ErrUntrusted)
	}
	if at.IsZero() {
		at = time.Now()
	}
	leaf := leafAndChain[0]
	// Check validity periods along the issuing path first: x509 reports an
	// expired CA only as "unknown authority", and an expired CA is a
	// different fix than an expired device.
	if err := pathValidity(leaf, leafAndChain[1:], roots, at); err != nil {
		return errorf("pki: verify %s: %w", describe(leaf), err)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range leafAndChain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err == nil {
		return nil
	}
	var (
		cie x509.CertificateInvalidError
		uae x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &cie) && cie.Reason == x509.Expired:
		return errorf("pki: verify %s: %w: %w", describe(leaf), ErrExpired, err)
	case errors.As(err, &cie) && cie.Reason == x509.IncompatibleUsage:
		return errorf("pki: verify %s: %w: it is not valid for %s (its extended key usages: %s)",
			describe(leaf), ErrUsage, ExtKeyUsageName(usage), extKeyUsages(leaf))
	case errors.As(err, &uae):
		return errorf("pki: verify %s: %w: no chain from issuer %q to the trusted CA (%s); is it the right CA, and does the chain include the intermediates?",
			describe(leaf), ErrUntrusted, leaf.Issuer.String(), describeAll(roots))
	case errors.As(err, &cie):
		return errorf("pki: verify %s: %w: %w", describe(leaf), ErrUntrusted, err)
	}
	return errorf("pki: verify %s: %w: %w", describe(leaf), ErrUntrusted, err)
}

// pathValidity follows the issuers of leaf through chain and roots (by
// signature) and checks each certificate's validity period at time at.
func pathValidity(leaf *x509.Certificate, chain, roots []*x509.Certificate, at time.Time) error {
	cur := leaf
	for range len(chain) + len(roots) + 1 {
		if err := checkValidity(cur, at); err != nil {
			return err
		}
		if containsCert(cur, roots) {
			return nil
		}
		next := issuerOf(cur, roots)
		if next == nil {
			next = issuerOf(cur, chain)
		}
		if next == nil || next.Equal(cur) {
			return nil
		}
		cur = next
	}
	return nil
}

// issuerOf returns the certificate of candidates that signed c, if any.
func issuerOf(c *x509.Certificate, candidates []*x509.Certificate) *x509.Certificate {
	for _, x := range candidates {
		if bytes.Equal(c.RawIssuer, x.RawSubject) && c.CheckSignatureFrom(x) == nil {
			return x
		}
	}
	return nil
}

// containsCert reports whether c is one of certs.
func containsCert(c *x509.Certificate, certs []*x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// checkValidity says whether c is valid at time at.
func checkValidity(c *x509.Certificate, at time.Time) error {
	if at.Before(c.NotBefore) {
		return errorf("%w: %s is valid only from %s", ErrNotYetValid, describe(c), c.NotBefore.UTC().Format(time.RFC3339))
	}
	if at.After(c.NotAfter) {
		return errorf("%w: %s expired at %s", ErrExpired, describe(c), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// describe names a certificate for error messages.
func describe(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", "CN="+c.Subject.CommonName)
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

func describeAll(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, describe(c))
	}
	return strings.Join(s, ", ")
}

// ExtKeyUsageName returns the short name of an extended key usage
// ("clientAuth", "serverAuth", ...).
func ExtKeyUsageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageAny:
		return "any"
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	case x509.ExtKeyUsageCodeSigning:
		return "codeSigning"
	case x509.ExtKeyUsageEmailProtection:
		return "emailProtection"
	case x509.ExtKeyUsageTimeStamping:
		return "timeStamping"
	case x509.ExtKeyUsageOCSPSigning:
		return "OCSPSigning"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

func extKeyUsages(c *x509.Certificate) string {
	var s []string
	for _, u := range c.ExtKeyUsage {
		s = append(s, ExtKeyUsageName(u))
	}
	for _, oid := range c.UnknownExtKeyUsage {
		s = append(s, oid.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
