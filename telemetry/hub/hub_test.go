package hub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// testPKI is a CA with a device and a server certificate for 127.0.0.1.
type testPKI struct {
	ca     *pki.CA
	roots  *x509.CertPool
	device tls.Certificate
	server tls.Certificate
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
	pkiErr  error
)

// sharedPKI issues the test certificates once per test binary: key
// generation is the slow part of these tests.
func sharedPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		ca, err := pki.NewMemoryCA(pki.CAOptions{})
		if err != nil {
			pkiErr = err
			return
		}
		dev, err := ca.IssueDevice("d1", pki.DeviceOptions{})
		if err != nil {
			pkiErr = err
			return
		}
		srv, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, pki.DeviceOptions{})
		if err != nil {
			pkiErr = err
			return
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca.Root)
		pkiVal = &testPKI{ca: ca, roots: roots, device: dev.TLSCertificate(), server: srv.TLSCertificate()}
	})
	if pkiErr != nil {
		t.Fatalf("test PKI: %v", pkiErr)
	}
	return pkiVal
}

// testLogger routes the client's log to the test output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestNewValidates(t *testing.T) {
	p := sharedPKI(t)
	good := Config{Host: "h.azure-devices.net", DeviceID: "d1", Certificate: p.device}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no host", func(c *Config) { c.Host = "" }, "no host"},
		{"empty host name", func(c *Config) { c.Host = ":8883" }, "no host name"},
		{"bad port", func(c *Config) { c.Host = "h:99999" }, "invalid port"},
		{"no device id", func(c *Config) { c.DeviceID = "" }, "no device id"},
		{"slash in id", func(c *Config) { c.DeviceID = "a/b" }, `contains '/'`},
		{"wildcard in id", func(c *Config) { c.DeviceID = "a#" }, `contains '#'`},
		{"long id", func(c *Config) { c.DeviceID = strings.Repeat("x", 129) }, "longer than 128"},
		{"no certificate", func(c *Config) { c.Certificate = tls.Certificate{} }, "no device certificate"},
		{"no key", func(c *Config) { c.Certificate.PrivateKey = nil }, "no private key"},
		{"negative", func(c *Config) { c.ReconnectMax = -time.Second }, "ReconnectMax is negative"},
		{"short keepalive", func(c *Config) { c.KeepAlive = time.Millisecond }, "KeepAlive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	p := sharedPKI(t)
	c, err := New(Config{Host: "h.azure-devices.net", DeviceID: "d1", Certificate: p.device, ReconnectMin: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c.addr != "h.azure-devices.net:8883" || c.hostname != "h.azure-devices.net" || c.tlsConf.ServerName != "h.azure-devices.net" {
		t.Errorf("addr %q, hostname %q, server name %q; want port 8883 added", c.addr, c.hostname, c.tlsConf.ServerName)
	}
	cfg := c.cfg
	if cfg.KeepAlive != DefaultKeepAlive || cfg.MaxInFlight != DefaultMaxInFlight || cfg.ConnectTimeout != DefaultConnectTimeout ||
		cfg.PublishTimeout != DefaultPublishTimeout || cfg.MaxRefusals != DefaultMaxRefusals || cfg.Time == nil || cfg.CleanSession {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.ReconnectMax != 5*time.Minute {
		t.Errorf("ReconnectMax = %v, want raised to ReconnectMin 5m", cfg.ReconnectMax)
	}
	if cap(c.slots) != DefaultMaxInFlight {
		t.Errorf("%d in-flight slots, want %d", cap(c.slots), DefaultMaxInFlight)
	}

	c, err = New(Config{Host: "[::1]:1234", DeviceID: "d1", Certificate: p.device})
	if err != nil {
		t.Fatal(err)
	}
	if c.addr != "[::1]:1234" || c.hostname != "::1" || !strings.HasPrefix(c.username, "::1/d1/") {
		t.Errorf("IPv6 host: addr %q hostname %q username %q", c.addr, c.hostname, c.username)
	}
}

func TestClassifyConnect(t *testing.T) {
	remote := &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}
	tests := []struct {
		rc   byte
		err  error
		want failureKind
	}{
		{packets.ErrRefusedNotAuthorised, packets.ErrorRefusedNotAuthorised, failRefused},
		{packets.ErrRefusedBadUsernameOrPassword, packets.ErrorRefusedBadUsernameOrPassword, failRefused},
		{packets.ErrRefusedIDRejected, packets.ErrorRefusedIDRejected, failRefused},
		{packets.ErrRefusedServerUnavailable, packets.ErrorRefusedServerUnavailable, failThrottled},
		{packets.ErrNetworkError, errors.Join(packets.ErrorNetworkError, remote), failRefused},
		{packets.ErrNetworkError, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, failOther},
		{packets.ErrRefusedBadProtocolVersion, packets.ErrorRefusedBadProtocolVersion, failOther},
	}
	for _, tt := range tests {
		if got := classifyConnect(tt.rc, tt.err); got != tt.want {
			t.Errorf("classifyConnect(%d, %v) = %v, want %v", tt.rc, tt.err, got, tt.want)
		}
	}
}
