package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/cmd/trackerctl/sdimage"
)

type imageResult struct {
	code           int
	stdout, stderr string
}

func imageRun(args ...string) imageResult {
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code := cli.Main(context.Background(), args, env)
	return imageResult{code, out.String(), errb.String()}
}

func imageExpect(t *testing.T, code int, want string, args ...string) imageResult {
	t.Helper()
	r := imageRun(args...)
	if r.code != code || !strings.Contains(r.stdout+r.stderr, want) {
		t.Fatalf("trackerctl %s: exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, want, r.stdout, r.stderr)
	}
	return r
}

// imageDeviceDir writes a self-signed device bundle for id.
func imageDeviceDir(t *testing.T, id string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"device.chain.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"device.key.pem":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		"config.toml":      []byte("[identity]\ncert = \"device.chain.pem\"\nkey = \"device.key.pem\"\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestImageCommands(t *testing.T) {
	img := filepath.Join(t.TempDir(), "os.img")
	dev := imageDeviceDir(t, "tracker-0042")

	imageExpect(t, 0, "partition 1 FAT32 40 MiB", "image", "new-test-image", "--out", img, "--boot-mib", "40", "--root-mib", "1")
	imageExpect(t, 1, "exists", "image", "new-test-image", "--out", img)
	imageExpect(t, 1, "not stamped", "image", "inspect", "--image", img)

	r := imageExpect(t, 0, "stamped tracker-0042 into "+img+":/tracker", "image", "stamp", "--image", img, "--device-dir", dev)
	if !strings.Contains(r.stdout, "device.key.pem") || !strings.Contains(r.stdout, "private key") {
		t.Errorf("stamp output lacks the key line:\n%s", r.stdout)
	}
	imageExpect(t, 1, "pass --force", "image", "stamp", "--image", img, "--device-dir", dev)
	imageExpect(t, 0, "stamped tracker-0042", "image", "stamp", "--image", img, "--device-dir", dev, "--force")

	r = imageExpect(t, 0, "device:     tracker-0042", "image", "inspect", "--image", img)
	for _, want := range []string{`partition:  1 (label "bootfs")`, "device.key.pem", "(private key)", "CN=tracker-0042, issuer CN=tracker-0042, expires "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "PRIVATE KEY") {
		t.Error("inspect printed key material")
	}
	r = imageExpect(t, 0, `"device_id": "tracker-0042"`, "image", "inspect", "--image", img, "--json")
	var rep sdimage.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	if !rep.OK() || len(rep.Files) != 3 {
		t.Errorf("inspect --json report: OK %v, %d files", rep.OK(), len(rep.Files))
	}

	imageExpect(t, 0, "cleared the device bundle", "image", "clear", "--image", img)
	imageExpect(t, 0, "nothing to clear", "image", "clear", "--image", img)
	imageExpect(t, 1, "has no /tracker folder", "image", "inspect", "--image", img)
}

func TestImageUsage(t *testing.T) {
	imageExpect(t, 2, "missing required flag -image, -device-dir", "image", "stamp")
	imageExpect(t, 2, "missing required flag -image", "image", "inspect")
	imageExpect(t, 2, "unexpected argument", "image", "clear", "--image", "x.img", "extra")
	imageExpect(t, 2, "-boot-mib 8", "image", "new-test-image", "--out", filepath.Join(t.TempDir(), "x.img"), "--boot-mib", "8")
	imageExpect(t, 0, "Usage: trackerctl image stamp", "image", "stamp", "-help")
	imageExpect(t, 1, "no partition table", "image", "stamp", "--image", writeZeros(t), "--device-dir", imageDeviceDir(t, "x"))
	imageExpect(t, 2, "unknown trackerctl image command", "image", "flash")
}

func writeZeros(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zeros.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
