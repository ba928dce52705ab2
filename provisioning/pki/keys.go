package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// KeyType names a key algorithm and size.
type KeyType string

// The supported key types. Azure DPS and IoT Hub accept all of them for CA
// and device certificates.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA4096   KeyType = "rsa-4096"
)

// DefaultKeyType is used when an options struct leaves Key empty: P-256 keys
// are small, fast to generate in bulk and cheap to use on the boards.
const DefaultKeyType = KeyECDSAP256

// KeyTypes lists the supported key types.
func KeyTypes() []KeyType {
	return []KeyType{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096}
}

func keyTypeNames() string {
	var names []string
	for _, k := range KeyTypes() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// ParseKeyType returns the KeyType named s (as accepted on command lines).
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range KeyTypes() {
		if string(k) == strings.ToLower(strings.TrimSpace(s)) {
			return k, nil
		}
	}
	return "", errorf("%w %q: use one of %s", ErrKeyType, s, keyTypeNames())
}

// GenerateKey creates a new private key of type t.
func GenerateKey(t KeyType) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	switch t {
	case KeyECDSAP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, errorf("%w %q: use one of %s", ErrKeyType, t, keyTypeNames())
	}
	if err != nil {
		return nil, errorf("pki: generate %s key: %w", t, err)
	}
	return k, nil
}

// KeyTypeOf describes a public key the way KeyType names are written
// ("ecdsa-p256", "rsa-2048", "ed25519"); for other keys it returns a
// description such as "rsa-3072" or "unknown".
func KeyTypeOf(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return string(KeyECDSAP256)
		case elliptic.P384():
			return string(KeyECDSAP384)
		case elliptic.P521():
			return "ecdsa-p521"
		}
		return "ecdsa-" + strings.ToLower(p.Curve.Params().Name)
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", p.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	}
	return "unknown"
}

// keyMatches reports whether key is the private half of pub.
func keyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	kp, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && kp.Equal(pub)
}

// MarshalKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
// Other blocks, such as the "EC PARAMETERS" that openssl ecparam writes, are
// skipped. Encrypted keys are refused.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errorf("%w: no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block found", ErrNoKey)
		}
		var (
			k   any
			err error
		)
		if _, enc := b.Headers["DEK-Info"]; enc && strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return nil, errorf("%w: the key is encrypted; decrypt it first with 'openssl pkey -in KEY -out KEY.plain'", ErrNoKey)
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errorf("%w: the key is encrypted; decrypt it first with 'openssl pkey -in KEY -out KEY.plain'", ErrNoKey)
		default:
			continue
		}
		if err != nil {
			return nil, errorf("pki: parse %s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errorf("%w: %T cannot sign", ErrNoKey, k)
		}
		return s, nil
	}
}

// ReadKeyFile reads a PEM private key (see [ParseKeyPEM]). It does not check
// the file's permissions; call [CheckKeyPerm] for that.
func ReadKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errorf("pki: read key: %w", err)
	}
	k, err := ParseKeyPEM(data)
	if err != nil {
		return nil, errorf("pki: read key %s: %w", path, err)
	}
	return k, nil
}

// CheckKeyPerm returns an error wrapping [ErrKeyPermissions] when the file
// at path can be read, written or executed by its group or by others, and
// tells how to fix it. Callers decide whether that is fatal.
func CheckKeyPerm(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return errorf("pki: check key permissions: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return errorf("%w: %s has mode %04o; run 'chmod 600 %s'", ErrKeyPermissions, path, m, path)
	}
	return nil
}

// WriteKeyFile writes key to path as PKCS#8 PEM with mode 0600, atomically,
// replacing any existing file.
func WriteKeyFile(path string, key crypto.Signer) error {
	data, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return writeFile(path, data, 0o600, true)
}

// isNotExist reports whether err says a file does not exist.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
