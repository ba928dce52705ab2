package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPEMRoundTrip(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Intermediate: true})
	d := mustDevice(t, ca, "dev-1", DeviceOptions{})
	data := EncodePEM(d.Chain...)
	if n := strings.Count(string(data), "-----BEGIN CERTIFICATE-----"); n != 2 {
		t.Fatalf("EncodePEM of 2 certs wrote %d blocks", n)
	}
	got, err := ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(d.Leaf) || !got[1].Equal(ca.Issuer) {
		t.Errorf("ParseCertsPEM did not return the chain in order")
	}
	// Key blocks and text around blocks are skipped.
	keyPEM, _ := MarshalKeyPEM(d.Key)
	mixed := append(append([]byte("subject=CN=dev-1\n"), keyPEM...), data...)
	got, err = ParseCertsPEM(mixed)
	if err != nil || len(got) != 2 {
		t.Errorf("ParseCertsPEM(key + chain) = %d certs, %v; want 2", len(got), err)
	}
	if _, err := ParseCertsPEM(keyPEM); !errors.Is(err, ErrNoCert) {
		t.Errorf("ParseCertsPEM(key only) = %v, want ErrNoCert", err)
	}
	bad := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	if _, err := ParseCertsPEM(bad); err == nil || !strings.Contains(err.Error(), "certificate 1") {
		t.Errorf("ParseCertsPEM(garbage) = %v, want a parse error naming certificate 1", err)
	}
	if len(EncodePEM()) != 0 {
		t.Error("EncodePEM() is not empty")
	}
}

func TestReadCertsFile(t *testing.T) {
	dir := t.TempDir()
	ca := mustMemoryCA(t, CAOptions{})
	pemPath, derPath, junk := join(dir, "a.pem"), join(dir, "a.cer"), join(dir, "junk")
	writeTestFile(t, pemPath, EncodePEM(ca.Root), 0o644)
	writeTestFile(t, derPath, ca.Root.Raw, 0o644)
	writeTestFile(t, junk, []byte{0x30, 1, 2}, 0o644)
	for _, p := range []string{pemPath, derPath} {
		got, err := ReadCertsFile(p)
		if err != nil || len(got) != 1 || !got[0].Equal(ca.Root) {
			t.Errorf("ReadCertsFile(%s) = %d certs, %v", p, len(got), err)
		}
	}
	if _, err := ReadCertsFile(junk); err == nil || !strings.Contains(err.Error(), "as DER") {
		t.Errorf("ReadCertsFile(junk) = %v, want DER parse error", err)
	}
	if _, err := ReadCertsFile(join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadCertsFile(missing) = %v, want ErrNotExist", err)
	}
}

func TestThumbprints(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{})
	d := mustDevice(t, ca, "dev-1", DeviceOptions{})
	s1, s256 := Thumbprints(d.Leaf)
	if !regexp.MustCompile(`^[0-9A-F]{40}$`).MatchString(s1) {
		t.Errorf("SHA-1 thumbprint %q is not 40 upper-case hex digits", s1)
	}
	if !regexp.MustCompile(`^[0-9A-F]{64}$`).MatchString(s256) {
		t.Errorf("SHA-256 thumbprint %q is not 64 upper-case hex digits", s256)
	}
	r1, r256 := Thumbprints(ca.Root)
	if r1 == s1 || r256 == s256 {
		t.Error("different certificates have the same thumbprint")
	}
	// The openssl interop test compares the values with openssl's.
}

func TestVerify(t *testing.T) {
	flat := mustMemoryCA(t, CAOptions{Now: t0})
	inter := mustMemoryCA(t, CAOptions{Now: t0, Intermediate: true})
	other := mustMemoryCA(t, CAOptions{Now: t0, Intermediate: true})
	at := t0.Add(time.Hour)
	flatDev := mustDevice(t, flat, "flat-1", DeviceOptions{Now: t0})
	interDev := mustDevice(t, inter, "inter-1", DeviceOptions{Now: t0})
	srv, err := inter.IssueServer([]string{"localhost"}, DeviceOptions{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	expired := mustDevice(t, flat, "old-1", DeviceOptions{NotBefore: t0.AddDate(-2, 0, 0), NotAfter: t0.AddDate(-1, 0, 0)})
	future := mustDevice(t, flat, "new-1", DeviceOptions{NotBefore: t0.AddDate(0, 1, 0), NotAfter: t0.AddDate(1, 0, 0)})

	// An intermediate that expired, with a device that is still valid.
	shortInter := mustMemoryCA(t, CAOptions{Now: t0, Intermediate: true, Days: 10})
	longDev := mustDevice(t, shortInter, "long-1", DeviceOptions{NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0)})

	tests := []struct {
		name  string
		chain []*x509.Certificate
		roots []*x509.Certificate
		at    time.Time
		usage x509.ExtKeyUsage
		is    error
		want  string
	}{
		{"flat ok", flatDev.Chain, []*x509.Certificate{flat.Root}, at, x509.ExtKeyUsageClientAuth, nil, ""},
		{"intermediate ok", interDev.Chain, []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageClientAuth, nil, ""},
		{"intermediate as trust anchor", interDev.Chain[:1], []*x509.Certificate{inter.Issuer}, at, x509.ExtKeyUsageClientAuth, nil, ""},
		{"several roots", interDev.Chain, []*x509.Certificate{other.Root, inter.Root}, at, x509.ExtKeyUsageClientAuth, nil, ""},
		{"server ok", srv.Chain, []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageServerAuth, nil, ""},
		{"missing intermediate", interDev.Chain[:1], []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageClientAuth, ErrUntrusted, "include the intermediates"},
		{"wrong root", interDev.Chain, []*x509.Certificate{other.Root}, at, x509.ExtKeyUsageClientAuth, ErrUntrusted, `"CN=inter-1"`},
		{"expired leaf", expired.Chain, []*x509.Certificate{flat.Root}, at, x509.ExtKeyUsageClientAuth, ErrExpired, `"CN=old-1" expired at 2025-03-01`},
		{"not yet valid", future.Chain, []*x509.Certificate{flat.Root}, at, x509.ExtKeyUsageClientAuth, ErrNotYetValid, "valid only from 2026-04-01"},
		{"expired intermediate", longDev.Chain, []*x509.Certificate{shortInter.Root}, t0.AddDate(0, 0, 20), x509.ExtKeyUsageClientAuth, ErrExpired, "Intermediate\" expired"},
		{"server as client", srv.Chain, []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageClientAuth, ErrUsage, "not valid for clientAuth (its extended key usages: serverAuth)"},
		{"client as server", interDev.Chain, []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageServerAuth, ErrUsage, "not valid for serverAuth"},
		{"empty chain", nil, []*x509.Certificate{inter.Root}, at, x509.ExtKeyUsageClientAuth, ErrNoCert, "empty chain"},
		{"no roots", interDev.Chain, nil, at, x509.ExtKeyUsageClientAuth, ErrUntrusted, "no trusted CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.usage == x509.ExtKeyUsageClientAuth {
				err = Verify(tc.chain, tc.roots, tc.at)
			} else {
				err = VerifyFor(tc.chain, tc.roots, tc.at, tc.usage)
			}
			if tc.is == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("Verify = %v, want errors.Is %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %q, want it to contain %q", err, tc.want)
			}
		})
	}
	// Zero time means now: a certificate issued now verifies.
	now := mustDevice(t, flat, "now-1", DeviceOptions{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
	if err := Verify(now.Chain, []*x509.Certificate{flat.Root}, time.Time{}); err != nil {
		t.Errorf("Verify at zero time = %v", err)
	}
	y2k := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	ancient := mustDevice(t, flat, "y2k-1", DeviceOptions{NotBefore: y2k, NotAfter: y2k.AddDate(1, 0, 0)})
	if err := Verify(ancient.Chain, []*x509.Certificate{flat.Root}, time.Time{}); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify of a 2000 certificate at zero time = %v, want ErrExpired (zero means now)", err)
	}
}

func TestExtKeyUsageName(t *testing.T) {
	for u, want := range map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageClientAuth: "clientAuth", x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageAny: "any",
		x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsage(999): "usage(999)",
	} {
		if got := ExtKeyUsageName(u); got != want {
			t.Errorf("ExtKeyUsageName(%d) = %q, want %q", u, got, want)
		}
	}
}
