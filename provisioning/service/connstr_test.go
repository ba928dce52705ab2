package service

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testKey is base64("tracker-test-key-0123456789abcdef").
const testKey = "dHJhY2tlci10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGVm"

// TestSASTokenKnownAnswer checks SASToken against signatures computed
// outside Go with
//
//	printf '%s\n%s' SR 1767225600 | openssl dgst -sha256 -mac HMAC \
//	  -macopt hexkey:$(printf 'tracker-test-key-0123456789abcdef' | xxd -p -c 256) -binary | base64
func TestSASTokenKnownAnswer(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString(testKey)
	expiry := time.Unix(1767225600, 0)
	tests := []struct {
		resource, keyName, want string
	}{
		{
			"fleet-dps.azure-devices-provisioning.net", "provisioningserviceowner",
			"SharedAccessSignature sr=fleet-dps.azure-devices-provisioning.net&sig=" +
				url.QueryEscape("LX7JT3ikZdMqxhbMB5FbFvcJ4qwZT1LPy3lW5WO4SyY=") + "&se=1767225600&skn=provisioningserviceowner",
		},
		{
			// A host with a port is URL-encoded before signing (SR=localhost%3A8443).
			"localhost:8443", "iothubowner",
			"SharedAccessSignature sr=localhost%3A8443&sig=" +
				url.QueryEscape("M0LrSOtjBPO93QZ00TmDxDr7x5JATrI7DlJlnn7jzrY=") + "&se=1767225600&skn=iothubowner",
		},
	}
	for _, tt := range tests {
		if got := SASToken(tt.resource, tt.keyName, key, expiry); got != tt.want {
			t.Errorf("SASToken(%q, %q) =\n  %s\nwant\n  %s", tt.resource, tt.keyName, got, tt.want)
		}
	}
}

// TestSASTokenVerifies parses a token the way a service does and checks its
// signature with an HMAC computed here.
func TestSASTokenVerifies(t *testing.T) {
	key := []byte("another key with !'()* and spaces")
	resource := "hub1.azure-devices.net/devices/dev 1"
	expiry := time.Date(2030, 1, 2, 3, 4, 5, 999, time.UTC)
	tok := SASToken(resource, "registry Read!", key, expiry)
	rest, ok := strings.CutPrefix(tok, "SharedAccessSignature ")
	if !ok {
		t.Fatalf("token %q lacks the SharedAccessSignature prefix", tok)
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(rest, "&") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	if len(fields) != 4 {
		t.Fatalf("token fields = %v, want sr, sig, se, skn", fields)
	}
	if fields["se"] != "1893553445" {
		t.Errorf("se = %q, want 1893553445", fields["se"])
	}
	skn, _ := url.QueryUnescape(fields["skn"])
	if skn != "registry Read!" {
		t.Errorf("skn = %q, want %q", skn, "registry Read!")
	}
	sr, _ := url.QueryUnescape(fields["sr"])
	if sr != resource {
		t.Errorf("sr decodes to %q, want %q", sr, resource)
	}
	sig, err := url.QueryUnescape(fields["sig"])
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(fields["sr"] + "\n" + fields["se"]))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); sig != want {
		t.Errorf("sig = %q, want %q", sig, want)
	}
}

func TestParseConnectionString(t *testing.T) {
	tests := []struct {
		name, in string
		want     ConnectionString
		wantErr  string
	}{
		{"dps", "HostName=fleet.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + testKey,
			ConnectionString{"fleet.azure-devices-provisioning.net", "provisioningserviceowner", testKey}, ""},
		{"case and spaces and trailing semicolon", " hostname = localhost:8443 ; sharedaccesskeyname=iothubowner;SHAREDACCESSKEY=" + testKey + ";",
			ConnectionString{"localhost:8443", "iothubowner", testKey}, ""},
		{"unknown fields ignored", "HostName=h;SharedAccessKeyName=k;SharedAccessKey=" + testKey + ";GatewayHostName=g",
			ConnectionString{"h", "k", testKey}, ""},
		{"empty", "  ", ConnectionString{}, "empty"},
		{"missing key", "HostName=h;SharedAccessKeyName=k", ConnectionString{}, "lacks SharedAccessKey"},
		{"missing two", "SharedAccessKey=" + testKey, ConnectionString{}, "lacks HostName, SharedAccessKeyName"},
		{"device string", "HostName=h;DeviceId=d;SharedAccessKey=" + testKey, ConnectionString{}, "device connection string"},
		{"no equals", "HostName=h;garbage;SharedAccessKey=" + testKey, ConnectionString{}, "has no '='"},
		{"duplicate", "HostName=h;HostName=i;SharedAccessKeyName=k;SharedAccessKey=" + testKey, ConnectionString{}, "HostName twice"},
		{"bad base64", "HostName=h;SharedAccessKeyName=k;SharedAccessKey=not*base64", ConnectionString{}, "not valid base64"},
		{"url as host", "HostName=https://h/;SharedAccessKeyName=k;SharedAccessKey=" + testKey, ConnectionString{}, "not a host name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConnectionString(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseConnectionString(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "not*base64") {
					t.Errorf("error %q repeats the key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConnectionString(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseConnectionString(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestConnectionStringRedacts(t *testing.T) {
	cs := ConnectionString{HostName: "h", KeyName: "k", Key: testKey}
	for _, s := range []string{cs.String(), strings.TrimSpace(fmtV(cs))} {
		if strings.Contains(s, testKey) {
			t.Errorf("%q shows the key", s)
		}
		if !strings.Contains(s, "HostName=h") {
			t.Errorf("%q lacks the host name", s)
		}
	}
}
