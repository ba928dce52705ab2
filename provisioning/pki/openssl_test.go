package pki

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// openssl returns a function that runs the openssl binary. Without openssl
// the test is skipped locally but fails under CI (CI=true), where the
// workflow installs it.
func openssl(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl not found under CI (install it: apt-get install openssl): %v", err)
		}
		t.Skipf("openssl not installed: %v", err)
	}
	return func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

func mustOpenSSL(t *testing.T, run func(...string) (string, error), args ...string) string {
	t.Helper()
	out, err := run(args...)
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func wantAll(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

func TestOpenSSLVerifyChain(t *testing.T) {
	run := openssl(t)
	for _, inter := range []bool{false, true} {
		name := "root-only"
		if inter {
			name = "intermediate"
		}
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			caDir := join(base, "ca")
			ca, err := InitCA(caDir, CAOptions{CN: "Interop Root", Intermediate: inter})
			if err != nil {
				t.Fatal(err)
			}
			d := mustDevice(t, ca, "container-0001", DeviceOptions{})
			devDir, err := WriteDevice(join(base, "devices"), d, false)
			if err != nil {
				t.Fatal(err)
			}
			root := join(caDir, RootCertFile)
			leaf := join(devDir, DeviceCertFile)
			chain := join(devDir, DeviceChainFile)
			out := mustOpenSSL(t, run, "verify", "-CAfile", root, "-untrusted", chain, leaf)
			wantAll(t, "openssl verify", out, leaf+": OK")
			out = mustOpenSSL(t, run, "verify", "-purpose", "sslclient", "-CAfile", root, "-untrusted", chain, leaf)
			wantAll(t, "openssl verify -purpose sslclient", out, ": OK")
			if _, err := run("verify", "-purpose", "sslserver", "-CAfile", root, "-untrusted", chain, leaf); err == nil {
				t.Error("openssl accepted a device certificate for sslserver")
			}
			if inter {
				// Without the intermediate the chain must not verify.
				if out, err := run("verify", "-CAfile", root, leaf); err == nil {
					t.Errorf("openssl verified the leaf without its intermediate:\n%s", out)
				}
			}
			// Against another CA it must fail.
			other, err := InitCA(join(base, "other"), CAOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if out, err := run("verify", "-CAfile", join(other.Dir, RootCertFile), "-untrusted", chain, leaf); err == nil {
				t.Errorf("openssl verified against an unrelated root:\n%s", out)
			}

			rootText := mustOpenSSL(t, run, "x509", "-in", root, "-text", "-noout")
			wantAll(t, "root.pem", rootText,
				"Subject: CN = Interop Root",
				"X509v3 Basic Constraints: critical",
				"CA:TRUE, pathlen:1",
				"X509v3 Key Usage: critical",
				"Certificate Sign, CRL Sign",
				"X509v3 Subject Key Identifier",
				"X509v3 Authority Key Identifier",
			)
			if inter {
				interText := mustOpenSSL(t, run, "x509", "-in", join(caDir, IntermediateCertFile), "-text", "-noout")
				wantAll(t, "intermediate.pem", interText,
					"Subject: CN = Interop Root Intermediate",
					"Issuer: CN = Interop Root",
					"CA:TRUE, pathlen:0",
					"Certificate Sign, CRL Sign",
				)
			}
			leafText := mustOpenSSL(t, run, "x509", "-in", leaf, "-text", "-noout")
			wantAll(t, "cert.pem", leafText,
				"Subject: CN = container-0001",
				"CA:FALSE",
				"X509v3 Key Usage: critical",
				"Digital Signature",
				"TLS Web Client Authentication",
				"X509v3 Authority Key Identifier",
				"ASN1 OID: prime256v1",
			)
			if strings.Contains(leafText, "TLS Web Server Authentication") {
				t.Error("device certificate has serverAuth")
			}

			// Thumbprints match openssl's fingerprints.
			s1, s256 := Thumbprints(d.Leaf)
			fp1 := mustOpenSSL(t, run, "x509", "-in", leaf, "-noout", "-fingerprint", "-sha1")
			fp256 := mustOpenSSL(t, run, "x509", "-in", leaf, "-noout", "-fingerprint", "-sha256")
			if got := strings.ReplaceAll(strings.TrimSpace(fp1[strings.Index(fp1, "=")+1:]), ":", ""); got != s1 {
				t.Errorf("SHA-1 thumbprint %s, openssl says %s", s1, got)
			}
			if got := strings.ReplaceAll(strings.TrimSpace(fp256[strings.Index(fp256, "=")+1:]), ":", ""); got != s256 {
				t.Errorf("SHA-256 thumbprint %s, openssl says %s", s256, got)
			}

			// openssl reads our PKCS#8 key and finds it matches the certificate.
			keyPub := mustOpenSSL(t, run, "pkey", "-in", join(devDir, DeviceKeyFile), "-pubout")
			certPub := mustOpenSSL(t, run, "x509", "-in", leaf, "-noout", "-pubkey")
			if keyPub != certPub || !strings.Contains(keyPub, "BEGIN PUBLIC KEY") {
				t.Errorf("openssl: key.pem public key differs from cert.pem's:\n%s\n%s", keyPub, certPub)
			}
		})
	}
}

func TestOpenSSLVerificationCert(t *testing.T) {
	run := openssl(t)
	dir := t.TempDir()
	ca, err := InitCA(join(dir, "ca"), CAOptions{Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	const code = "0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F6071"
	for _, tc := range []struct {
		level  Level
		anchor string
		extra  []string
	}{
		{LevelRoot, join(ca.Dir, RootCertFile), nil},
		// An uploaded intermediate is the trust anchor on its own.
		{LevelIntermediate, join(ca.Dir, IntermediateCertFile), []string{"-partial_chain"}},
	} {
		v, err := ca.VerificationCertFor(tc.level, code, DeviceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		path := join(dir, string(tc.level)+"-verification.pem")
		writeTestFile(t, path, EncodePEM(v.Leaf), 0o644)
		args := append([]string{"verify"}, tc.extra...)
		args = append(args, "-CAfile", tc.anchor, path)
		wantAll(t, "openssl verify (verification cert, "+string(tc.level)+")", mustOpenSSL(t, run, args...), ": OK")
		wantAll(t, "verification cert text", mustOpenSSL(t, run, "x509", "-in", path, "-noout", "-subject"), "subject=CN = "+code)
	}
}

func TestOpenSSLKeysAndCA(t *testing.T) {
	run := openssl(t)
	dir := t.TempDir()
	// Keys in the formats openssl writes: SEC 1 after EC PARAMETERS,
	// PKCS#1 and PKCS#8.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"sec1.pem", []string{"ecparam", "-name", "prime256v1", "-genkey", "-out"}, "ecdsa-p256"},
		{"pkcs1.pem", []string{"genrsa", "-traditional", "-out"}, "rsa-2048"},
		{"pkcs8.pem", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out"}, "ecdsa-p384"},
	} {
		path := join(dir, tc.name)
		args := append(tc.args, path)
		if tc.args[0] == "genrsa" {
			args = append(args, "2048") // the size must come last
		}
		mustOpenSSL(t, run, args...)
		k, err := ReadKeyFile(path)
		if err != nil {
			t.Errorf("ReadKeyFile(openssl %s): %v", tc.name, err)
			continue
		}
		if got := KeyTypeOf(k.Public()); got != tc.want {
			t.Errorf("ReadKeyFile(openssl %s) key type %s, want %s", tc.name, got, tc.want)
		}
	}

	// A root made by openssl loads as a CA and issues devices that openssl
	// verifies.
	caDir := join(dir, "ossl-ca")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustOpenSSL(t, run, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", join(caDir, RootKeyFile), "-out", join(caDir, RootCertFile), "-days", "30", "-subj", "/CN=OpenSSL Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	ca, err := LoadCA(caDir)
	if err != nil {
		t.Fatalf("LoadCA(openssl CA): %v", err)
	}
	d := mustDevice(t, ca, "ossl-1", DeviceOptions{Days: 7})
	devDir, err := WriteDevice(join(dir, "devices"), d, false)
	if err != nil {
		t.Fatal(err)
	}
	out := mustOpenSSL(t, run, "verify", "-purpose", "sslclient", "-CAfile", join(caDir, RootCertFile), join(devDir, DeviceCertFile))
	wantAll(t, "openssl verify", out, ": OK")
	if err := Verify(d.Chain, []*x509.Certificate{ca.Root}, time.Time{}); err != nil {
		t.Errorf("Verify(device of openssl CA) = %v", err)
	}
}
