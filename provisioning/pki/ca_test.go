package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	oidBasicConstraints = "2.5.29.19"
	oidKeyUsage         = "2.5.29.15"
)

func TestNewMemoryCAConstraints(t *testing.T) {
	for _, inter := range []bool{false, true} {
		ca := mustMemoryCA(t, CAOptions{CN: "Test Root", Intermediate: inter, Now: t0, Days: 100})
		root := ca.Root
		if root.Subject.CommonName != "Test Root" || !bytes.Equal(root.RawSubject, root.RawIssuer) {
			t.Errorf("root subject %q issuer %q, want self-issued Test Root", root.Subject, root.Issuer)
		}
		if err := root.CheckSignatureFrom(root); err != nil {
			t.Errorf("root is not self-signed: %v", err)
		}
		checkCACert(t, root, 1)
		if want := t0.Add(-Backdate); !root.NotBefore.Equal(want) {
			t.Errorf("root NotBefore = %v, want %v", root.NotBefore, want)
		}
		if want := t0.AddDate(0, 0, 100); !root.NotAfter.Equal(want) {
			t.Errorf("root NotAfter = %v, want %v", root.NotAfter, want)
		}
		if !bytes.Equal(root.AuthorityKeyId, root.SubjectKeyId) {
			t.Errorf("root AuthorityKeyId %x != SubjectKeyId %x", root.AuthorityKeyId, root.SubjectKeyId)
		}
		if ca.RootKey == nil || !keyMatches(ca.RootKey, root.PublicKey) {
			t.Error("RootKey missing or not the root's key")
		}
		if ca.HasIntermediate() != inter {
			t.Errorf("HasIntermediate = %v, want %v", ca.HasIntermediate(), inter)
		}
		if !inter {
			if ca.Issuer != root || ca.IssuerKey != ca.RootKey || len(ca.Chain) != 0 {
				t.Errorf("without intermediate: Issuer/IssuerKey must be the root's and Chain empty, got chain of %d", len(ca.Chain))
			}
			continue
		}
		in := ca.Issuer
		if in == root || len(ca.Chain) != 1 || ca.Chain[0] != in {
			t.Fatalf("with intermediate: Issuer must be the intermediate and Chain [intermediate]")
		}
		if in.Subject.CommonName != "Test Root Intermediate" {
			t.Errorf("intermediate CN = %q", in.Subject.CommonName)
		}
		if err := in.CheckSignatureFrom(root); err != nil {
			t.Errorf("intermediate not signed by root: %v", err)
		}
		checkCACert(t, in, 0)
		if !bytes.Equal(in.AuthorityKeyId, root.SubjectKeyId) {
			t.Errorf("intermediate AKI %x, want root SKI %x", in.AuthorityKeyId, root.SubjectKeyId)
		}
		if !in.NotAfter.Equal(root.NotAfter) {
			t.Errorf("intermediate NotAfter %v, want the root's %v", in.NotAfter, root.NotAfter)
		}
		if !keyMatches(ca.IssuerKey, in.PublicKey) {
			t.Error("IssuerKey is not the intermediate's key")
		}
	}
}

func checkCACert(t *testing.T, c *x509.Certificate, pathLen int) {
	t.Helper()
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("%s: not a CA (IsCA=%v)", c.Subject, c.IsCA)
	}
	if c.MaxPathLen != pathLen || (pathLen == 0 && !c.MaxPathLenZero) {
		t.Errorf("%s: MaxPathLen = %d (zero=%v), want %d", c.Subject, c.MaxPathLen, c.MaxPathLenZero, pathLen)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage&want != want {
		t.Errorf("%s: KeyUsage = %b, want keyCertSign|cRLSign", c.Subject, c.KeyUsage)
	}
	for _, oid := range []string{oidBasicConstraints, oidKeyUsage} {
		if e := extension(c, oid); e == nil || !e.Critical {
			t.Errorf("%s: extension %s missing or not critical", c.Subject, oid)
		}
	}
	if len(c.SubjectKeyId) != 20 {
		t.Errorf("%s: SubjectKeyId = %x, want 20 bytes", c.Subject, c.SubjectKeyId)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("%s: serial %x not a positive 128-bit number", c.Subject, c.SerialNumber)
	}
}

func TestNewMemoryCADefaultsAndErrors(t *testing.T) {
	ca := mustMemoryCA(t, CAOptions{})
	if ca.Root.Subject.CommonName != DefaultCACN {
		t.Errorf("default CN = %q", ca.Root.Subject.CommonName)
	}
	if got := KeyTypeOf(ca.Root.PublicKey); got != string(DefaultKeyType) {
		t.Errorf("default key = %s", got)
	}
	if d := ca.Root.NotAfter.Sub(ca.Root.NotBefore) - Backdate; d.Round(time.Hour) != DefaultCADays*24*time.Hour {
		t.Errorf("default validity %v, want %d days", d, DefaultCADays)
	}
	if ca.Dir != "" {
		t.Errorf("memory CA Dir = %q, want empty", ca.Dir)
	}
	other := mustMemoryCA(t, CAOptions{})
	if ca.Root.SerialNumber.Cmp(other.Root.SerialNumber) == 0 {
		t.Error("two CAs got the same serial number")
	}
	for _, tc := range []struct {
		opts CAOptions
		want string
	}{
		{CAOptions{Days: -1}, "positive number of days"},
		{CAOptions{Key: "dsa"}, "unsupported key type"},
		{CAOptions{CN: strings.Repeat("c", 65)}, "limit is 64"},
		{CAOptions{CN: "bad\nname"}, "control character"},
	} {
		if _, err := NewMemoryCA(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewMemoryCA(%+v) = %v, want error containing %q", tc.opts, err, tc.want)
		}
	}
}

func TestInitCAFiles(t *testing.T) {
	for _, inter := range []bool{false, true} {
		dir := join(t.TempDir(), "ca")
		ca, err := InitCA(dir, CAOptions{Intermediate: inter, Key: KeyECDSAP384})
		if err != nil {
			t.Fatalf("InitCA: %v", err)
		}
		if ca.Dir != dir {
			t.Errorf("Dir = %q, want %q", ca.Dir, dir)
		}
		if m := perm(t, dir); m != 0o700 {
			t.Errorf("CA dir mode %04o, want 0700", m)
		}
		want := []string{RootCertFile, RootKeyFile}
		if inter {
			want = append(want, IntermediateCertFile, IntermediateKeyFile)
		}
		got := dirEntries(t, dir)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("CA dir holds %v, want %v", got, want)
		}
		for _, k := range []string{RootKeyFile, IntermediateKeyFile} {
			if _, err := os.Stat(join(dir, k)); err == nil {
				if m := perm(t, join(dir, k)); m != 0o600 {
					t.Errorf("%s mode %04o, want 0600", k, m)
				}
			}
		}
		loaded, err := LoadCA(dir)
		if err != nil {
			t.Fatalf("LoadCA: %v", err)
		}
		if !loaded.Root.Equal(ca.Root) || !loaded.Issuer.Equal(ca.Issuer) || len(loaded.Chain) != len(ca.Chain) {
			t.Error("LoadCA returned different certificates than InitCA made")
		}
		if !keyMatches(loaded.IssuerKey, ca.Issuer.PublicKey) || !keyMatches(loaded.RootKey, ca.Root.PublicKey) {
			t.Error("LoadCA returned different keys")
		}
	}
}

func TestInitCARefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	first, err := InitCA(dir, CAOptions{Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := os.ReadFile(join(dir, RootCertFile))
	_, err = InitCA(dir, CAOptions{})
	var ee *ExistsError
	if !errors.As(err, &ee) || !errors.Is(err, ErrExists) {
		t.Fatalf("InitCA over an existing CA = %v, want *ExistsError", err)
	}
	if now, _ := os.ReadFile(join(dir, RootCertFile)); !bytes.Equal(now, rootPEM) {
		t.Error("refused InitCA still changed root.pem")
	}
	// A lone intermediate.key left behind is also protected.
	dir2 := t.TempDir()
	writeTestFile(t, join(dir2, IntermediateKeyFile), []byte("x"), 0o600)
	if _, err := InitCA(dir2, CAOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("InitCA with a stray intermediate.key = %v, want ErrExists", err)
	}

	// Force replaces, and drops the old intermediate when the new CA has none.
	second, err := InitCA(dir, CAOptions{Force: true})
	if err != nil {
		t.Fatalf("InitCA with Force: %v", err)
	}
	if second.Root.Equal(first.Root) {
		t.Error("Force did not create a new root")
	}
	if got := dirEntries(t, dir); len(got) != 2 {
		t.Errorf("after Force without intermediate the dir holds %v, want root files only", got)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA after Force: %v", err)
	}
	if !loaded.Root.Equal(second.Root) || loaded.HasIntermediate() {
		t.Error("LoadCA after Force did not load the new root-only CA")
	}
}

func TestLoadCAErrors(t *testing.T) {
	base := t.TempDir()
	// Two complete CAs to mix files from.
	a, b := join(base, "a"), join(base, "b")
	if _, err := InitCA(a, CAOptions{Intermediate: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(b, CAOptions{Intermediate: true}); err != nil {
		t.Fatal(err)
	}
	copyFile := func(t *testing.T, from, to string) {
		t.Helper()
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, to, data, 0o600)
	}
	mk := func(t *testing.T, files map[string]string) string {
		t.Helper()
		dir := t.TempDir()
		for name, from := range files {
			copyFile(t, from, join(dir, name))
		}
		return dir
	}
	devDir := join(base, "dev")
	ca, _ := LoadCA(a)
	d := mustDevice(t, ca, "dev-1", DeviceOptions{})
	if _, err := WriteDevice(devDir, d, false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		dir   func(t *testing.T) string
		is    error
		want  string
		okNil bool
	}{
		{"missing dir", func(t *testing.T) string { return join(base, "nope") }, ErrNoCA, "does not exist", false},
		{"file not dir", func(t *testing.T) string { return join(a, RootCertFile) }, ErrNoCA, "not a directory", false},
		{"empty dir", func(t *testing.T) string { return t.TempDir() }, ErrNoCA, "root.pem not found", false},
		{"root key mismatch", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile), RootKeyFile: join(b, RootKeyFile)})
		}, ErrKeyMismatch, "root.key is not the key of", false},
		{"intermediate key mismatch", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile), RootKeyFile: join(a, RootKeyFile),
				IntermediateCertFile: join(a, IntermediateCertFile), IntermediateKeyFile: join(b, IntermediateKeyFile)})
		}, ErrKeyMismatch, "intermediate.key is not the key of", false},
		{"intermediate from another CA", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile), RootKeyFile: join(a, RootKeyFile),
				IntermediateCertFile: join(b, IntermediateCertFile), IntermediateKeyFile: join(b, IntermediateKeyFile)})
		}, nil, "is not signed by", false},
		{"root without key and without intermediate", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile)})
		}, nil, "root key is needed", false},
		{"intermediate without key", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile), IntermediateCertFile: join(a, IntermediateCertFile)})
		}, nil, "intermediate.key not found", false},
		{"root.pem is a device cert", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(devDir, "dev-1", DeviceCertFile)})
		}, nil, "not a CA certificate", false},
		{"root.pem is an intermediate", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, IntermediateCertFile), RootKeyFile: join(a, IntermediateKeyFile)})
		}, nil, "not a self-signed root", false},
		{"root.pem holds two certs", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(devDir, "dev-1", DeviceChainFile)})
		}, nil, "holds 2 certificates", false},
		{"root.pem garbage", func(t *testing.T) string {
			dir := t.TempDir()
			writeTestFile(t, join(dir, RootCertFile), []byte("hello"), 0o644)
			return dir
		}, ErrNoCert, "no CERTIFICATE", false},
		{"root key offline", func(t *testing.T) string {
			return mk(t, map[string]string{RootCertFile: join(a, RootCertFile),
				IntermediateCertFile: join(a, IntermediateCertFile), IntermediateKeyFile: join(a, IntermediateKeyFile)})
		}, nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := LoadCA(tc.dir(t))
			if tc.okNil {
				if err != nil {
					t.Fatalf("LoadCA = %v, want success", err)
				}
				if ca.RootKey != nil || ca.IssuerKey == nil || !ca.HasIntermediate() {
					t.Errorf("offline root: RootKey=%v IssuerKey=%v", ca.RootKey != nil, ca.IssuerKey != nil)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadCA succeeded, want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("LoadCA = %v, want errors.Is %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadCA = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}
