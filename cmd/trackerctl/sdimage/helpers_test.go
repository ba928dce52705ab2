package sdimage_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/cmd/trackerctl/sdimage"
)

// bootOffset is where CreateTestImage puts partition 1, for mtools' img@@offset.
const bootOffset = 8192 * 512

// tool returns the path of a system tool, skipping the test when it is
// missing except under CI=true, where .ci/run installs it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (CI=true): install it with apt-get install -y %s", name, pkg)
	}
	t.Skipf("%s not installed (apt-get install -y %s)", name, pkg)
	return ""
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newImage creates a small Raspberry Pi OS shaped image in a temp dir.
func newImage(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "os.img")
	if err := sdimage.CreateTestImage(img, sdimage.TestImageOptions{BootMiB: 40, RootMiB: 2}); err != nil {
		t.Fatalf("CreateTestImage: %v", err)
	}
	return img
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileHash(t *testing.T, path string) [32]byte {
	return sha256.Sum256(readFile(t, path))
}

// rangeHash hashes size bytes of path from off.
func rangeHash(t *testing.T, path string, off, size int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// fsckClean extracts the boot partition and runs fsck.fat -n on it, failing
// the test if fsck finds anything to fix.
func fsckClean(t *testing.T, img string, off, size int64) {
	t.Helper()
	fsck := tool(t, "fsck.fat", "dosfstools")
	part := filepath.Join(t.TempDir(), "boot.part")
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	// Copy sparsely: the partitions are mostly zeros.
	buf, zero := make([]byte, 64<<10), make([]byte, 64<<10)
	for pos := int64(0); pos < size; pos += int64(len(buf)) {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), size-pos)], off+pos)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], pos); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := dst.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(fsck, "-n", "-v", part).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
	for _, bad := range []string{"Fixing", "Reclaimed", "wrong", "uninitialized", "Invalid", "ERROR", "Warning"} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("fsck.fat -n reports %q:\n%s", bad, out)
		}
	}
}

// pki is a throwaway CA for test bundles.
type pki struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Fleet Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// device returns a leaf certificate chain (leaf, CA) and PKCS#8 key PEM.
func (p *pki) device(t *testing.T, id string, notAfter time.Time) (chain, key []byte) {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: id},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &k.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	chain = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), p.pem...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// deviceDir writes a device bundle for id and returns its directory and
// file contents.
func deviceDir(t *testing.T, p *pki, id string) (string, map[string][]byte) {
	t.Helper()
	chain, key := p.device(t, id, time.Now().Add(365*24*time.Hour))
	files := map[string][]byte{
		"device.chain.pem": chain,
		"device.key.pem":   key,
		"trust.pem":        p.pem,
		"config.toml":      []byte("[identity]\ncert = \"device.chain.pem\"\nkey = \"device.key.pem\"\ntrust_bundle = \"trust.pem\"\n"),
	}
	return writeDir(t, files), files
}

func writeDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
