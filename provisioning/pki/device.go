package pki

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"
)

// File names in a device directory.
const (
	DeviceCertFile  = "cert.pem"
	DeviceChainFile = "chain.pem"
	DeviceKeyFile   = "key.pem"
)

// DefaultVerificationDays is the validity of a verification certificate when
// DeviceOptions.Days is zero: it is only needed once, while Azure verifies
// the CA.
const DefaultVerificationDays = 30

// DeviceOptions configures the certificates issued by a [CA].
type DeviceOptions struct {
	// Days is the validity in days (default [DefaultDeviceDays]).
	Days int
	// Key is the type of the new key (default [DefaultKeyType]).
	Key KeyType
	// Now is the issuing time; zero means time.Now(). The validity starts
	// [Backdate] earlier.
	Now time.Time
	// NotBefore and NotAfter, when set, replace the validity computed from
	// Now and Days, for tests that need expired or not yet valid
	// certificates. They are not checked against the issuer's validity.
	NotBefore, NotAfter time.Time
}

// Device is an issued certificate with its private key: a device identity,
// a server certificate or a verification certificate. It is read-only once
// built.
type Device struct {
	// ID is the subject CN: the registration ID for a device.
	ID string
	// Leaf is the certificate.
	Leaf *x509.Certificate
	// Chain is the leaf followed by the intermediates, what a TLS peer
	// sends.
	Chain []*x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
}

// TLSCertificate returns the leaf, the intermediates and the key as a
// tls.Certificate for a client or server configuration.
func (d *Device) TLSCertificate() tls.Certificate {
	chain := d.Chain
	if len(chain) == 0 {
		chain = []*x509.Certificate{d.Leaf}
	}
	c := tls.Certificate{PrivateKey: d.Key, Leaf: d.Leaf}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// validity resolves the certificate validity of opts for a certificate that
// must not outlive issuer.
func (o DeviceOptions) validity(issuer *x509.Certificate, defaultDays int) (notBefore, notAfter time.Time, err error) {
	days := o.Days
	if days == 0 {
		days = defaultDays
	}
	if days < 0 {
		return time.Time{}, time.Time{}, errorf("validity of %d days: use a positive number of days", days)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	notBefore = now.Add(-Backdate).UTC().Truncate(time.Second)
	notAfter = now.AddDate(0, 0, days).UTC().Truncate(time.Second)
	explicit := !o.NotBefore.IsZero() || !o.NotAfter.IsZero()
	if !o.NotBefore.IsZero() {
		notBefore = o.NotBefore.UTC()
	}
	if !o.NotAfter.IsZero() {
		notAfter = o.NotAfter.UTC()
	}
	if !notAfter.After(notBefore) {
		return time.Time{}, time.Time{}, errorf("validity ends (%s) before it starts (%s)", notAfter.Format(time.RFC3339), notBefore.Format(time.RFC3339))
	}
	if !explicit && notAfter.After(issuer.NotAfter) {
		return time.Time{}, time.Time{}, errorf("%w: it would expire %s, after its issuer %s (%s); use fewer days or renew the CA",
			ErrOutlivesIssuer, notAfter.Format(time.DateOnly), describe(issuer), issuer.NotAfter.UTC().Format(time.DateOnly))
	}
	return notBefore, notAfter, nil
}

// leafKeyUsage returns digitalSignature, plus keyEncipherment for RSA keys
// (TLS 1.2 RSA key exchange needs it).
func leafKeyUsage(pub crypto.PublicKey) x509.KeyUsage {
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return ku
}

// issueLeaf creates a key and a non-CA certificate from tmpl signed by
// issuer.
func issueLeaf(issuer *x509.Certificate, issuerKey crypto.Signer, chain []*x509.Certificate, tmpl *x509.Certificate, opts DeviceOptions, defaultDays int) (*Device, error) {
	if issuerKey == nil {
		return nil, ErrNoRootKey
	}
	nb, na, err := opts.validity(issuer, defaultDays)
	if err != nil {
		return nil, err
	}
	kt := opts.Key
	if kt == "" {
		kt = DefaultKeyType
	}
	key, err := GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = nb, na
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	tmpl.KeyUsage = leafKeyUsage(key.Public())
	leaf, err := sign(tmpl, issuer, key.Public(), issuerKey)
	if err != nil {
		return nil, err
	}
	full := make([]*x509.Certificate, 0, 1+len(chain))
	full = append(full, leaf)
	full = append(full, chain...)
	return &Device{ID: tmpl.Subject.CommonName, Leaf: leaf, Chain: full, Key: key}, nil
}

// IssueDevice creates a key and a device certificate for registration ID id
// (checked with [ValidateRegistrationID]): subject CN = id, extKeyUsage
// clientAuth, not a CA, signed by ca.Issuer. The device's Chain holds the
// leaf and ca.Chain.
func (ca *CA) IssueDevice(id string, opts DeviceOptions) (*Device, error) {
	if err := ValidateRegistrationID(id); err != nil {
		return nil, err
	}
	d, err := issueLeaf(ca.Issuer, ca.IssuerKey, ca.Chain, &x509.Certificate{
		Subject:     pkix.Name{CommonName: id},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, opts, DefaultDeviceDays)
	if err != nil {
		return nil, errorf("pki: issue device %s: %w", id, err)
	}
	return d, nil
}

// IssueServer creates a key and a TLS server certificate for hosts, each a
// DNS name or an IP address, all put in the subject alternative names; the
// first is also the subject CN. The certificate has extKeyUsage serverAuth
// and is signed by ca.Issuer.
func (ca *CA) IssueServer(hosts []string, opts DeviceOptions) (*Device, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pki: issue server certificate: no host names or addresses given")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h == "" || len(h) > 253:
			return nil, errorf("pki: issue server certificate: host name %q: use a DNS name of 1 to 253 characters or an IP address", h)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if err := checkCN(hosts[0]); err != nil {
		tmpl.Subject.CommonName = ""
	}
	d, err := issueLeaf(ca.Issuer, ca.IssuerKey, ca.Chain, tmpl, opts, DefaultDeviceDays)
	if err != nil {
		return nil, errorf("pki: issue server certificate for %s: %w", hosts[0], err)
	}
	return d, nil
}

// VerificationCert creates the proof-of-possession certificate Azure asks
// for after a CA certificate is uploaded: subject CN = code (the
// verification code Azure shows), signed by ca.Issuer, the certificate that
// is uploaded when devices are signed by an intermediate. Use
// [CA.VerificationCertFor] to sign with the root instead. The validity
// defaults to [DefaultVerificationDays].
func (ca *CA) VerificationCert(code string, opts DeviceOptions) (*Device, error) {
	if ca.HasIntermediate() {
		return ca.VerificationCertFor(LevelIntermediate, code, opts)
	}
	return ca.VerificationCertFor(LevelRoot, code, opts)
}

// VerificationCertFor is [CA.VerificationCert] signed by the CA certificate
// at level: the root, or the intermediate. Signing with the root needs the
// root key ([ErrNoRootKey] otherwise).
func (ca *CA) VerificationCertFor(level Level, code string, opts DeviceOptions) (*Device, error) {
	if code == "" {
		return nil, errors.New("pki: verification certificate: the verification code is empty; copy it from the Azure portal or 'az ... certificate generate-verification-code'")
	}
	if err := checkCN(code); err != nil {
		return nil, errorf("pki: verification certificate: verification code: %w", err)
	}
	var (
		issuer *x509.Certificate
		key    crypto.Signer
		chain  []*x509.Certificate
	)
	switch level {
	case LevelRoot:
		if ca.RootKey == nil {
			return nil, errorf("pki: verification certificate for the root: %w: put root.key back in the CA directory", ErrNoRootKey)
		}
		issuer, key = ca.Root, ca.RootKey
	case LevelIntermediate:
		if !ca.HasIntermediate() {
			return nil, errors.New("pki: verification certificate for the intermediate: this CA has no intermediate; verify the root instead")
		}
		issuer, key, chain = ca.Issuer, ca.IssuerKey, ca.Chain
	default:
		return nil, errorf("pki: verification certificate: unknown CA level %q: use %q or %q", level, LevelRoot, LevelIntermediate)
	}
	d, err := issueLeaf(issuer, key, chain, &x509.Certificate{
		Subject:     pkix.Name{CommonName: code},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, opts, DefaultVerificationDays)
	if err != nil {
		return nil, errorf("pki: verification certificate for the %s: %w", level, err)
	}
	return d, nil
}

// IssueMany issues a device certificate for each of ids with
// [CA.IssueDevice] on up to workers goroutines (workers <= 0 means
// GOMAXPROCS) and passes each to each, which is called from those
// goroutines concurrently and must be safe for that. All devices share one
// issuing time. The first error, from issuing or from each, stops the work
// and is returned; so does cancelling ctx. IssueMany returns only after its
// goroutines have finished.
func (ca *CA) IssueMany(ctx context.Context, ids []string, opts DeviceOptions, workers int, each func(*Device) error) error {
	for _, id := range ids {
		if err := ValidateRegistrationID(id); err != nil {
			return err
		}
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			d, err := ca.IssueDevice(id, opts)
			if err != nil {
				return err
			}
			return each(d)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return errorf("pki: issue devices: %w", err)
	}
	return nil
}

// WriteDevice writes d into dir/<d.ID>/ (created mode 0700): cert.pem,
// chain.pem and key.pem (mode 0600), each atomically. It returns that
// directory. Unless force is set it refuses, with an *ExistsError, to
// replace any of the three files.
func WriteDevice(dir string, d *Device, force bool) (devDir string, err error) {
	if err := ValidateRegistrationID(d.ID); err != nil {
		return "", errorf("pki: write device: %w", err)
	}
	devDir = filepath.Join(dir, d.ID)
	certPath := filepath.Join(devDir, DeviceCertFile)
	chainPath := filepath.Join(devDir, DeviceChainFile)
	keyPath := filepath.Join(devDir, DeviceKeyFile)
	if !force {
		if err := checkAbsent(certPath, chainPath, keyPath); err != nil {
			return "", errorf("pki: write device %s: %w", d.ID, err)
		}
	}
	keyPEM, err := MarshalKeyPEM(d.Key)
	if err != nil {
		return "", err
	}
	chain := d.Chain
	if len(chain) == 0 {
		chain = []*x509.Certificate{d.Leaf}
	}
	created, err := makePrivateDir(devDir)
	if err != nil {
		return "", errorf("pki: write device %s: %w", d.ID, err)
	}
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{keyPath, keyPEM, 0o600},
		{certPath, EncodePEM(d.Leaf), 0o644},
		{chainPath, EncodePEM(chain...), 0o644},
	} {
		if err := writeFileNoDirSync(f.path, f.data, f.perm, force); err != nil {
			return "", errorf("pki: write device %s: %w", d.ID, err)
		}
	}
	if err := syncNewDir(devDir, created); err != nil {
		return "", errorf("pki: write device %s: %w", d.ID, err)
	}
	return devDir, nil
}

// LoadDevice reads a device directory written by [WriteDevice]: chain.pem
// (or cert.pem when there is no chain.pem) and key.pem. It checks that
// cert.pem, if present, is the first certificate of chain.pem and that the
// key matches the leaf ([ErrKeyMismatch]). The ID is the leaf's subject CN.
// It does not check the key file's permissions ([CheckKeyPerm]).
func LoadDevice(devDir string) (*Device, error) {
	certPath := filepath.Join(devDir, DeviceCertFile)
	chainPath := filepath.Join(devDir, DeviceChainFile)
	keyPath := filepath.Join(devDir, DeviceKeyFile)
	var leafOnly []*x509.Certificate
	if _, err := os.Stat(certPath); err == nil {
		c, err := ReadCertsFile(certPath)
		if err != nil {
			return nil, errorf("pki: load device: %w", err)
		}
		leafOnly = c
	}
	chain, err := ReadCertsFile(chainPath)
	switch {
	case isNotExist(err) && leafOnly != nil:
		chain = leafOnly
	case isNotExist(err):
		return nil, errorf("%w: no %s or %s in %s", ErrNoCert, DeviceChainFile, DeviceCertFile, devDir)
	case err != nil:
		return nil, errorf("pki: load device: %w", err)
	}
	if leafOnly != nil && !leafOnly[0].Equal(chain[0]) {
		return nil, errorf("pki: load device: %s and the first certificate of %s differ; issue the device again", certPath, chainPath)
	}
	key, err := ReadKeyFile(keyPath)
	if err != nil {
		return nil, errorf("pki: load device: %w", err)
	}
	if !keyMatches(key, chain[0].PublicKey) {
		return nil, errorf("%w: %s is not the key of %s in %s", ErrKeyMismatch, keyPath, describe(chain[0]), devDir)
	}
	return &Device{ID: chain[0].Subject.CommonName, Leaf: chain[0], Chain: chain, Key: key}, nil
}
