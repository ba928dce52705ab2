package dps

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coldchain/tracker/provisioning/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tlsServer is a bare TLS listener on 127.0.0.1 that completes the
// handshake (verifying client certificates against clientCAs) and closes
// the connection: enough to exercise every certificate problem Register
// reports without an MQTT broker.
type tlsServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startTLSServer(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool) *tlsServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *tlsServer) addr() string { return s.ln.Addr().String() }

type testPKI struct {
	fleet  *pki.CA // signs devices
	server *pki.CA // signs the server certificate
	srv    *pki.Device
	roots  *x509.CertPool
}

func newTestPKI(t *testing.T, serverOpts pki.DeviceOptions) *testPKI {
	t.Helper()
	fleet, err := pki.NewMemoryCA(pki.CAOptions{CN: "Test Fleet Root", Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.NewMemoryCA(pki.CAOptions{CN: "Test Server Root"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.IssueServer([]string{"localhost", "127.0.0.1"}, serverOpts)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(server.Root)
	return &testPKI{fleet: fleet, server: server, srv: srv, roots: roots}
}

func (p *testPKI) device(t *testing.T, id string, opts pki.DeviceOptions) *pki.Device {
	t.Helper()
	d, err := p.fleet.IssueDevice(id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (p *testPKI) clientCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.fleet.Root)
	return pool
}

func baseConfig(endpoint string, d *pki.Device, roots *x509.CertPool) Config {
	return Config{
		Endpoint:         endpoint,
		IDScope:          "0ne00000TEST",
		RegistrationID:   d.ID,
		Certificate:      d.TLSCertificate(),
		RootCAs:          roots,
		ConnectTimeout:   10 * time.Second,
		OperationTimeout: 10 * time.Second,
	}
}

func TestRegisterTLSProblems(t *testing.T) {
	p := newTestPKI(t, pki.DeviceOptions{})
	srv := startTLSServer(t, p.srv.TLSCertificate(), p.clientCAs())
	good := p.device(t, "tracker-tls-1", pki.DeviceOptions{})
	now := time.Now()
	expired := p.device(t, "tracker-tls-2", pki.DeviceOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	other, err := pki.NewMemoryCA(pki.CAOptions{CN: "Stranger Root"})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.IssueDevice("tracker-tls-3", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A server whose certificate names only "localhost", dialled by IP.
	named, err := p.server.IssueServer([]string{"localhost"}, pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	namedSrv := startTLSServer(t, named.TLSCertificate(), p.clientCAs())
	azureOnly := x509.NewCertPool()
	azureOnly.AddCert(p.fleet.Root) // some CA, not the server's

	tests := []struct {
		name     string
		cfg      Config
		problem  TLSProblem
		is       []error
		contains []string
	}{
		{
			name:     "server CA not trusted",
			cfg:      baseConfig(srv.addr(), good, azureOnly),
			problem:  ServerUnknownAuthority,
			is:       []error{ErrServerUntrusted},
			contains: []string{"trust bundle"},
		},
		{
			name:     "server name mismatch",
			cfg:      baseConfig(namedSrv.addr(), good, p.roots),
			problem:  ServerNameMismatch,
			is:       []error{ErrServerUntrusted},
			contains: []string{"127.0.0.1"},
		},
		{
			name: "device clock at 1970",
			cfg: func() Config {
				c := baseConfig(srv.addr(), good, p.roots)
				c.Time = func() time.Time { return time.Unix(0, 0) }
				return c
			}(),
			problem:  ServerNotValidNow,
			is:       []error{ErrServerUntrusted},
			contains: []string{"1970-01-01", "clock"},
		},
		{
			name:     "device certificate from another CA",
			cfg:      baseConfig(srv.addr(), stranger, p.roots),
			problem:  DeviceCertRejected,
			is:       []error{ErrUnauthorized},
			contains: []string{"unknown certificate authority"},
		},
		{
			name:     "device certificate expired",
			cfg:      baseConfig(srv.addr(), expired, p.roots),
			problem:  DeviceCertExpired,
			is:       []error{ErrUnauthorized, ErrDeviceCertExpired},
			contains: []string{"tracker-tls-2", expired.Leaf.NotAfter.UTC().Format(time.RFC3339)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := Register(ctx, tt.cfg)
			if err == nil {
				t.Fatalf("Register = %+v, want error", res)
			}
			t.Logf("Register: %v", err)
			var te *TLSError
			if !errors.As(err, &te) {
				t.Fatalf("Register error = %v (%T), want a *TLSError", err, errors.Unwrap(err))
			}
			if te.Problem != tt.problem {
				t.Errorf("Problem = %v, want %v (error %v)", te.Problem, tt.problem, err)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// The time function replaces the system clock for the server certificate:
// a server certificate that is only valid in the future (as seen from the
// system clock) verifies when Time returns a time inside its validity.
func TestRegisterUsesConfigTime(t *testing.T) {
	future := time.Now().Add(400 * 24 * time.Hour)
	p := newTestPKI(t, pki.DeviceOptions{NotBefore: future.Add(-time.Hour), NotAfter: future.Add(time.Hour)})
	srv := startTLSServer(t, p.srv.TLSCertificate(), p.clientCAs())
	dev := p.device(t, "tracker-time-1", pki.DeviceOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Register(ctx, baseConfig(srv.addr(), dev, p.roots))
	var te *TLSError
	if !errors.As(err, &te) || te.Problem != ServerNotValidNow {
		t.Fatalf("Register with system time = %v, want ServerNotValidNow", err)
	}

	cfg := baseConfig(srv.addr(), dev, p.roots)
	cfg.Time = func() time.Time { return future }
	_, err = Register(ctx, cfg)
	// The bare TLS server closes after the handshake, so the MQTT
	// connection fails, but not on the certificate.
	if err == nil || errors.As(err, &te) {
		t.Fatalf("Register with Time in the validity = %v, want a non-TLS failure after the handshake", err)
	}
}

func TestRegisterConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newTestPKI(t, pki.DeviceOptions{})
	dev := p.device(t, "tracker-net-1", pki.DeviceOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = Register(ctx, baseConfig(addr, dev, p.roots))
	var te *TLSError
	if err == nil || errors.As(err, &te) || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Register to a closed port = %v, want a plain network error", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint", err)
	}
}

// A server that accepts TCP but never answers: the context ends the
// connect, and Register returns promptly with the context's error.
func TestRegisterContextCancelDuringConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	conns := make(chan net.Conn, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c // hold it open, silent
		}
	}()
	defer func() {
		ln.Close()
		wg.Wait()
		close(conns)
		for c := range conns {
			c.Close()
		}
	}()
	p := newTestPKI(t, pki.DeviceOptions{})
	dev := p.device(t, "tracker-net-2", pki.DeviceOptions{})
	cfg := baseConfig(ln.Addr().String(), dev, p.roots)
	cfg.ConnectTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Register(ctx, cfg)
		errc <- err
	}()
	// Cancel once the client is connected at TCP level (stuck in the TLS
	// handshake), so the cancellation hits a pending connect.
	select {
	case c := <-conns:
		conns <- c
	case <-time.After(20 * time.Second):
		t.Fatal("client never connected")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Register after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Register did not return after cancel")
	}
}

func TestConfigValidation(t *testing.T) {
	p := newTestPKI(t, pki.DeviceOptions{})
	dev := p.device(t, "tracker-cfg-1", pki.DeviceOptions{})
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "Endpoint empty"},
		{"scheme", func(c *Config) { c.Endpoint = "mqtts://x" }, "scheme"},
		{"no scope", func(c *Config) { c.IDScope = "" }, "IDScope"},
		{"bad scope", func(c *Config) { c.IDScope = "0ne/x" }, "IDScope"},
		{"no registration id", func(c *Config) { c.RegistrationID = "" }, "RegistrationID"},
		{"cn mismatch", func(c *Config) { c.RegistrationID = "tracker-cfg-2" }, `certificate CN "tracker-cfg-1"`},
		{"no certificate", func(c *Config) { c.Certificate = tls.Certificate{} }, "Certificate"},
		{"no roots", func(c *Config) { c.RootCAs = nil }, "identity.TrustPool"},
		{"negative timeout", func(c *Config) { c.OperationTimeout = -time.Second }, "OperationTimeout"},
		{"bad payload", func(c *Config) { c.Payload = make(chan int) }, "Payload"},
		{"negative polls", func(c *Config) { c.MaxPolls = -1 }, "MaxPolls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig("localhost", dev, p.roots)
			tt.mutate(&cfg)
			_, err := Register(context.Background(), cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Register = %v, want ErrConfig mentioning %q", err, tt.want)
			}
		})
	}
	// Several problems are reported together.
	cfg := baseConfig("", dev, nil)
	cfg.IDScope = ""
	_, err := Register(context.Background(), cfg)
	for _, s := range []string{"Endpoint", "IDScope", "RootCAs"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("Register with three problems = %v, want it to mention %s", err, s)
		}
	}

	// Defaults.
	def := baseConfig("dps.example.net", dev, p.roots)
	s, err := def.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != "dps.example.net:8883" || s.host != "dps.example.net" || s.MinPollInterval != DefaultMinPollInterval ||
		s.MaxPolls != DefaultMaxPolls || s.ThrottleRetries != DefaultThrottleRetries || s.Time == nil || s.Logger == nil {
		t.Errorf("resolve defaults = addr %s host %s min %v polls %d throttle %d", s.addr, s.host, s.MinPollInterval, s.MaxPolls, s.ThrottleRetries)
	}
	c := baseConfig("dps.example.net", dev, p.roots)
	c.ThrottleRetries = -1
	if s, err := c.resolve(); err != nil || s.ThrottleRetries != 0 {
		t.Errorf("ThrottleRetries -1 resolves to %d, %v; want 0", s.ThrottleRetries, err)
	}
}
