// Package sas implements Azure shared access signatures as the emulator
// checks them: connection strings ("HostName=...;SharedAccessKeyName=...;
// SharedAccessKey=..."), tokens ("SharedAccessSignature sr=...&sig=...&se=...
// &skn=...") and their HMAC-SHA256 signatures over "resource\nexpiry".
//
// The emulator deliberately does not share this code with the device or
// service clients of the project: a test that signs with one implementation
// and verifies with another proves more than one that round-trips through the
// same code. The package is pure and safe for concurrent use.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors for the outcomes callers branch on.
var (
	// ErrMalformed means a token or connection string could not be parsed.
	ErrMalformed = errors.New("sas: malformed")
	// ErrExpired means a token's expiry (se) has passed.
	ErrExpired = errors.New("sas: token expired")
	// ErrSignature means a token's signature does not match the key.
	ErrSignature = errors.New("sas: signature mismatch")
)

// Prefix starts every token in an Authorization header or MQTT password.
const Prefix = "SharedAccessSignature "

// ConnectionString holds the fields of an Azure connection string.
type ConnectionString struct {
	HostName            string
	SharedAccessKeyName string
	// SharedAccessKey is the base64 key as written in the string.
	SharedAccessKey string
	DeviceID        string
}

// ParseConnectionString parses "Key=value;Key=value". Field names are matched
// case-insensitively; values may contain "=" (base64 keys do). HostName is
// required, and so is SharedAccessKey unless the string names a device
// (X.509 device strings have "x509=true" and no key).
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	var x509 bool
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return ConnectionString{}, fmt.Errorf("%w: connection string field %q has no '='", ErrMalformed, part)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			cs.HostName = v
		case "sharedaccesskeyname":
			cs.SharedAccessKeyName = v
		case "sharedaccesskey":
			cs.SharedAccessKey = v
		case "deviceid":
			cs.DeviceID = v
		case "x509":
			x509 = strings.EqualFold(v, "true")
		}
	}
	if cs.HostName == "" {
		return ConnectionString{}, fmt.Errorf("%w: connection string has no HostName", ErrMalformed)
	}
	if cs.SharedAccessKey == "" && !(x509 && cs.DeviceID != "") {
		return ConnectionString{}, fmt.Errorf("%w: connection string has no SharedAccessKey", ErrMalformed)
	}
	if cs.SharedAccessKey != "" {
		if _, err := base64.StdEncoding.DecodeString(cs.SharedAccessKey); err != nil {
			return ConnectionString{}, fmt.Errorf("%w: SharedAccessKey is not base64: %v", ErrMalformed, err)
		}
	}
	return cs, nil
}

// String renders the connection string in Azure's field order.
func (cs ConnectionString) String() string {
	var b strings.Builder
	b.WriteString("HostName=" + cs.HostName)
	if cs.DeviceID != "" {
		b.WriteString(";DeviceId=" + cs.DeviceID)
	}
	if cs.SharedAccessKeyName != "" {
		b.WriteString(";SharedAccessKeyName=" + cs.SharedAccessKeyName)
	}
	if cs.SharedAccessKey != "" {
		b.WriteString(";SharedAccessKey=" + cs.SharedAccessKey)
	}
	return b.String()
}

// Key returns the decoded SharedAccessKey.
func (cs ConnectionString) Key() ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(cs.SharedAccessKey)
	if err != nil {
		return nil, fmt.Errorf("%w: SharedAccessKey is not base64: %v", ErrMalformed, err)
	}
	return k, nil
}

// Sign returns base64(HMAC-SHA256(key, resource + "\n" + expiry)).
func Sign(key []byte, resource string, expiry int64) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(resource + "\n" + strconv.FormatInt(expiry, 10)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// NewToken builds a token for resource (a host name, or host/devices/id),
// signed with key and valid until expiry. keyName is the policy (skn); it is
// left out when empty, as in device tokens.
func NewToken(resource, keyName string, key []byte, expiry time.Time) string {
	se := expiry.Unix()
	sr := url.QueryEscape(resource)
	s := Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(Sign(key, sr, se)) + "&se=" + strconv.FormatInt(se, 10)
	if keyName != "" {
		s += "&skn=" + url.QueryEscape(keyName)
	}
	return s
}

// Token is a parsed shared access signature.
type Token struct {
	// RawResource is sr exactly as it appeared in the token.
	RawResource string
	// Resource is sr URL-decoded.
	Resource string
	// Signature is sig URL-decoded (base64).
	Signature string
	// Expiry is se as a Unix time in seconds.
	Expiry int64
	// KeyName is skn URL-decoded; empty in device tokens.
	KeyName string
}

// Parse reads a token with or without the "SharedAccessSignature " prefix.
// Fields may come in any order; sr, sig and se are required.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if p := strings.TrimSpace(Prefix); len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
		s = strings.TrimSpace(s[len(p):])
	}
	if s == "" {
		return Token{}, fmt.Errorf("%w: empty token", ErrMalformed)
	}
	var t Token
	var haveSE, haveSig, haveSR bool
	for _, part := range strings.Split(s, "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return Token{}, fmt.Errorf("%w: token field %q has no '='", ErrMalformed, part)
		}
		switch strings.ToLower(k) {
		case "sr":
			t.RawResource = v
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return Token{}, fmt.Errorf("%w: sr: %v", ErrMalformed, err)
			}
			t.Resource, haveSR = dec, true
		case "sig":
			// PathUnescape keeps a literal '+' (base64) instead of turning it
			// into a space, for clients that do not encode the signature.
			dec, err := url.PathUnescape(v)
			if err != nil {
				return Token{}, fmt.Errorf("%w: sig: %v", ErrMalformed, err)
			}
			t.Signature, haveSig = dec, true
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Token{}, fmt.Errorf("%w: se %q is not a number of seconds", ErrMalformed, v)
			}
			t.Expiry, haveSE = n, true
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return Token{}, fmt.Errorf("%w: skn: %v", ErrMalformed, err)
			}
			t.KeyName = dec
		}
	}
	var missing []string
	if !haveSR {
		missing = append(missing, "sr")
	}
	if !haveSig {
		missing = append(missing, "sig")
	}
	if !haveSE {
		missing = append(missing, "se")
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return Token{}, fmt.Errorf("%w: token lacks %s", ErrMalformed, strings.Join(missing, ", "))
	}
	return t, nil
}

// Verify checks the signature against key, accepting a signature computed
// over sr as it appears in the token or over its decoded form (clients differ
// in whether they encode sr before signing), and that the token has not
// expired at now.
func (t Token) Verify(key []byte, now time.Time) error {
	got, err := base64.StdEncoding.DecodeString(t.Signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	ok := false
	for _, sr := range []string{t.RawResource, t.Resource, url.QueryEscape(t.Resource)} {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(sr + "\n" + strconv.FormatInt(t.Expiry, 10)))
		if hmac.Equal(m.Sum(nil), got) {
			ok = true
			break
		}
	}
	if !ok {
		return ErrSignature
	}
	if now.Unix() > t.Expiry {
		return fmt.Errorf("%w: expired at %s", ErrExpired, time.Unix(t.Expiry, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// ResourceHost returns the host part of the decoded resource, lower-cased,
// and the path after it ("" for a bare host name). A scheme such as
// "https://" is tolerated.
func (t Token) ResourceHost() (host, path string) {
	r := t.Resource
	if i := strings.Index(r, "://"); i >= 0 {
		r = r[i+3:]
	}
	host, path, _ = strings.Cut(r, "/")
	return strings.ToLower(host), strings.TrimSuffix(path, "/")
}
