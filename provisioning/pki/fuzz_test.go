package pki

import (
	"bytes"
	"testing"
)

// FuzzParseCertsPEM feeds arbitrary files to the certificate reader: it must
// not panic, and what it accepts must encode back to the same certificates.
func FuzzParseCertsPEM(f *testing.F) {
	ca, err := NewMemoryCA(CAOptions{Intermediate: true})
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, _ := MarshalKeyPEM(ca.IssuerKey)
	f.Add(EncodePEM(ca.Root, ca.Issuer))
	f.Add(append(keyPEM, EncodePEM(ca.Root)...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertsPEM(data)
		if err != nil {
			return
		}
		again, err := ParseCertsPEM(EncodePEM(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-parse of %d certificates: %d, %v", len(certs), len(again), err)
		}
		for i := range certs {
			if !bytes.Equal(certs[i].Raw, again[i].Raw) {
				t.Fatalf("certificate %d changed in a round trip", i)
			}
		}
	})
}

// FuzzParseKeyPEM feeds arbitrary files to the key reader: it must not
// panic, and an accepted key must survive a PKCS#8 round trip.
func FuzzParseKeyPEM(f *testing.F) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyECDSAP384} {
		k, err := GenerateKey(kt)
		if err != nil {
			f.Fatal(err)
		}
		data, _ := MarshalKeyPEM(k)
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyPEM(data)
		if err != nil {
			return
		}
		out, err := MarshalKeyPEM(k)
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		k2, err := ParseKeyPEM(out)
		if err != nil || !keyMatches(k2, k.Public()) {
			t.Fatalf("PKCS#8 round trip: %v", err)
		}
	})
}
