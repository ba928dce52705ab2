package dps

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

// Defaults for Config fields left zero.
const (
	DefaultConnectTimeout   = 30 * time.Second
	DefaultOperationTimeout = 30 * time.Second
	// DefaultMinPollInterval honours DPS's limit of 5 operation-status
	// requests per 10 seconds.
	DefaultMinPollInterval = 2 * time.Second
	DefaultMaxPolls        = 60
	DefaultThrottleRetries = 2
	// DefaultKeepAlive is the MQTT keep-alive; a registration takes
	// seconds, so it only matters on a stalled link.
	DefaultKeepAlive = 60 * time.Second
)

// Config configures one registration. Endpoint, IDScope, RegistrationID,
// Certificate and RootCAs are required.
type Config struct {
	// Endpoint is the DPS device endpoint, host[:port]; the port defaults
	// to 8883. For Azure: global.azure-devices-provisioning.net.
	Endpoint string
	// IDScope is the DPS instance's ID scope (0ne...).
	IDScope string
	// RegistrationID is the device's registration ID; it must equal the
	// subject CN of the certificate's leaf.
	RegistrationID string
	// Certificate is the device's chain (leaf first, with intermediates)
	// and its key, which may be any crypto.Signer.
	Certificate tls.Certificate
	// RootCAs verifies the server's certificate (see identity.TrustPool).
	RootCAs *x509.CertPool
	// Payload, when not nil, is marshalled to JSON and sent as the
	// registration's "payload" (custom allocation data, for example the
	// firmware version and hardware model).
	Payload any
	// Time is the clock used to check the server certificate's validity
	// (tls.Config.Time): a board whose system clock still says 1970 can
	// pass the agent's best-known time. Nil means time.Now.
	Time func() time.Time
	// ConnectTimeout bounds the TCP, TLS and MQTT connection (default
	// 30s).
	ConnectTimeout time.Duration
	// OperationTimeout bounds each request: the PUBACK and the response to
	// one register or poll (default 30s). The whole registration is
	// bounded by the context.
	OperationTimeout time.Duration
	// MinPollInterval is the shortest wait between two requests, whatever
	// retry-after says (default 2s, the DPS polling limit). Only tests
	// against the emulator should lower it.
	MinPollInterval time.Duration
	// MaxPolls bounds the operation-status requests of one registration
	// (default 60); beyond it Register fails with ErrStillAssigning.
	MaxPolls int
	// ThrottleRetries is how many 429 or 5xx answers one Register absorbs
	// by waiting and retrying on the same connection before it returns a
	// *ThrottledError (default 2). A negative value returns at the first
	// one. Register also returns at once when the wait asked for would
	// pass the context's deadline.
	ThrottleRetries int
	// KeepAlive is the MQTT keep-alive interval (default 60s).
	KeepAlive time.Duration
	// Logger receives debug and info records about the registration; nil
	// discards them. Keys and certificates are never logged.
	Logger *slog.Logger
	// ClientVersion, when set, is appended to the MQTT user name as
	// &ClientVersion=<url-encoded>, as the SDKs send their user agent
	// (for example "trackerd/1.2.0").
	ClientVersion string
}

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	host, addr string
	leaf       *x509.Certificate
	body       []byte
}

func (c *Config) resolve() (*settings, error) {
	s := &settings{Config: *c}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	host, port, err := splitEndpoint(c.Endpoint)
	if err != nil {
		bad("Endpoint %v", err)
	}
	s.host, s.addr = host, net.JoinHostPort(host, port)
	if c.IDScope == "" {
		bad("IDScope is empty; use the ID scope shown on the DPS overview page (0ne...)")
	} else if strings.ContainsAny(c.IDScope, "/ ?&#+") {
		bad("IDScope %q contains characters an ID scope never has", c.IDScope)
	}
	if err := pki.ValidateRegistrationID(c.RegistrationID); err != nil {
		bad("RegistrationID: %v", err)
	}
	if len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil {
		bad("Certificate has no certificate chain or no private key; load the device identity first")
	} else {
		leaf := c.Certificate.Leaf
		if leaf == nil {
			leaf, err = x509.ParseCertificate(c.Certificate.Certificate[0])
			if err != nil {
				bad("Certificate: parse leaf: %v", err)
			}
		}
		if leaf != nil {
			s.leaf = leaf
			if leaf.Subject.CommonName != c.RegistrationID {
				bad("RegistrationID %q differs from the certificate CN %q; DPS requires them to be equal", c.RegistrationID, leaf.Subject.CommonName)
			}
		}
	}
	if c.RootCAs == nil {
		bad("RootCAs is nil; build it with identity.TrustPool (Azure roots and/or the emulator CA)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ConnectTimeout", c.ConnectTimeout}, {"OperationTimeout", c.OperationTimeout}, {"MinPollInterval", c.MinPollInterval}, {"KeepAlive", c.KeepAlive}} {
		if d.v < 0 {
			bad("%s is negative (%v)", d.name, d.v)
		}
	}
	if c.MaxPolls < 0 {
		bad("MaxPolls is negative (%d)", c.MaxPolls)
	}
	body, err := registerBody(c.RegistrationID, c.Payload)
	if err != nil {
		bad("Payload %v", err)
	}
	s.body = body
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	if s.Time == nil {
		s.Time = time.Now
	}
	if s.ConnectTimeout == 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	if s.OperationTimeout == 0 {
		s.OperationTimeout = DefaultOperationTimeout
	}
	if s.MinPollInterval == 0 {
		s.MinPollInterval = DefaultMinPollInterval
	}
	if s.MaxPolls == 0 {
		s.MaxPolls = DefaultMaxPolls
	}
	if s.ThrottleRetries == 0 {
		s.ThrottleRetries = DefaultThrottleRetries
	} else if s.ThrottleRetries < 0 {
		s.ThrottleRetries = 0
	}
	if s.KeepAlive == 0 {
		s.KeepAlive = DefaultKeepAlive
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// splitEndpoint parses host[:port] (IPv6 in brackets), defaulting the port
// to 8883.
func splitEndpoint(ep string) (host, port string, err error) {
	if ep == "" {
		return "", "", errors.New("empty; use global.azure-devices-provisioning.net for Azure, or the emulator's dpsHost")
	}
	if strings.Contains(ep, "://") {
		return "", "", fmt.Errorf("%q has a scheme; give host[:port] only", ep)
	}
	if strings.ContainsAny(ep, "/?# ") {
		return "", "", fmt.Errorf("%q is not host[:port]", ep)
	}
	host, port, err = net.SplitHostPort(ep)
	if err != nil {
		// No port (or a bare IPv6 address).
		host, port = strings.TrimSuffix(strings.TrimPrefix(ep, "["), "]"), DefaultPort
		if strings.Count(ep, ":") == 1 {
			return "", "", fmt.Errorf("%q: %v", ep, err)
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("%q has no host", ep)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", "", fmt.Errorf("%q: invalid port %q", ep, port)
	}
	return host, port, nil
}

// registerBody is the register request's body:
// {"registrationId":"...","payload":{...}}.
func registerBody(regID string, payload any) ([]byte, error) {
	body := struct {
		RegistrationID string          `json:"registrationId"`
		Payload        json.RawMessage `json:"payload,omitempty"`
	}{RegistrationID: regID}
	if payload != nil {
		p, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("cannot be marshalled to JSON: %v", err)
		}
		if string(p) != "null" {
			body.Payload = p
		}
	}
	return json.Marshal(body)
}
