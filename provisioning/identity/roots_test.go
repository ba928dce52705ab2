package identity

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

// The published facts about Azure's roots. Serial numbers and SHA-1
// thumbprints are those of "Azure Certificate Authority details"
// (learn.microsoft.com/azure/security/fundamentals/azure-ca-details); the
// SHA-256 fingerprints are those of the Mozilla/CCADB root listings.
var azureRootFacts = []struct {
	cn, serial, sha1, sha256 string
	notAfter                 time.Time
}{
	{
		cn:       "DigiCert Global Root G2",
		serial:   "033AF1E6A711A9A0BB2864B11D09FAE5",
		sha1:     "DF3C24F9BFD666761B268073FE06D1CC8D4F82A4",
		sha256:   "CB3CCBB76031E5E0138F8DD39A23F9DE47FFC35E43C1144CEA27D46A5AB1CB5F",
		notAfter: time.Date(2038, 1, 15, 12, 0, 0, 0, time.UTC),
	},
	{
		cn:       "Microsoft RSA Root Certificate Authority 2017",
		serial:   "1ED397095FD8B4B347701EAABE7F45B3",
		sha1:     "73A5E64A3BFF8316FF0EDCCC618A906E4EAE4D74",
		sha256:   "C741F70F4B2A8D88BF2E71C14122EF53EF10EBA0CFA5E64CFA20F418853073E0",
		notAfter: time.Date(2042, 7, 18, 23, 0, 23, 0, time.UTC),
	},
}

func TestAzureRootsFingerprints(t *testing.T) {
	roots := AzureRoots()
	if len(roots) != len(azureRootFacts) {
		t.Fatalf("AzureRoots() has %d certificates, want %d", len(roots), len(azureRootFacts))
	}
	for i, want := range azureRootFacts {
		c := roots[i]
		t.Run(want.cn, func(t *testing.T) {
			if c.Subject.CommonName != want.cn {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, want.cn)
			}
			if got := strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())); strings.TrimLeft(got, "0") != strings.TrimLeft(want.serial, "0") {
				t.Errorf("serial = %s, want %s", got, want.serial)
			}
			s1 := sha1.Sum(c.Raw)
			if got := strings.ToUpper(hex.EncodeToString(s1[:])); got != want.sha1 {
				t.Errorf("SHA-1 = %s, want %s", got, want.sha1)
			}
			s256 := sha256.Sum256(c.Raw)
			if got := strings.ToUpper(hex.EncodeToString(s256[:])); got != want.sha256 {
				t.Errorf("SHA-256 = %s, want %s", got, want.sha256)
			}
			if !c.NotAfter.Equal(want.notAfter) {
				t.Errorf("NotAfter = %v, want %v", c.NotAfter, want.notAfter)
			}
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("not a CA certificate")
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
		})
	}
}

func TestAzureRootsAreCopies(t *testing.T) {
	a := AzureRoots()
	a[0] = nil
	if b := AzureRoots(); b[0] == nil {
		t.Fatal("AzureRoots() returned shared slice")
	}
}

func TestTrustPool(t *testing.T) {
	ca := newCA(t, false)
	srv, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, pki.EncodePEM(ca.Root), 0o644); err != nil {
		t.Fatal(err)
	}
	verifies := func(pool *x509.CertPool) bool {
		_, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err == nil
	}
	hasAzure := func(pool *x509.CertPool) bool {
		n := 0
		for _, r := range AzureRoots() {
			// A self-signed root verifies against a pool iff the pool holds it.
			if _, err := r.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
				n++
			}
		}
		return n == len(azureRootFacts)
	}

	pool, err := TrustPool(bundle, true)
	if err != nil {
		t.Fatalf("TrustPool(bundle, true): %v", err)
	}
	if !verifies(pool) || !hasAzure(pool) {
		t.Errorf("TrustPool(bundle, true): emulator verifies %v, Azure roots present %v; want both", verifies(pool), hasAzure(pool))
	}

	pool, err = TrustPool(bundle, false)
	if err != nil {
		t.Fatalf("TrustPool(bundle, false): %v", err)
	}
	if !verifies(pool) || hasAzure(pool) {
		t.Errorf("TrustPool(bundle, false): emulator verifies %v, Azure roots present %v; want true, false", verifies(pool), hasAzure(pool))
	}

	pool, err = TrustPool("", true)
	if err != nil {
		t.Fatalf("TrustPool(\"\", true): %v", err)
	}
	if verifies(pool) || !hasAzure(pool) {
		t.Errorf("TrustPool(\"\", true): emulator verifies %v, Azure roots present %v; want false, true", verifies(pool), hasAzure(pool))
	}

	if _, err := TrustPool("", false); !errors.Is(err, ErrNoTrust) {
		t.Errorf("TrustPool(\"\", false) = %v, want ErrNoTrust", err)
	}
	if _, err := TrustPool(filepath.Join(dir, "missing.pem"), true); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("TrustPool(missing) = %v, want an error naming the file", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := TrustPool(junk, true); !errors.Is(err, pki.ErrNoCert) {
		t.Errorf("TrustPool(junk) = %v, want pki.ErrNoCert", err)
	}
}
