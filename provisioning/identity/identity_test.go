package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

func newCA(t testing.TB, intermediate bool) *pki.CA {
	t.Helper()
	ca, err := pki.NewMemoryCA(pki.CAOptions{Intermediate: intermediate})
	if err != nil {
		t.Fatalf("NewMemoryCA: %v", err)
	}
	return ca
}

// writeFiles writes a chain and a key into dir and returns their paths.
func writeFiles(t testing.TB, dir string, chain []*x509.Certificate, keyPEM []byte, keyMode os.FileMode) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, "chain.pem")
	keyPath = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pki.EncodePEM(chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// os.WriteFile's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(keyPath, keyMode); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func keyPEM(t testing.TB, d *pki.Device) []byte {
	t.Helper()
	b, err := pki.MarshalKeyPEM(d.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadFiles(t *testing.T) {
	ca := newCA(t, true)
	dev, err := ca.IssueDevice("tracker-0001", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := writeFiles(t, t.TempDir(), dev.Chain, keyPEM(t, dev), 0o600)

	id, err := LoadFiles(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadFiles: %v", err)
	}
	if id.RegistrationID != "tracker-0001" {
		t.Errorf("RegistrationID = %q, want tracker-0001", id.RegistrationID)
	}
	if len(id.Chain) != 2 || !id.Chain[0].Equal(dev.Leaf) || !id.Chain[1].Equal(ca.Issuer) {
		t.Errorf("Chain = %d certificates, want leaf then intermediate", len(id.Chain))
	}
	tc := id.TLSCertificate()
	if len(tc.Certificate) != 2 || !bytes.Equal(tc.Certificate[0], dev.Leaf.Raw) || !bytes.Equal(tc.Certificate[1], ca.Issuer.Raw) {
		t.Errorf("TLSCertificate().Certificate does not hold leaf then intermediate")
	}
	if tc.Leaf != id.Chain[0] || tc.PrivateKey != id.Key {
		t.Errorf("TLSCertificate() Leaf/PrivateKey not the identity's")
	}
	// Expiry is the earliest NotAfter of the chain, NotBefore the latest NotBefore.
	if want := minTime(dev.Leaf.NotAfter, ca.Issuer.NotAfter); !id.Expiry().Equal(want) {
		t.Errorf("Expiry() = %v, want %v", id.Expiry(), want)
	}
	if want := maxTime(dev.Leaf.NotBefore, ca.Issuer.NotBefore); !id.NotBefore().Equal(want) {
		t.Errorf("NotBefore() = %v, want %v", id.NotBefore(), want)
	}

	// The key is usable as the TLS signer: sign and verify with the leaf.
	digest := make([]byte, 32)
	sig, err := id.Key.Sign(rand.Reader, digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(dev.Leaf.PublicKey.(*ecdsa.PublicKey), digest, sig) {
		t.Errorf("signature by Identity.Key does not verify with the leaf")
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestLoadFilesErrors(t *testing.T) {
	ca := newCA(t, true)
	dev, err := ca.IssueDevice("tracker-0002", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.IssueDevice("tracker-0003", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noCN := certWithoutCN(t, ca)

	tests := []struct {
		name    string
		setup   func(dir string) (certPath, keyPath string)
		wantIs  error
		wantMsg []string // substrings the message must contain
	}{
		{
			name: "missing cert",
			setup: func(dir string) (string, string) {
				_, k := writeFiles(t, dir, dev.Chain, keyPEM(t, dev), 0o600)
				return filepath.Join(dir, "nope.pem"), k
			},
			wantIs:  ErrNoIdentity,
			wantMsg: []string{"nope.pem", "does not exist"},
		},
		{
			name: "missing key",
			setup: func(dir string) (string, string) {
				c, _ := writeFiles(t, dir, dev.Chain, keyPEM(t, dev), 0o600)
				return c, filepath.Join(dir, "nokey.pem")
			},
			wantIs:  fs.ErrNotExist,
			wantMsg: []string{"nokey.pem", "does not exist"},
		},
		{
			name: "key world readable",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, dev.Chain, keyPEM(t, dev), 0o644)
			},
			wantIs:  ErrKeyPermissions,
			wantMsg: []string{"chmod 600 "},
		},
		{
			name: "key group readable",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, dev.Chain, keyPEM(t, dev), 0o640)
			},
			wantIs:  ErrKeyPermissions,
			wantMsg: []string{"chmod 600 "},
		},
		{
			name: "key of another device",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, dev.Chain, keyPEM(t, other), 0o600)
			},
			wantIs:  ErrKeyMismatch,
			wantMsg: []string{"tracker-0002"},
		},
		{
			name: "chain reversed",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, []*x509.Certificate{ca.Issuer, dev.Leaf}, keyPEM(t, dev), 0o600)
			},
			wantIs:  ErrChainOrder,
			wantMsg: []string{"first"},
		},
		{
			name: "intermediate of another CA",
			setup: func(dir string) (string, string) {
				ca2 := newCA(t, true)
				return writeFiles(t, dir, []*x509.Certificate{dev.Leaf, ca2.Issuer}, keyPEM(t, dev), 0o600)
			},
			wantIs:  ErrChainOrder,
			wantMsg: []string{"not issued by"},
		},
		{
			name: "no common name",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, []*x509.Certificate{noCN.Leaf, ca.Issuer}, keyPEM(t, noCN), 0o600)
			},
			wantIs:  ErrNoCN,
			wantMsg: []string{"CN"},
		},
		{
			name: "no certificate in file",
			setup: func(dir string) (string, string) {
				c, k := writeFiles(t, dir, dev.Chain, keyPEM(t, dev), 0o600)
				if err := os.WriteFile(c, []byte("hello\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return c, k
			},
			wantIs: pki.ErrNoCert,
		},
		{
			name: "no key in key file",
			setup: func(dir string) (string, string) {
				return writeFiles(t, dir, dev.Chain, pki.EncodePEM(dev.Leaf), 0o600)
			},
			wantIs: pki.ErrNoKey,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, keyPath := tt.setup(t.TempDir())
			id, err := LoadFiles(certPath, keyPath)
			if err == nil {
				t.Fatalf("LoadFiles = %v, nil; want error", id)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("LoadFiles error = %v, want errors.Is %v", err, tt.wantIs)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("LoadFiles error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Errorf("error contains key material: %q", err)
			}
		})
	}
}

func TestLoadFilesPermissionMessageNamesPath(t *testing.T) {
	ca := newCA(t, false)
	dev, err := ca.IssueDevice("tracker-0004", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, keyPath := writeFiles(t, t.TempDir(), dev.Chain, keyPEM(t, dev), 0o604)
	certPath := filepath.Join(filepath.Dir(keyPath), "chain.pem")
	_, err = LoadFiles(certPath, keyPath)
	if want := "chmod 600 " + keyPath; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("LoadFiles error = %v, want it to say %q", err, want)
	}
}

// certWithoutCN issues a client certificate with an empty subject CN.
func certWithoutCN(t testing.TB, ca *pki.CA) *pki.Device {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{Organization: []string{"no cn"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuer, key.Public(), ca.IssuerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Device{Leaf: leaf, Chain: []*x509.Certificate{leaf, ca.Issuer}, Key: key}
}

func TestNew(t *testing.T) {
	ca := newCA(t, true)
	dev, err := ca.IssueDevice("tracker-0005", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := New(dev.Chain, dev.Key)
	if err != nil || id.RegistrationID != "tracker-0005" {
		t.Fatalf("New = %v, %v; want tracker-0005", id, err)
	}
	if _, err := New(nil, dev.Key); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("New(nil chain) = %v, want ErrNoIdentity", err)
	}
	if _, err := New(dev.Chain, nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("New(nil key) = %v, want ErrNoIdentity", err)
	}
	other, err := ca.IssueDevice("tracker-0006", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(dev.Chain, other.Key); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("New(other key) = %v, want ErrKeyMismatch", err)
	}
}

func TestIdentityLogging(t *testing.T) {
	ca := newCA(t, false)
	dev, err := ca.IssueDevice("tracker-0007", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := New(dev.Chain, dev.Key)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("identity", "id", id)
	out := buf.String()
	_, sha := pki.Thumbprints(dev.Leaf)
	for _, want := range []string{"tracker-0007", sha} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s does not contain %q", out, want)
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(dev.Key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dev.Key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{string(keyPEM(t, dev)), fmt.Sprintf("%x", der), fmt.Sprintf("%x", raw), fmt.Sprintf("%X", raw)} {
		if strings.Contains(out, secret) || strings.Contains(id.String(), secret) {
			t.Errorf("identity log or String() contains key material")
		}
	}
	if !strings.Contains(id.String(), sha) {
		t.Errorf("String() = %q, want the thumbprint %s", id.String(), sha)
	}
}
