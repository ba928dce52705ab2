package emulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coldchain/tracker/emulator/internal/sas"
)

// ControlClient talks to the control API of a running emulator, for the CLI
// and for tests that run the emulator as another process.
type ControlClient struct {
	info Info
	cs   sas.ConnectionString
	key  []byte
	http *http.Client
}

// NewControlClient returns a client for the emulator described by info
// (see LoadInfo). It trusts the emulator's server CA.
func NewControlClient(info Info) (*ControlClient, error) {
	cs, err := sas.ParseConnectionString(info.HubConnectionString)
	if err != nil {
		return nil, fmt.Errorf("emulator: hub connection string in emulator.json: %w", err)
	}
	key, err := cs.Key()
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(info.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("emulator: read server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("emulator: %s holds no PEM certificate", info.ServerCAFile)
	}
	host := info.HostName
	if host == "" {
		host = DefaultHostName
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		// Dial the bound address whatever the host name resolves to.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, dialAddr(info.HTTPSAddr))
		},
	}
	return &ControlClient{info: info, cs: cs, key: key, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// dialAddr turns a wildcard listen address into one to dial.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Do sends a request to path (with query) on the emulator's HTTPS listener,
// authenticated with the hub owner key, and decodes a JSON answer into out
// (if not nil). Error answers become *APIError.
func (c *ControlClient) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.cs.HostName+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", sas.NewToken(c.cs.HostName, c.cs.SharedAccessKeyName, c.key, time.Now().Add(time.Hour)))
	if in != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("emulator: %s %s: %w (is the emulator running?)", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("emulator: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var hubErr struct{ Message string }
		json.Unmarshal(raw, &hubErr)
		msg := hubErr.Message
		if msg == "" {
			msg = string(raw)
		}
		return &APIError{Status: resp.StatusCode, Message: msg}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("emulator: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// ApplyFaults applies spec to the running emulator and returns the active
// faults.
func (c *ControlClient) ApplyFaults(ctx context.Context, spec FaultSpec) (FaultState, error) {
	var st FaultState
	err := c.Do(ctx, http.MethodPost, "/emulator/faults", spec, &st)
	return st, err
}

// Status returns the running emulator's status.
func (c *ControlClient) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Do(ctx, http.MethodGet, "/emulator/status", nil, &st)
	return st, err
}
