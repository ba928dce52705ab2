package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// t0 is a fixed issuing time for tests that check validity periods.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustMemoryCA(t testing.TB, opts CAOptions) *CA {
	t.Helper()
	ca, err := NewMemoryCA(opts)
	if err != nil {
		t.Fatalf("NewMemoryCA(%+v): %v", opts, err)
	}
	return ca
}

func mustDevice(t testing.TB, ca *CA, id string, opts DeviceOptions) *Device {
	t.Helper()
	d, err := ca.IssueDevice(id, opts)
	if err != nil {
		t.Fatalf("IssueDevice(%q): %v", id, err)
	}
	return d
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func writeTestFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// extension returns the extension with the given OID, or nil.
func extension(c *x509.Certificate, oid string) *struct{ Critical bool } {
	for _, e := range c.Extensions {
		if e.Id.String() == oid {
			return &struct{ Critical bool }{e.Critical}
		}
	}
	return nil
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func join(elem ...string) string { return filepath.Join(elem...) }
