package sas

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// key is base64("secret-key-0123456789abcdef").
const key64 = "c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVm"

// knownSig was computed independently with
// printf 'myhub.azure-devices.net\n1700000000' | openssl dgst -sha256 -mac HMAC -macopt hexkey:... -binary | base64
const knownSig = "OUK0rK5hMJpMeAHj/Xw33WbreiLNt++wyM0upXNe2jQ="

func mustKey(t *testing.T) []byte {
	t.Helper()
	cs, err := ParseConnectionString("HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + key64)
	if err != nil {
		t.Fatal(err)
	}
	k, err := cs.Key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignKnownAnswer(t *testing.T) {
	if got := Sign(mustKey(t), "myhub.azure-devices.net", 1700000000); got != knownSig {
		t.Fatalf("Sign = %q, want %q", got, knownSig)
	}
}

func TestVerifyNodeStyleToken(t *testing.T) {
	// The rendering the Node SDK produces: sr not encoded, sig strictly
	// encoded, skn before se.
	tok := "SharedAccessSignature sr=myhub.azure-devices.net&sig=OUK0rK5hMJpMeAHj%2FXw33WbreiLNt%2B%2BwyM0upXNe2jQ%3D&skn=iothubowner&se=1700000000"
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.KeyName != "iothubowner" || p.Expiry != 1700000000 || p.Resource != "myhub.azure-devices.net" {
		t.Fatalf("Parse = %+v", p)
	}
	if err := p.Verify(mustKey(t), time.Unix(1699999999, 0)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := p.Verify(mustKey(t), time.Unix(1700000001, 0)); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after expiry = %v, want ErrExpired", err)
	}
	if err := p.Verify([]byte("other key"), time.Unix(1699999999, 0)); !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify with wrong key = %v, want ErrSignature", err)
	}
}

func TestVerifyUnencodedPlusInSignature(t *testing.T) {
	tok := "sr=myhub.azure-devices.net&sig=" + knownSig + "&se=1700000000"
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(mustKey(t), time.Unix(1600000000, 0)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestNewTokenRoundTripWithEncodedResource(t *testing.T) {
	k := mustKey(t)
	exp := time.Unix(1800000000, 0)
	tok := NewToken("localhost:8443/devices/dev 1", "", k, exp)
	if strings.Contains(tok, "skn=") {
		t.Fatalf("device token has skn: %s", tok)
	}
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(k, exp.Add(-time.Second)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	host, path := p.ResourceHost()
	if host != "localhost:8443" || path != "devices/dev 1" {
		t.Fatalf("ResourceHost = %q, %q", host, path)
	}
	// Tampering with the expiry must break the signature.
	bad := strings.Replace(tok, "se=1800000000", "se=1800000100", 1)
	p2, err := Parse(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Verify(k, exp); !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify tampered = %v, want ErrSignature", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "SharedAccessSignature ", "empty token"},
		{"no equals", "sr=a&sig", "has no '='"},
		{"missing fields", "sr=a", "lacks se, sig"},
		{"bad se", "sr=a&sig=b&se=tomorrow", "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key64)
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "localhost:8443" || cs.SharedAccessKeyName != "iothubowner" {
		t.Fatalf("parsed %+v", cs)
	}
	if got, want := cs.String(), "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey="+key64; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if _, err := ParseConnectionString("HostName=h;DeviceId=d;x509=true"); err != nil {
		t.Fatalf("x509 device string: %v", err)
	}
	for _, bad := range []string{"", "SharedAccessKey=" + key64, "HostName=h", "HostName=h;SharedAccessKey=***", "HostName"} {
		if _, err := ParseConnectionString(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseConnectionString(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("SharedAccessSignature sr=a&sig=b&se=1&skn=c")
	f.Add("sr=%zz&sig=1&se=2")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		_ = tok.Verify([]byte("k"), time.Unix(0, 0))
		tok.ResourceHost()
	})
}
