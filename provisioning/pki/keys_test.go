package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			if kt == KeyRSA4096 && testing.Short() {
				t.Skip("rsa-4096 key generation is slow")
			}
			k, err := GenerateKey(kt)
			if err != nil {
				t.Fatalf("GenerateKey(%s): %v", kt, err)
			}
			if got := KeyTypeOf(k.Public()); got != string(kt) {
				t.Errorf("KeyTypeOf(GenerateKey(%s)) = %s", kt, got)
			}
		})
	}
	for _, bad := range []KeyType{"", "ecdsa-p521", "rsa-1024", "ed25519"} {
		if _, err := GenerateKey(bad); !errors.Is(err, ErrKeyType) {
			t.Errorf("GenerateKey(%q) = %v, want ErrKeyType", bad, err)
		}
	}
}

func TestParseKeyType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeyType
	}{
		{"ecdsa-p256", KeyECDSAP256}, {"ECDSA-P384", KeyECDSAP384}, {" rsa-2048", KeyRSA2048}, {"rsa-4096", KeyRSA4096},
	} {
		got, err := ParseKeyType(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseKeyType(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
	_, err := ParseKeyType("dsa")
	if !errors.Is(err, ErrKeyType) || !strings.Contains(err.Error(), "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096") {
		t.Errorf("ParseKeyType(dsa) = %v, want ErrKeyType listing the types", err)
	}
}

func TestKeyTypeOf(t *testing.T) {
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		pub  any
		want string
	}{
		{p521.Public(), "ecdsa-p521"}, {edPub, "ed25519"}, {"nonsense", "unknown"},
	} {
		if got := KeyTypeOf(tc.pub); got != tc.want {
			t.Errorf("KeyTypeOf(%T) = %q, want %q", tc.pub, got, tc.want)
		}
	}
}

func TestParseKeyPEMFormats(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})
	for _, tc := range []struct {
		name string
		data []byte
		pub  any
	}{
		{"pkcs8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), ec.Public()},
		{"sec1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec.Public()},
		{"sec1 after ec parameters", append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), ec.Public()},
		{"pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), rk.Public()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKeyPEM(tc.data)
			if err != nil {
				t.Fatalf("ParseKeyPEM: %v", err)
			}
			if !keyMatches(k, tc.pub) {
				t.Errorf("ParseKeyPEM returned a different key")
			}
		})
	}
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"empty", "no PRIVATE KEY", nil},
		{"certificate only", "no PRIVATE KEY", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})},
		{"encrypted pkcs8", "encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})},
		{"encrypted pkcs1", "encrypted", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})},
		{"encrypted sec1", "encrypted", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})},
		{"garbage der", "parse PRIVATE KEY", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyPEM(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseKeyPEM = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := join(dir, "k.pem")
	k, _ := GenerateKey(KeyECDSAP384)
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatalf("WriteKeyFile: %v", err)
	}
	if m := perm(t, path); m != 0o600 {
		t.Errorf("key mode = %04o, want 0600", m)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file is not PKCS#8 PEM: %.40q", data)
	}
	got, err := ReadKeyFile(path)
	if err != nil {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	if !keyMatches(got, k.Public()) {
		t.Error("ReadKeyFile returned a different key")
	}
	// Replacing keeps mode 0600 even if the old file was wider.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	k2, _ := GenerateKey(KeyECDSAP256)
	if err := WriteKeyFile(path, k2); err != nil {
		t.Fatalf("WriteKeyFile (replace): %v", err)
	}
	if m := perm(t, path); m != 0o600 {
		t.Errorf("replaced key mode = %04o, want 0600", m)
	}
	if got, _ := ReadKeyFile(path); got == nil || !keyMatches(got, k2.Public()) {
		t.Error("WriteKeyFile did not replace the key")
	}
	if _, err := ReadKeyFile(join(dir, "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadKeyFile(missing) = %v, want fs.ErrNotExist", err)
	}
	if err := WriteKeyFile(join(dir, "nodir", "k.pem"), k); err == nil {
		t.Error("WriteKeyFile into a missing directory succeeded")
	}
}

func TestCheckKeyPerm(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, false}, {0o604, false}, {0o644, false}, {0o610, false},
	} {
		path := join(dir, "key")
		writeTestFile(t, path, []byte("x"), tc.mode)
		err := CheckKeyPerm(path)
		if tc.ok && err != nil {
			t.Errorf("CheckKeyPerm(mode %04o) = %v, want nil", tc.mode, err)
		}
		if !tc.ok && (!errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+path)) {
			t.Errorf("CheckKeyPerm(mode %04o) = %v, want ErrKeyPermissions telling to chmod 600", tc.mode, err)
		}
	}
	if err := CheckKeyPerm(join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckKeyPerm(missing) = %v, want fs.ErrNotExist", err)
	}
}
