package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names in a CA directory.
const (
	RootCertFile         = "root.pem"
	RootKeyFile          = "root.key"
	IntermediateCertFile = "intermediate.pem"
	IntermediateKeyFile  = "intermediate.key"
)

// Defaults for [CAOptions] and [DeviceOptions] fields left zero.
const (
	DefaultCADays     = 3650
	DefaultDeviceDays = 365 * 3
	DefaultCACN       = "Coldchain Tracker Root CA"
)

// CAOptions configures [InitCA] and [NewMemoryCA].
type CAOptions struct {
	// CN is the root's subject common name (default [DefaultCACN]). The
	// intermediate, if any, is named CN + " Intermediate".
	CN string
	// Key is the type of the CA keys (default [DefaultKeyType]).
	Key KeyType
	// Days is the validity of the CA certificates in days (default
	// [DefaultCADays]). The intermediate expires with the root.
	Days int
	// Intermediate adds an intermediate CA that signs device certificates,
	// so the root key can be kept offline.
	Intermediate bool
	// Now is the issuing time; zero means time.Now().
	Now time.Time
	// Force lets InitCA replace an existing CA in the directory.
	Force bool
}

// Level selects one of a CA's certificates.
type Level string

// The levels of a CA.
const (
	LevelRoot         Level = "root"
	LevelIntermediate Level = "intermediate"
)

// CA is a certificate authority that issues device and server certificates.
// It is safe for concurrent use.
type CA struct {
	// Dir is the directory the CA was loaded from or written to; empty for
	// a memory CA.
	Dir string
	// Root is the self-signed root certificate, the trust anchor.
	Root *x509.Certificate
	// RootKey is the root's private key; nil when the CA was loaded from a
	// directory whose root key is kept offline.
	RootKey crypto.Signer
	// Issuer signs device certificates: the intermediate if there is one,
	// else the root.
	Issuer *x509.Certificate
	// IssuerKey is Issuer's private key.
	IssuerKey crypto.Signer
	// Chain holds the certificates a device sends after its leaf: the
	// intermediate, or nothing.
	Chain []*x509.Certificate
}

// HasIntermediate reports whether device certificates are signed by an
// intermediate rather than by the root.
func (ca *CA) HasIntermediate() bool { return len(ca.Chain) > 0 }

// caFiles returns the paths of every file InitCA may write in dir.
func caFiles(dir string) []string {
	return []string{
		filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile),
		filepath.Join(dir, IntermediateCertFile), filepath.Join(dir, IntermediateKeyFile),
	}
}

// NewMemoryCA creates a CA like [InitCA] but writes nothing. Use it for
// throw-away CAs: the emulator's server CA in tests, the fleet simulator.
func NewMemoryCA(opts CAOptions) (*CA, error) {
	cn := opts.CN
	if cn == "" {
		cn = DefaultCACN
	}
	if err := checkCN(cn); err != nil {
		return nil, errorf("pki: create CA: %w", err)
	}
	kt := opts.Key
	if kt == "" {
		kt = DefaultKeyType
	}
	days := opts.Days
	if days == 0 {
		days = DefaultCADays
	}
	if days < 0 {
		return nil, errorf("pki: create CA: validity of %d days: use a positive number of days", days)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	notBefore := now.Add(-Backdate).UTC().Truncate(time.Second)
	notAfter := now.AddDate(0, 0, days).UTC().Truncate(time.Second)

	rootKey, err := GenerateKey(kt)
	if err != nil {
		return nil, errorf("pki: create CA: %w", err)
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	root, err := sign(rootTmpl, nil, rootKey.Public(), rootKey)
	if err != nil {
		return nil, errorf("pki: create root CA: %w", err)
	}
	ca := &CA{Root: root, RootKey: rootKey, Issuer: root, IssuerKey: rootKey}
	if !opts.Intermediate {
		return ca, nil
	}
	interKey, err := GenerateKey(kt)
	if err != nil {
		return nil, errorf("pki: create CA: %w", err)
	}
	interTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn + " Intermediate"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	inter, err := sign(interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, errorf("pki: create intermediate CA: %w", err)
	}
	ca.Issuer, ca.IssuerKey, ca.Chain = inter, interKey, []*x509.Certificate{inter}
	return ca, nil
}

// InitCA creates a CA (see [NewMemoryCA]) and writes it to dir, which is
// created if needed and made mode 0700; keys are written with mode 0600. It
// refuses, with an *ExistsError, to replace any CA file already in dir
// unless opts.Force is set; with Force, intermediate files left from an
// older CA are removed when the new one has no intermediate.
func InitCA(dir string, opts CAOptions) (*CA, error) {
	if !opts.Force {
		if err := checkAbsent(caFiles(dir)...); err != nil {
			return nil, errorf("pki: init CA: %w", err)
		}
	}
	ca, err := NewMemoryCA(opts)
	if err != nil {
		return nil, err
	}
	created, err := makePrivateDir(dir)
	if err != nil {
		return nil, errorf("pki: init CA in %s: %w", dir, err)
	}
	replace := opts.Force
	if !ca.HasIntermediate() && replace {
		for _, name := range []string{IntermediateCertFile, IntermediateKeyFile} {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !isNotExist(err) {
				return nil, errorf("pki: init CA: remove old %s: %w", name, err)
			}
		}
	}
	// Keys before certificates: a crash in between leaves a CA that LoadCA
	// rejects as mismatched rather than one that looks complete.
	if err := writeCertAndKey(dir, RootCertFile, RootKeyFile, ca.Root, ca.RootKey, replace); err != nil {
		return nil, err
	}
	if ca.HasIntermediate() {
		if err := writeCertAndKey(dir, IntermediateCertFile, IntermediateKeyFile, ca.Issuer, ca.IssuerKey, replace); err != nil {
			return nil, err
		}
	}
	if err := syncNewDir(dir, created); err != nil {
		return nil, errorf("pki: init CA: %w", err)
	}
	ca.Dir = dir
	return ca, nil
}

func writeCertAndKey(dir, certName, keyName string, cert *x509.Certificate, key crypto.Signer, replace bool) error {
	keyPEM, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFileNoDirSync(filepath.Join(dir, keyName), keyPEM, 0o600, replace); err != nil {
		return errorf("pki: init CA: %w", err)
	}
	if err := writeFileNoDirSync(filepath.Join(dir, certName), EncodePEM(cert), 0o644, replace); err != nil {
		return errorf("pki: init CA: %w", err)
	}
	return nil
}

// LoadCA reads the CA in dir. It checks that root.pem is a self-signed CA
// certificate, that intermediate.pem (if present) is a CA signed by the root,
// and that each key present matches its certificate. root.key may be absent
// when an intermediate is present (the root key kept offline). Errors say
// which file is missing or wrong: a missing directory or root.pem wraps
// [ErrNoCA], a key that does not match wraps [ErrKeyMismatch].
func LoadCA(dir string) (*CA, error) {
	fi, err := os.Stat(dir)
	switch {
	case isNotExist(err):
		return nil, errorf("%w in %s: the directory does not exist", ErrNoCA, dir)
	case err != nil:
		return nil, errorf("pki: load CA: %w", err)
	case !fi.IsDir():
		return nil, errorf("%w in %s: not a directory", ErrNoCA, dir)
	}
	rootPath := filepath.Join(dir, RootCertFile)
	if _, err := os.Stat(rootPath); isNotExist(err) {
		return nil, errorf("%w in %s: %s not found", ErrNoCA, dir, RootCertFile)
	}
	root, err := readCACert(rootPath)
	if err != nil {
		return nil, err
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, errorf("pki: load CA: %s is not a self-signed root: %w", rootPath, err)
	}
	ca := &CA{Dir: dir, Root: root, Issuer: root}
	rootKeyPath := filepath.Join(dir, RootKeyFile)
	ca.RootKey, err = readMatchingKey(rootKeyPath, root)
	if err != nil && !isNotExist(err) {
		return nil, err
	}

	interPath := filepath.Join(dir, IntermediateCertFile)
	if _, err := os.Stat(interPath); isNotExist(err) {
		if ca.RootKey == nil {
			return nil, errorf("pki: load CA: %s not found: the root key is needed to issue certificates when there is no intermediate", rootKeyPath)
		}
		ca.IssuerKey = ca.RootKey
		return ca, nil
	}
	inter, err := readCACert(interPath)
	if err != nil {
		return nil, err
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, errorf("pki: load CA: %s is not signed by %s (files from different CAs?): %w", interPath, rootPath, err)
	}
	interKeyPath := filepath.Join(dir, IntermediateKeyFile)
	interKey, err := readMatchingKey(interKeyPath, inter)
	if isNotExist(err) {
		return nil, errorf("pki: load CA: %s not found: the intermediate's key is needed to issue certificates", interKeyPath)
	}
	if err != nil {
		return nil, err
	}
	ca.Issuer, ca.IssuerKey, ca.Chain = inter, interKey, []*x509.Certificate{inter}
	return ca, nil
}

// readCACert reads the one certificate of a CA file and checks that it is
// a CA's.
func readCACert(path string) (*x509.Certificate, error) {
	c, err := readOneCert(path)
	if err != nil {
		return nil, errorf("pki: load CA: %w", err)
	}
	if !c.IsCA {
		return nil, errorf("pki: load CA: %s is not a CA certificate (basicConstraints CA:FALSE)", path)
	}
	return c, nil
}

// readOneCert reads a file that must hold exactly one certificate.
func readOneCert(path string) (*x509.Certificate, error) {
	certs, err := ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, errorf("pki: %s holds %d certificates, want 1", path, len(certs))
	}
	return certs[0], nil
}

// readMatchingKey reads the key at path and checks it belongs to cert. A
// missing file is returned as is (errors.Is fs.ErrNotExist).
func readMatchingKey(path string, cert *x509.Certificate) (crypto.Signer, error) {
	if _, err := os.Stat(path); err != nil {
		if isNotExist(err) {
			return nil, err
		}
	}
	key, err := ReadKeyFile(path)
	if err != nil {
		return nil, errorf("pki: load CA: %w", err)
	}
	if !keyMatches(key, cert.PublicKey) {
		return nil, errorf("%w: %s is not the key of %s (%s)", ErrKeyMismatch, path, describe(cert), filepath.Base(certPathFor(path)))
	}
	return key, nil
}

func certPathFor(keyPath string) string {
	return strings.TrimSuffix(keyPath, filepath.Ext(keyPath)) + ".pem"
}

// checkCN rejects common names x509 would encode but that break tools.
func checkCN(cn string) error {
	if len(cn) > 64 {
		return errorf("common name %q is %d characters long; the limit is 64", cn, len(cn))
	}
	for _, r := range cn {
		if r < 0x20 || r == 0x7f {
			return errorf("common name %q contains a control character", cn)
		}
	}
	return nil
}

// sign creates a certificate from tmpl for pub, signed by parent's key
// (parent nil: self-signed), filling in the serial number and the key
// identifiers.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.SubjectKeyId, err = subjectKeyID(pub); err != nil {
		return nil, err
	}
	if parent == nil {
		// A self-signed root names itself as authority, as openssl's
		// authorityKeyIdentifier=keyid:always does.
		tmpl.AuthorityKeyId = tmpl.SubjectKeyId
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, errorf("pki: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errorf("pki: parse new certificate: %w", err)
	}
	return c, nil
}
