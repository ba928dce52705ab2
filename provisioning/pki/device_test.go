package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIssueDevice(t *testing.T) {
	for _, inter := range []bool{false, true} {
		ca := mustMemoryCA(t, CAOptions{Now: t0, Intermediate: inter})
		d := mustDevice(t, ca, "container-0001", DeviceOptions{Now: t0})
		l := d.Leaf
		if d.ID != "container-0001" || l.Subject.CommonName != "container-0001" {
			t.Errorf("ID %q, CN %q, want container-0001", d.ID, l.Subject.CommonName)
		}
		if l.IsCA || !l.BasicConstraintsValid {
			t.Errorf("leaf IsCA=%v BasicConstraintsValid=%v, want CA:FALSE present", l.IsCA, l.BasicConstraintsValid)
		}
		if l.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("ECDSA leaf KeyUsage = %b, want digitalSignature only", l.KeyUsage)
		}
		if !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("ExtKeyUsage = %v, want [clientAuth]", l.ExtKeyUsage)
		}
		if !bytes.Equal(l.AuthorityKeyId, ca.Issuer.SubjectKeyId) || len(l.SubjectKeyId) != 20 {
			t.Errorf("AKI %x (issuer SKI %x), SKI %x", l.AuthorityKeyId, ca.Issuer.SubjectKeyId, l.SubjectKeyId)
		}
		if err := l.CheckSignatureFrom(ca.Issuer); err != nil {
			t.Errorf("leaf not signed by Issuer: %v", err)
		}
		if !l.NotBefore.Equal(t0.Add(-Backdate)) || !l.NotAfter.Equal(t0.AddDate(0, 0, DefaultDeviceDays)) {
			t.Errorf("validity %v..%v, want %v..%v", l.NotBefore, l.NotAfter, t0.Add(-Backdate), t0.AddDate(0, 0, DefaultDeviceDays))
		}
		if want := 1 + len(ca.Chain); len(d.Chain) != want || d.Chain[0] != l {
			t.Fatalf("Chain has %d certs, want leaf + %d", len(d.Chain), len(ca.Chain))
		}
		if inter && !d.Chain[1].Equal(ca.Issuer) {
			t.Error("Chain[1] is not the intermediate")
		}
		if !keyMatches(d.Key, l.PublicKey) {
			t.Error("Key does not match the leaf")
		}
		if err := Verify(d.Chain, []*x509.Certificate{ca.Root}, t0); err != nil {
			t.Errorf("Verify(new device) = %v", err)
		}
	}
}

func TestIssueDeviceOptions(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Now: t0, Days: 400})
	rsaDev := mustDevice(t, ca, "rsa-1", DeviceOptions{Now: t0, Key: KeyRSA2048, Days: 10})
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; rsaDev.Leaf.KeyUsage != want {
		t.Errorf("RSA leaf KeyUsage = %b, want digitalSignature|keyEncipherment", rsaDev.Leaf.KeyUsage)
	}
	if got := KeyTypeOf(rsaDev.Leaf.PublicKey); got != "rsa-2048" {
		t.Errorf("key type %s, want rsa-2048", got)
	}
	if !rsaDev.Leaf.NotAfter.Equal(t0.AddDate(0, 0, 10)) {
		t.Errorf("NotAfter %v, want 10 days after t0", rsaDev.Leaf.NotAfter)
	}
	a := mustDevice(t, ca, "same-1", DeviceOptions{Now: t0, Days: 1})
	b := mustDevice(t, ca, "same-1", DeviceOptions{Now: t0, Days: 1})
	if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Error("two certificates got the same serial")
	}

	for _, tc := range []struct {
		name string
		id   string
		opts DeviceOptions
		is   error
		want string
	}{
		{"invalid id", "bad id", DeviceOptions{}, ErrInvalidID, "' '"},
		{"outlives issuer", "dev-1", DeviceOptions{Now: t0}, ErrOutlivesIssuer, "after its issuer"},
		{"negative days", "dev-1", DeviceOptions{Now: t0, Days: -3}, nil, "positive number of days"},
		{"bad key", "dev-1", DeviceOptions{Now: t0, Days: 1, Key: "rsa-512"}, ErrKeyType, "rsa-512"},
		{"end before start", "dev-1", DeviceOptions{NotBefore: t0, NotAfter: t0.Add(-time.Hour)}, nil, "before it starts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.IssueDevice(tc.id, tc.opts)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("IssueDevice(%q, %+v) = %v, want error %v containing %q", tc.id, tc.opts, err, tc.is, tc.want)
			}
		})
	}
	// Explicit validity may outlive the issuer (tests of expiry handling).
	if _, err := ca.IssueDevice("dev-2", DeviceOptions{NotBefore: t0, NotAfter: t0.AddDate(5, 0, 0)}); err != nil {
		t.Errorf("IssueDevice with explicit NotAfter = %v", err)
	}
}

func TestIssueServer(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Intermediate: true})
	s, err := ca.IssueServer([]string{"localhost", "127.0.0.1", "::1", "emulator.local"}, DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Leaf
	if l.Subject.CommonName != "localhost" || !slices.Equal(l.DNSNames, []string{"localhost", "emulator.local"}) {
		t.Errorf("CN %q DNSNames %v", l.Subject.CommonName, l.DNSNames)
	}
	if len(l.IPAddresses) != 2 || !l.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !l.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses %v", l.IPAddresses)
	}
	if !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || l.IsCA {
		t.Errorf("EKU %v IsCA %v, want [serverAuth], not a CA", l.ExtKeyUsage, l.IsCA)
	}
	if err := l.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1): %v", err)
	}
	if _, err := ca.IssueServer(nil, DeviceOptions{}); err == nil || !strings.Contains(err.Error(), "no host names") {
		t.Errorf("IssueServer(nil) = %v", err)
	}
	if _, err := ca.IssueServer([]string{"ok", ""}, DeviceOptions{}); err == nil || !strings.Contains(err.Error(), `host name ""`) {
		t.Errorf("IssueServer with empty host = %v", err)
	}
}

// TestMutualTLS runs a real TLS 1.2+ handshake on 127.0.0.1 between a server
// certificate and a device certificate from one CA, as the emulator and the
// device do.
func TestMutualTLS(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			ca := mustMemoryCA(t, CAOptions{Intermediate: true, Key: kt})
			srv, err := ca.IssueServer([]string{"127.0.0.1"}, DeviceOptions{Key: kt})
			if err != nil {
				t.Fatal(err)
			}
			dev := mustDevice(t, ca, "container-0042", DeviceOptions{Key: kt})
			roots := x509.NewCertPool()
			roots.AddCert(ca.Root)

			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{srv.TLSCertificate()},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    roots,
				MinVersion:   tls.VersionTLS12,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				cn    string
				chain int
				err   error
			}
			done := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- result{err: err}
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
					done <- result{err: err}
					return
				}
				if err := tc.Handshake(); err != nil {
					done <- result{err: err}
					return
				}
				st := tc.ConnectionState()
				done <- result{cn: st.PeerCertificates[0].Subject.CommonName, chain: len(st.PeerCertificates)}
			}()
			conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
				RootCAs:      roots,
				Certificates: []tls.Certificate{dev.TLSCertificate()},
				MinVersion:   tls.VersionTLS12,
			})
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			conn.Close()
			r := <-done
			if r.err != nil {
				t.Fatalf("server handshake: %v", r.err)
			}
			if r.cn != "container-0042" || r.chain != 2 {
				t.Errorf("server saw CN %q with %d certificates, want container-0042 with leaf + intermediate", r.cn, r.chain)
			}
		})
	}
}

func TestTLSCertificate(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Intermediate: true})
	d := mustDevice(t, ca, "dev-1", DeviceOptions{})
	c := d.TLSCertificate()
	if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[0], d.Leaf.Raw) || !bytes.Equal(c.Certificate[1], ca.Issuer.Raw) {
		t.Errorf("TLSCertificate has %d certificates, want leaf then intermediate", len(c.Certificate))
	}
	if c.Leaf != d.Leaf || c.PrivateKey != d.Key {
		t.Error("TLSCertificate Leaf or PrivateKey not set")
	}
	bare := (&Device{Leaf: d.Leaf, Key: d.Key}).TLSCertificate()
	if len(bare.Certificate) != 1 {
		t.Errorf("TLSCertificate without Chain has %d certificates, want the leaf", len(bare.Certificate))
	}
}

func TestVerificationCert(t *testing.T) {
	const code = "5A1C9F3B2E7D4A60B8C1D2E3F4A5B6C7D8E9F0A1B2C3D4E5"
	flat := mustMemoryCA(t, CAOptions{})
	inter := mustMemoryCA(t, CAOptions{Intermediate: true})
	for _, tc := range []struct {
		name   string
		ca     *CA
		level  Level
		signer *x509.Certificate
	}{
		{"flat default", flat, "", flat.Root},
		{"intermediate default", inter, "", inter.Issuer},
		{"root of intermediate CA", inter, LevelRoot, inter.Root},
		{"intermediate", inter, LevelIntermediate, inter.Issuer},
		{"root of flat CA", flat, LevelRoot, flat.Root},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				d   *Device
				err error
			)
			if tc.level == "" {
				d, err = tc.ca.VerificationCert(code, DeviceOptions{})
			} else {
				d, err = tc.ca.VerificationCertFor(tc.level, code, DeviceOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Leaf.Subject.CommonName != code || d.Leaf.IsCA {
				t.Errorf("CN %q IsCA %v", d.Leaf.Subject.CommonName, d.Leaf.IsCA)
			}
			if err := d.Leaf.CheckSignatureFrom(tc.signer); err != nil {
				t.Errorf("not signed by %s: %v", tc.signer.Subject, err)
			}
			if v := d.Leaf.NotAfter.Sub(d.Leaf.NotBefore) - Backdate; v.Round(time.Hour) != DefaultVerificationDays*24*time.Hour {
				t.Errorf("validity %v, want %d days", v, DefaultVerificationDays)
			}
		})
	}
	offline := *inter
	offline.RootKey = nil
	for _, tc := range []struct {
		name  string
		ca    *CA
		level Level
		code  string
		is    error
		want  string
	}{
		{"flat has no intermediate", flat, LevelIntermediate, code, nil, "has no intermediate"},
		{"root key offline", &offline, LevelRoot, code, ErrNoRootKey, "root.key"},
		{"empty code", flat, LevelRoot, "", nil, "verification code is empty"},
		{"long code", flat, LevelRoot, strings.Repeat("A", 65), nil, "limit is 64"},
		{"bad level", flat, "leaf", code, nil, `unknown CA level "leaf"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.ca.VerificationCertFor(tc.level, tc.code, DeviceOptions{})
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("VerificationCertFor = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteLoadDevice(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Intermediate: true})
	d := mustDevice(t, ca, "container-0007", DeviceOptions{})
	out := join(t.TempDir(), "devices")
	devDir, err := WriteDevice(out, d, false)
	if err != nil {
		t.Fatalf("WriteDevice: %v", err)
	}
	if devDir != join(out, "container-0007") {
		t.Errorf("devDir = %q", devDir)
	}
	if m := perm(t, devDir); m != 0o700 {
		t.Errorf("device dir mode %04o, want 0700", m)
	}
	if m := perm(t, join(devDir, DeviceKeyFile)); m != 0o600 {
		t.Errorf("key.pem mode %04o, want 0600", m)
	}
	if err := CheckKeyPerm(join(devDir, DeviceKeyFile)); err != nil {
		t.Errorf("CheckKeyPerm(key.pem) = %v", err)
	}
	if certs, _ := ReadCertsFile(join(devDir, DeviceCertFile)); len(certs) != 1 || !certs[0].Equal(d.Leaf) {
		t.Error("cert.pem does not hold exactly the leaf")
	}
	if certs, _ := ReadCertsFile(join(devDir, DeviceChainFile)); len(certs) != 2 || !certs[1].Equal(ca.Issuer) {
		t.Error("chain.pem does not hold leaf + intermediate")
	}
	got, err := LoadDevice(devDir)
	if err != nil {
		t.Fatalf("LoadDevice: %v", err)
	}
	if got.ID != d.ID || !got.Leaf.Equal(d.Leaf) || len(got.Chain) != 2 || !keyMatches(got.Key, d.Leaf.PublicKey) {
		t.Error("LoadDevice returned a different device")
	}

	// Refuse to overwrite; force replaces.
	d2 := mustDevice(t, ca, "container-0007", DeviceOptions{})
	if _, err := WriteDevice(out, d2, false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "container-0007") {
		t.Errorf("WriteDevice over existing = %v, want ErrExists", err)
	}
	if got, _ := LoadDevice(devDir); got == nil || !got.Leaf.Equal(d.Leaf) {
		t.Error("refused WriteDevice changed the device")
	}
	if _, err := WriteDevice(out, d2, true); err != nil {
		t.Fatalf("WriteDevice with force: %v", err)
	}
	if got, _ := LoadDevice(devDir); got == nil || !got.Leaf.Equal(d2.Leaf) {
		t.Error("forced WriteDevice did not replace the device")
	}
	if names := dirEntries(t, devDir); len(names) != 3 {
		t.Errorf("device dir holds %v, want the three files only", names)
	}
	if _, err := WriteDevice(out, &Device{ID: "../x", Leaf: d.Leaf, Key: d.Key}, false); !errors.Is(err, ErrInvalidID) {
		t.Errorf("WriteDevice with ID ../x = %v, want ErrInvalidID", err)
	}
}

func TestLoadDeviceErrors(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{})
	a := mustDevice(t, ca, "dev-a", DeviceOptions{})
	b := mustDevice(t, ca, "dev-b", DeviceOptions{})
	out := t.TempDir()
	aDir, _ := WriteDevice(out, a, false)
	bDir, _ := WriteDevice(out, b, false)
	read := func(p string) []byte {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}

	// Only cert.pem and key.pem: still loads.
	onlyCert := t.TempDir()
	writeTestFile(t, join(onlyCert, DeviceCertFile), read(join(aDir, DeviceCertFile)), 0o644)
	writeTestFile(t, join(onlyCert, DeviceKeyFile), read(join(aDir, DeviceKeyFile)), 0o600)
	if d, err := LoadDevice(onlyCert); err != nil || d.ID != "dev-a" || len(d.Chain) != 1 {
		t.Errorf("LoadDevice(cert.pem only) = %v", err)
	}

	mismatch := t.TempDir()
	writeTestFile(t, join(mismatch, DeviceChainFile), read(join(aDir, DeviceChainFile)), 0o644)
	writeTestFile(t, join(mismatch, DeviceKeyFile), read(join(bDir, DeviceKeyFile)), 0o600)
	if _, err := LoadDevice(mismatch); !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), `"CN=dev-a"`) {
		t.Errorf("LoadDevice(wrong key) = %v, want ErrKeyMismatch naming dev-a", err)
	}

	stale := t.TempDir()
	writeTestFile(t, join(stale, DeviceCertFile), read(join(bDir, DeviceCertFile)), 0o644)
	writeTestFile(t, join(stale, DeviceChainFile), read(join(aDir, DeviceChainFile)), 0o644)
	writeTestFile(t, join(stale, DeviceKeyFile), read(join(aDir, DeviceKeyFile)), 0o600)
	if _, err := LoadDevice(stale); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("LoadDevice(cert.pem from another device) = %v, want 'differ'", err)
	}

	noKey := t.TempDir()
	writeTestFile(t, join(noKey, DeviceChainFile), read(join(aDir, DeviceChainFile)), 0o644)
	if _, err := LoadDevice(noKey); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadDevice(no key) = %v, want ErrNotExist", err)
	}
	if _, err := LoadDevice(t.TempDir()); !errors.Is(err, ErrNoCert) {
		t.Errorf("LoadDevice(empty dir) = %v, want ErrNoCert", err)
	}
}

func TestIssueMany(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{Intermediate: true})
	var ids []string
	for i := range 40 {
		ids = append(ids, "bulk-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
	}
	var (
		mu      sync.Mutex
		got     = map[string]*Device{}
		serials = map[string]bool{}
	)
	err := ca.IssueMany(context.Background(), ids, DeviceOptions{}, 3, func(d *Device) error {
		mu.Lock()
		defer mu.Unlock()
		got[d.ID] = d
		serials[d.Leaf.SerialNumber.String()] = true
		return nil
	})
	if err != nil {
		t.Fatalf("IssueMany: %v", err)
	}
	if len(got) != len(ids) || len(serials) != len(ids) {
		t.Fatalf("IssueMany issued %d devices with %d serials, want %d", len(got), len(serials), len(ids))
	}
	var nb time.Time
	for _, id := range ids {
		d := got[id]
		if d == nil {
			t.Fatalf("no device for %s", id)
		}
		if nb.IsZero() {
			nb = d.Leaf.NotBefore
		}
		if !d.Leaf.NotBefore.Equal(nb) {
			t.Errorf("%s NotBefore %v, want the shared %v", id, d.Leaf.NotBefore, nb)
		}
	}

	// An invalid id fails before anything is issued.
	var calls atomic.Int32
	err = ca.IssueMany(context.Background(), []string{"ok-1", "bad/2"}, DeviceOptions{}, 2, func(*Device) error {
		calls.Add(1)
		return nil
	})
	if !errors.Is(err, ErrInvalidID) || calls.Load() != 0 {
		t.Errorf("IssueMany with a bad id = %v after %d devices, want ErrInvalidID before any", err, calls.Load())
	}

	// The first error from each stops the rest.
	boom := errors.New("disk full")
	calls.Store(0)
	err = ca.IssueMany(context.Background(), ids, DeviceOptions{}, 1, func(*Device) error {
		calls.Add(1)
		return boom
	})
	if !errors.Is(err, boom) || calls.Load() != 1 {
		t.Errorf("IssueMany with failing callback = %v after %d calls, want the error after 1 call with 1 worker", err, calls.Load())
	}

	// A cancelled context stops it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls.Store(0)
	err = ca.IssueMany(ctx, ids, DeviceOptions{}, 2, func(*Device) error { calls.Add(1); return nil })
	if !errors.Is(err, context.Canceled) || calls.Load() != 0 {
		t.Errorf("IssueMany with cancelled ctx = %v after %d calls", err, calls.Load())
	}
}
