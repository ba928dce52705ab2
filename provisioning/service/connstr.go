package service

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ConnectionString is a parsed service connection string: the host name of
// a DPS instance or IoT hub and one of its shared access policies.
type ConnectionString struct {
	// HostName is the service's host, for example
	// "fleet.azure-devices-provisioning.net" or "hub1.azure-devices.net".
	// It may carry a port ("localhost:8443") for a local emulator.
	HostName string
	// KeyName is the shared access policy name.
	KeyName string
	// Key is the policy key, base64-encoded as Azure shows it.
	Key string
}

// ParseConnectionString parses "HostName=H;SharedAccessKeyName=N;
// SharedAccessKey=K". Field names are matched without regard to case,
// fields Azure adds that this package does not use are ignored, and the key
// must be valid base64. A device connection string (with DeviceId) is
// refused: service calls need a shared access policy. Errors never repeat
// the key.
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	s = strings.TrimSpace(s)
	if s == "" {
		return cs, errors.New("service: connection string is empty")
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return cs, fmt.Errorf("service: connection string field %q has no '='; expected HostName=…;SharedAccessKeyName=…;SharedAccessKey=…", redactField(part))
		}
		key := strings.ToLower(strings.TrimSpace(name))
		if seen[key] {
			return cs, fmt.Errorf("service: connection string has %s twice", name)
		}
		seen[key] = true
		switch key {
		case "hostname":
			cs.HostName = strings.TrimSpace(value)
		case "sharedaccesskeyname":
			cs.KeyName = strings.TrimSpace(value)
		case "sharedaccesskey":
			cs.Key = strings.TrimSpace(value)
		case "deviceid", "moduleid":
			return cs, fmt.Errorf("service: connection string names a %s: it is a device connection string; use a shared access policy's connection string (iothubowner, provisioningserviceowner or similar)", name)
		}
	}
	var missing []string
	if cs.HostName == "" {
		missing = append(missing, "HostName")
	}
	if cs.KeyName == "" {
		missing = append(missing, "SharedAccessKeyName")
	}
	if cs.Key == "" {
		missing = append(missing, "SharedAccessKey")
	}
	if len(missing) > 0 {
		return cs, fmt.Errorf("service: connection string lacks %s; copy it from the shared access policy (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)", strings.Join(missing, ", "))
	}
	if strings.ContainsAny(cs.HostName, "/ ") {
		return cs, fmt.Errorf("service: connection string HostName %q is not a host name (no scheme or path)", cs.HostName)
	}
	if _, err := base64.StdEncoding.DecodeString(cs.Key); err != nil {
		return cs, errors.New("service: connection string SharedAccessKey is not valid base64; copy the whole key")
	}
	return cs, nil
}

// redactField hides the value of a malformed field in case it is a key.
func redactField(part string) string {
	if len(part) > 12 {
		return part[:12] + "…"
	}
	return part
}

// KeyBytes returns the decoded policy key.
func (cs ConnectionString) KeyBytes() ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(cs.Key)
	if err != nil {
		return nil, errors.New("service: SharedAccessKey is not valid base64")
	}
	return k, nil
}

// String returns the connection string with the key redacted, so that a
// ConnectionString printed or logged by mistake leaks nothing.
func (cs ConnectionString) String() string {
	return "HostName=" + cs.HostName + ";SharedAccessKeyName=" + cs.KeyName + ";SharedAccessKey=<redacted>"
}

// SASToken returns a shared access signature for resource (a host name such
// as "hub1.azure-devices.net", or a host and path) signed with the policy
// keyName's decoded key and valid until expiry:
//
//	SharedAccessSignature sr={enc(resource)}&sig={enc(base64(hmac))}&se={unix}&skn={enc(keyName)}
//
// where hmac is HMAC-SHA256(key, enc(resource) + "\n" + unix) and enc is URL
// query encoding. Expiry is truncated to whole seconds.
func SASToken(resource, keyName string, key []byte, expiry time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + url.QueryEscape(keyName)
}
