package cli_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/provisioning/pki"
)

type pkiResult struct {
	code           int
	stdout, stderr string
}

// pkiRun runs trackerctl in-process with buffers as its streams.
func pkiRun(t testing.TB, terminal bool, args ...string) pkiResult {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Terminal: terminal}
	code := cli.Main(context.Background(), args, env)
	return pkiResult{code, out.String(), errb.String()}
}

func pkiMustRun(t testing.TB, args ...string) pkiResult {
	t.Helper()
	r := pkiRun(t, false, args...)
	if r.code != 0 {
		t.Fatalf("trackerctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// pkiWantFail runs args and checks the exit code and that stderr holds want.
func pkiWantFail(t *testing.T, code int, want string, args ...string) pkiResult {
	t.Helper()
	r := pkiRun(t, false, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Errorf("trackerctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
	return r
}

func pkiFileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPKIInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	r := pkiMustRun(t, "pki", "init-ca", "--out", dir, "--cn", "Fleet Root", "--intermediate", "--days", "1000", "--key", "ecdsa-p384")
	for _, want := range []string{"created CA in " + dir, "CN=Fleet Root,", "CN=Fleet Root Intermediate", "ecdsa-p384", "verify-cert --ca " + dir} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("init-ca output lacks %q:\n%s", want, r.stdout)
		}
	}
	if m := pkiFileMode(t, dir); m != 0o700 {
		t.Errorf("CA dir mode %04o, want 0700", m)
	}
	for _, k := range []string{pki.RootKeyFile, pki.IntermediateKeyFile} {
		if m := pkiFileMode(t, filepath.Join(dir, k)); m != 0o600 {
			t.Errorf("%s mode %04o, want 0600", k, m)
		}
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Root.Subject.CommonName != "Fleet Root" || !ca.HasIntermediate() || pki.KeyTypeOf(ca.Root.PublicKey) != "ecdsa-p384" {
		t.Errorf("loaded CA: CN %q, intermediate %v, key %s", ca.Root.Subject.CommonName, ca.HasIntermediate(), pki.KeyTypeOf(ca.Root.PublicKey))
	}
	if days := ca.Root.NotAfter.Sub(ca.Root.NotBefore).Hours() / 24; days < 1000 || days > 1001 {
		t.Errorf("root validity %.2f days, want 1000", days)
	}
	rootPEM, _ := os.ReadFile(filepath.Join(dir, pki.RootCertFile))

	pkiWantFail(t, 1, filepath.Join(dir, pki.RootCertFile)+" exists; use --force to replace it", "pki", "init-ca", "--out", dir)
	if now, _ := os.ReadFile(filepath.Join(dir, pki.RootCertFile)); !bytes.Equal(now, rootPEM) {
		t.Error("refused init-ca changed root.pem")
	}
	pkiMustRun(t, "pki", "init-ca", "--out", dir, "--force")
	if now, _ := os.ReadFile(filepath.Join(dir, pki.RootCertFile)); bytes.Equal(now, rootPEM) {
		t.Error("init-ca --force did not replace root.pem")
	}
	if _, err := os.Stat(filepath.Join(dir, pki.IntermediateCertFile)); !os.IsNotExist(err) {
		t.Error("init-ca --force without --intermediate left the old intermediate")
	}

	pkiWantFail(t, 2, "missing required flag -out", "pki", "init-ca")
	pkiWantFail(t, 2, `unsupported key type "dsa"`, "pki", "init-ca", "--out", t.TempDir(), "--key", "dsa")
	pkiWantFail(t, 2, "positive number of days", "pki", "init-ca", "--out", t.TempDir(), "--days", "0")
	pkiWantFail(t, 2, "unexpected arguments: extra", "pki", "init-ca", "--out", t.TempDir(), "extra")
}

func TestPKIHelp(t *testing.T) {
	r := pkiRun(t, false, "pki")
	if r.code != 2 || !strings.Contains(r.stderr, "init-ca") {
		t.Errorf("pki without command: exit %d, stderr %q", r.code, r.stderr)
	}
	r = pkiMustRun(t, "pki", "help")
	for _, c := range []string{"init-ca", "verify-cert", "issue", "show"} {
		if !strings.Contains(r.stdout, c) {
			t.Errorf("pki help lacks %s:\n%s", c, r.stdout)
		}
	}
	r = pkiMustRun(t, "pki", "issue", "-help")
	if !strings.Contains(r.stdout, "Usage: trackerctl pki issue") || !strings.Contains(r.stdout, "-count") {
		t.Errorf("pki issue -help:\n%s", r.stdout)
	}
	pkiWantFail(t, 2, `unknown trackerctl pki command "nope"`, "pki", "nope")
	if r := pkiMustRun(t, "help"); !strings.Contains(r.stdout, "pki") {
		t.Error("trackerctl help does not list pki")
	}
}

func pkiNewCA(t *testing.T, intermediate bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	args := []string{"pki", "init-ca", "--out", dir}
	if intermediate {
		args = append(args, "--intermediate")
	}
	pkiMustRun(t, args...)
	return dir
}

func TestPKIIssueOne(t *testing.T) {
	caDir := pkiNewCA(t, true)
	out := filepath.Join(t.TempDir(), "devices")
	r := pkiMustRun(t, "pki", "issue", "--ca", caDir, "--id", "container-0001", "--out", out, "--days", "30")
	devDir := filepath.Join(out, "container-0001")
	d, err := pki.LoadDevice(devDir)
	if err != nil {
		t.Fatalf("LoadDevice: %v", err)
	}
	s1, s256 := pki.Thumbprints(d.Leaf)
	for _, want := range []string{"issued container-0001 in " + devDir, s1, s256, "Intermediate"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("issue output lacks %q:\n%s", want, r.stdout)
		}
	}
	if m := pkiFileMode(t, filepath.Join(devDir, pki.DeviceKeyFile)); m != 0o600 {
		t.Errorf("key.pem mode %04o", m)
	}
	ca, _ := pki.LoadCA(caDir)
	if err := pki.Verify(d.Chain, []*x509.Certificate{ca.Root}, time.Time{}); err != nil {
		t.Errorf("issued device does not verify: %v", err)
	}
	if days := d.Leaf.NotAfter.Sub(d.Leaf.NotBefore).Hours() / 24; days < 30 || days > 31 {
		t.Errorf("validity %.1f days, want 30", days)
	}

	pkiWantFail(t, 1, filepath.Join(devDir, "cert.pem")+" exists; use --force to replace it",
		"pki", "issue", "--ca", caDir, "--id", "container-0001", "--out", out)
	pkiMustRun(t, "pki", "issue", "--ca", caDir, "--id", "container-0001", "--out", out, "--force")
	if d2, _ := pki.LoadDevice(devDir); d2 == nil || d2.Leaf.Equal(d.Leaf) {
		t.Error("issue --force did not replace the device")
	}
}

func TestPKIIssueErrors(t *testing.T) {
	caDir := pkiNewCA(t, false)
	out := t.TempDir()
	empty := t.TempDir()
	pkiWantFail(t, 1, "no CA in "+empty+": root.pem not found; create one with 'trackerctl pki init-ca --out "+empty+"'",
		"pki", "issue", "--ca", empty, "--id", "dev-1", "--out", out)
	pkiWantFail(t, 1, "it must end with a letter or digit", "pki", "issue", "--ca", caDir, "--id", "dev-", "--out", out)
	pkiWantFail(t, 1, "character '/' at offset 1 is not allowed", "pki", "issue", "--ca", caDir, "--id", "a/b", "--out", out)
	pkiWantFail(t, 1, "it starts with '-'", "pki", "issue", "--ca", caDir, "--count", "2", "--prefix", "-x", "--out", out)
	pkiWantFail(t, 2, "use either -id or -count", "pki", "issue", "--ca", caDir, "--id", "a", "--count", "2", "--out", out)
	pkiWantFail(t, 2, "missing -id (one device) or -count (bulk)", "pki", "issue", "--ca", caDir, "--out", out)
	pkiWantFail(t, 2, "-count 0: use a positive number", "pki", "issue", "--ca", caDir, "--count", "0", "--out", out)
	pkiWantFail(t, 2, "-prefix only applies with -count", "pki", "issue", "--ca", caDir, "--id", "a", "--prefix", "b", "--out", out)
	pkiWantFail(t, 2, "missing required flag -ca, -out", "pki", "issue", "--id", "a")
	pkiWantFail(t, 2, "-width 0", "pki", "issue", "--ca", caDir, "--count", "1", "--width", "0", "--out", out)
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("failed issues wrote %d entries into the output directory", len(entries))
	}

	// A CA key others can read is refused with the fix.
	key := filepath.Join(caDir, pki.RootKeyFile)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	pkiWantFail(t, 1, "run 'chmod 600 "+key+"'", "pki", "issue", "--ca", caDir, "--id", "dev-1", "--out", out)
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	// A key that is not a key.
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := pkiWantFail(t, 1, "read key "+key, "pki", "issue", "--ca", caDir, "--id", "dev-1", "--out", out)
	if strings.Count(r.stderr, "\n") != 1 || strings.Contains(r.stderr, "pki: pki:") {
		t.Errorf("error is not one clean line: %q", r.stderr)
	}
	// A key of another CA.
	other := pkiNewCA(t, false)
	data, _ := os.ReadFile(filepath.Join(other, pki.RootKeyFile))
	if err := os.WriteFile(key, data, 0o600); err != nil {
		t.Fatal(err)
	}
	pkiWantFail(t, 1, "private key does not match certificate: "+key, "pki", "issue", "--ca", caDir, "--id", "dev-1", "--out", out)
}

func TestPKIIssueBulk(t *testing.T) {
	caDir := pkiNewCA(t, true)
	out := filepath.Join(t.TempDir(), "fleet")
	r := pkiRun(t, true, "pki", "issue", "--ca", caDir, "--count", "25", "--prefix", "reefer-", "--start", "7", "--width", "3", "--out", out, "--workers", "3")
	if r.code != 0 {
		t.Fatalf("bulk issue: exit %d: %s", r.code, r.stderr)
	}
	var want []string
	for i := 7; i < 32; i++ {
		want = append(want, fmt.Sprintf("reefer-%03d", i))
	}
	var got []string
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("device dirs %v, want %v", got, want)
	}
	ca, _ := pki.LoadCA(caDir)
	serials := map[string]bool{}
	for _, id := range want {
		d, err := pki.LoadDevice(filepath.Join(out, id))
		if err != nil {
			t.Fatalf("LoadDevice(%s): %v", id, err)
		}
		if d.ID != id {
			t.Errorf("device in %s has CN %s", id, d.ID)
		}
		if err := pki.Verify(d.Chain, []*x509.Certificate{ca.Root}, time.Time{}); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		serials[d.Leaf.SerialNumber.String()] = true
	}
	if len(serials) != 25 {
		t.Errorf("%d distinct serials, want 25", len(serials))
	}
	if !strings.Contains(r.stdout, "issued 25 device certificates (reefer-007 ... reefer-031) into "+out) {
		t.Errorf("summary line: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "\rissuing [") || !strings.Contains(r.stderr, "100% 25/25") || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("terminal progress bar: %q", r.stderr)
	}

	// Not a terminal: no progress bar.
	out2 := filepath.Join(t.TempDir(), "fleet")
	r = pkiMustRun(t, "pki", "issue", "--ca", caDir, "--count", "3", "--out", out2)
	if r.stderr != "" {
		t.Errorf("bulk issue without a terminal wrote to stderr: %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "(container-0001 ... container-0003)") {
		t.Errorf("default prefix and width: %q", r.stdout)
	}

	// Overlapping existing devices: refused before anything is written.
	before, _ := os.ReadFile(filepath.Join(out, "reefer-010", "cert.pem"))
	pkiWantFail(t, 1, filepath.Join(out, "reefer-007", "cert.pem")+" exists (and files of 23 more devices); use --force to replace them",
		"pki", "issue", "--ca", caDir, "--count", "30", "--prefix", "reefer-", "--start", "1", "--width", "3", "--out", out)
	if _, err := os.Stat(filepath.Join(out, "reefer-001")); !os.IsNotExist(err) {
		t.Error("refused bulk issue created reefer-001")
	}
	pkiMustRun(t, "pki", "issue", "--ca", caDir, "--count", "30", "--prefix", "reefer-", "--start", "1", "--width", "3", "--out", out, "--force")
	if after, _ := os.ReadFile(filepath.Join(out, "reefer-010", "cert.pem")); bytes.Equal(after, before) {
		t.Error("bulk issue --force did not replace reefer-010")
	}
}

func TestPKIVerifyCert(t *testing.T) {
	const code = "8F2C64A7E10B3D95C6F1A2B3C4D5E6F708192A3B4C5D6E7F"
	caDir := pkiNewCA(t, true)
	ca, _ := pki.LoadCA(caDir)
	for _, tc := range []struct {
		which  []string
		signer *x509.Certificate
	}{
		{nil, ca.Root},
		{[]string{"--which", "root"}, ca.Root},
		{[]string{"--which", "intermediate"}, ca.Issuer},
	} {
		r := pkiMustRun(t, append([]string{"pki", "verify-cert", "--ca", caDir, "--code", code}, tc.which...)...)
		certs, err := pki.ParseCertsPEM([]byte(r.stdout))
		if err != nil || len(certs) != 1 {
			t.Fatalf("verify-cert %v stdout is not one PEM certificate: %v\n%s", tc.which, err, r.stdout)
		}
		if certs[0].Subject.CommonName != code {
			t.Errorf("CN %q, want the code", certs[0].Subject.CommonName)
		}
		if err := certs[0].CheckSignatureFrom(tc.signer); err != nil {
			t.Errorf("verify-cert %v: not signed by %s: %v", tc.which, tc.signer.Subject, err)
		}
	}
	file := filepath.Join(t.TempDir(), "verify.pem")
	r := pkiMustRun(t, "pki", "verify-cert", "--ca", caDir, "--code", code, "--out", file)
	if !strings.Contains(r.stdout, "wrote "+file) || !strings.Contains(r.stdout, "signed by the root") {
		t.Errorf("verify-cert --out output: %q", r.stdout)
	}
	if certs, err := pki.ReadCertsFile(file); err != nil || certs[0].Subject.CommonName != code {
		t.Errorf("verify-cert --out file: %v", err)
	}
	pkiWantFail(t, 1, file+" exists; use --force to replace it", "pki", "verify-cert", "--ca", caDir, "--code", code, "--out", file)
	pkiMustRun(t, "pki", "verify-cert", "--ca", caDir, "--code", "OTHER", "--out", file, "--force")
	if certs, _ := pki.ReadCertsFile(file); len(certs) != 1 || certs[0].Subject.CommonName != "OTHER" {
		t.Error("verify-cert --force did not replace the file")
	}

	flat := pkiNewCA(t, false)
	pkiWantFail(t, 1, "this CA has no intermediate", "pki", "verify-cert", "--ca", flat, "--code", code, "--which", "intermediate")
	pkiWantFail(t, 2, `-which "leaf": use root or intermediate`, "pki", "verify-cert", "--ca", flat, "--code", code, "--which", "leaf")
	pkiWantFail(t, 2, "missing required flag -code", "pki", "verify-cert", "--ca", flat)

	// Root key moved offline: the root cannot be verified, the intermediate can.
	if err := os.Remove(filepath.Join(caDir, pki.RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	pkiWantFail(t, 1, "root key not available", "pki", "verify-cert", "--ca", caDir, "--code", code)
	pkiMustRun(t, "pki", "verify-cert", "--ca", caDir, "--code", code, "--which", "intermediate")
}

func TestPKIShow(t *testing.T) {
	caDir := pkiNewCA(t, true)
	out := t.TempDir()
	pkiMustRun(t, "pki", "issue", "--ca", caDir, "--id", "container-0001", "--out", out)
	devDir := filepath.Join(out, "container-0001")
	d, _ := pki.LoadDevice(devDir)
	s1, s256 := pki.Thumbprints(d.Leaf)

	// Flags after the file, and the device directory form.
	for _, args := range [][]string{
		{"pki", "show", filepath.Join(devDir, "cert.pem"), "--ca", caDir},
		{"pki", "show", "--ca", caDir, devDir},
	} {
		r := pkiMustRun(t, args...)
		for _, want := range []string{
			"Subject:       CN=container-0001", "Issuer:        CN=Coldchain Tracker Root CA Intermediate",
			"Serial:        " + strings.ToUpper(d.Leaf.SerialNumber.Text(16)),
			"Status:        valid, 1094 days left", "Key:           ecdsa-p256", "CA:            no",
			"Ext key usage: clientAuth", "SHA-1:         " + s1, "SHA-256:       " + s256,
			"chain check against " + caDir + ": ok (CN=container-0001 <- CN=Coldchain Tracker Root CA Intermediate <- CN=Coldchain Tracker Root CA, usage clientAuth)",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("show %v lacks %q:\n%s", args[2:], want, r.stdout)
			}
		}
	}
	r := pkiMustRun(t, "pki", "show", caDir)
	if !strings.Contains(r.stdout, "CA:            yes, path length 1") || !strings.Contains(r.stdout, "CA:            yes, path length 0") {
		t.Errorf("show CA dir:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "chain check") {
		t.Error("show without --ca printed a chain check")
	}

	// Against another CA: FAILED and exit 1.
	other := pkiNewCA(t, false)
	r = pkiRun(t, false, "pki", "show", devDir, "--ca", other)
	if r.code != 1 || !strings.Contains(r.stdout, "chain check against "+other+": FAILED: verify \"CN=container-0001\": certificate not signed by a trusted CA") {
		t.Errorf("show against another CA: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Expired, not yet valid, server certificate in DER.
	ca, _ := pki.LoadCA(caDir)
	files := t.TempDir()
	old, _ := ca.IssueDevice("old-1", pki.DeviceOptions{NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(0, 0, -10)})
	future, _ := ca.IssueDevice("new-1", pki.DeviceOptions{NotBefore: time.Now().AddDate(0, 0, 5), NotAfter: time.Now().AddDate(1, 0, 0)})
	srv, _ := ca.IssueServer([]string{"localhost", "127.0.0.1"}, pki.DeviceOptions{})
	write := func(name string, data []byte) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	r = pkiRun(t, false, "pki", "show", write("old.pem", pki.EncodePEM(old.Chain...)), "--ca", caDir)
	if r.code != 1 || !strings.Contains(r.stdout, "Status:        EXPIRED 10 days ago") || !strings.Contains(r.stdout, "FAILED: verify \"CN=old-1\": certificate expired") {
		t.Errorf("show expired: exit %d\n%s", r.code, r.stdout)
	}
	r = pkiRun(t, false, "pki", "show", write("new.pem", pki.EncodePEM(future.Leaf)))
	if r.code != 0 || !strings.Contains(r.stdout, "Status:        not yet valid (starts in 4 days)") {
		t.Errorf("show not yet valid: exit %d\n%s", r.code, r.stdout)
	}
	r = pkiMustRun(t, "pki", "show", write("server.cer", srv.Leaf.Raw), "--ca", caDir)
	for _, want := range []string{"SANs:          localhost, 127.0.0.1", "Ext key usage: serverAuth", "Key usage:     digitalSignature", "usage serverAuth)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show server DER lacks %q:\n%s", want, r.stdout)
		}
	}

	pkiWantFail(t, 2, "want exactly one FILE or DIR, got 0", "pki", "show")
	pkiWantFail(t, 2, "got 2", "pki", "show", "a", "b")
	pkiWantFail(t, 1, "no such file or directory", "pki", "show", filepath.Join(files, "missing.pem"))
	pkiWantFail(t, 1, "no CERTIFICATE PEM block found", "pki", "show", filepath.Join(devDir, "key.pem"))
	pkiWantFail(t, 1, "holds neither chain.pem", "pki", "show", t.TempDir())
	pkiWantFail(t, 1, "no CA in "+files+": root.pem not found", "pki", "show", devDir, "--ca", files)
}

// BenchmarkPKIIssueBulk measures "trackerctl pki issue --count 200" end to
// end: key generation, signing and three fsynced files per device.
func BenchmarkPKIIssueBulk(b *testing.B) {
	const n = 200
	base := b.TempDir()
	caDir := filepath.Join(base, "ca")
	pkiMustRun(b, "pki", "init-ca", "--out", caDir, "--intermediate")
	i := 0
	for b.Loop() {
		i++
		pkiMustRun(b, "pki", "issue", "--ca", caDir, "--count", fmt.Sprint(n), "--out", filepath.Join(base, fmt.Sprint("run", i)))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/device")
}
