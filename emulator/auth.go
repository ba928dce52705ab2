package emulator

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	bolt "go.etcd.io/bbolt"

	"github.com/coldchain/tracker/emulator/internal/sas"
	"github.com/coldchain/tracker/provisioning/pki"
)

// Values of the iothub-connection-auth-method annotation.
const (
	authMethodX509 = `{"scope":"device","type":"x509Certificate","issuer":"external","acceptingIpFilterRule":null}`
	authMethodSAS  = `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
)

// authenticate checks a CONNECT against DPS or hub rules, told apart by the
// username's shape. On refusal it returns the CONNACK code and why; the
// session it returns then only says which service was addressed.
func (e *Emulator) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, packets.Code, string) {
	username := string(pk.Connect.Username)
	clientID := pk.Connect.ClientIdentifier
	var probe *session
	if _, _, _, ok := parseDPSUsername(username); ok {
		probe = &session{kind: kindDPS}
	} else {
		probe = &session{kind: kindHub}
	}
	if e.faults.refusing() {
		return probe, packets.ErrServerUnavailable, "fault: refusing connections"
	}
	if pk.ProtocolVersion != 4 {
		return probe, packets.ErrUnsupportedProtocolVersion, fmt.Sprintf("MQTT protocol level %d; DPS and IoT Hub speak MQTT 3.1.1 (level 4)", pk.ProtocolVersion)
	}
	chain := peerChain(cl)
	if scope, regID, query, ok := parseDPSUsername(username); ok {
		s, why := e.authDPS(scope, regID, query, clientID, chain)
		if why != "" {
			return probe, packets.ErrBadUsernameOrPassword, why
		}
		s.cl = cl
		return s, packets.CodeSuccess, ""
	}
	host, deviceID, module, query, ok := parseHubUsername(username)
	if !ok {
		return probe, packets.ErrBadUsernameOrPassword, fmt.Sprintf("username %q is neither DPS ({idScope}/registrations/{id}/api-version=...) nor IoT Hub ({host}/{deviceId}/?api-version=...)", username)
	}
	s, why := e.authHub(host, deviceID, module, query, clientID, chain, string(pk.Connect.Password))
	if why != "" {
		return probe, packets.ErrBadUsernameOrPassword, why
	}
	s.cl = cl
	return s, packets.CodeSuccess, ""
}

// parseDPSUsername splits "{idScope}/registrations/{registrationId}/api-version=...&...".
// A "?" before api-version is tolerated.
func parseDPSUsername(u string) (scope, regID string, query url.Values, ok bool) {
	parts := strings.SplitN(u, "/", 4)
	if len(parts) != 4 || parts[1] != "registrations" || parts[0] == "" || parts[2] == "" {
		return "", "", nil, false
	}
	q, err := url.ParseQuery(strings.TrimPrefix(parts[3], "?"))
	if err != nil {
		q = url.Values{}
	}
	return parts[0], parts[2], q, true
}

// parseHubUsername splits "{host}/{deviceId}[/{moduleId}]/?api-version=...".
func parseHubUsername(u string) (host, deviceID, module string, query url.Values, ok bool) {
	path, rawQuery, found := strings.Cut(u, "/?")
	if !found {
		// Some clients omit the "?" ("host/device/api-version=...").
		i := strings.Index(u, "/api-version=")
		if i < 0 {
			return "", "", "", nil, false
		}
		path, rawQuery = u[:i], u[i+1:]
	}
	parts := strings.Split(path, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return "", "", "", nil, false
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		q = url.Values{}
	}
	if len(parts) == 3 {
		module = parts[2]
	}
	return parts[0], parts[1], module, q, true
}

func (e *Emulator) authDPS(scope, regID string, query url.Values, clientID string, chain []*x509.Certificate) (*session, string) {
	if !strings.EqualFold(scope, e.meta.IDScope) {
		return nil, fmt.Sprintf("ID scope %q is not this DPS's (%s)", scope, e.meta.IDScope)
	}
	if !strings.EqualFold(regID, clientID) {
		return nil, fmt.Sprintf("client ID %q differs from the registration ID %q in the username", clientID, regID)
	}
	if err := pki.ValidateRegistrationID(regID); err != nil {
		return nil, err.Error()
	}
	if len(chain) == 0 {
		return nil, "no client certificate (the emulator supports X.509 attestation only)"
	}
	leaf := chain[0]
	if !strings.EqualFold(leaf.Subject.CommonName, regID) {
		return nil, fmt.Sprintf("certificate CN %q differs from the registration ID %q", leaf.Subject.CommonName, regID)
	}
	if why := validityProblem(leaf, time.Now()); why != "" {
		return nil, why
	}
	return &session{kind: kindDPS, id: regID, chain: chain, connected: time.Now(), apiVersion: query.Get("api-version")}, ""
}

func (e *Emulator) authHub(host, deviceID, module string, query url.Values, clientID string, chain []*x509.Certificate, password string) (*session, string) {
	if !e.isHubHost(host) {
		return nil, fmt.Sprintf("host %q in the username is not this hub (%s)", host, e.hubHost())
	}
	if module != "" {
		return nil, "module identities are not supported by the emulator"
	}
	if deviceID != clientID {
		return nil, fmt.Sprintf("client ID %q differs from the device ID %q in the username", clientID, deviceID)
	}
	var dev Device
	var found bool
	err := e.store.view(func(tx *bolt.Tx) error {
		var err error
		dev, found, err = getJSON[Device](tx, bucketDevices, deviceID)
		return err
	})
	if err != nil {
		return nil, err.Error()
	}
	if !found {
		return nil, fmt.Sprintf("device %q is not registered in the hub", deviceID)
	}
	if dev.Status != StatusEnabled {
		return nil, fmt.Sprintf("device %q is disabled", deviceID)
	}
	s := &session{kind: kindHub, id: deviceID, chain: chain, generation: dev.GenerationID, connected: time.Now(), apiVersion: query.Get("api-version")}
	now := time.Now()
	switch dev.Authentication.Type {
	case AuthSelfSigned:
		if len(chain) == 0 {
			return nil, "no client certificate for a selfSigned (X.509 thumbprint) device"
		}
		if why := validityProblem(chain[0], now); why != "" {
			return nil, why
		}
		s1, s256 := thumbprints(chain[0])
		if !matchThumb(dev.Authentication.X509Thumbprint, s1, s256) {
			return nil, fmt.Sprintf("certificate thumbprint %s matches neither thumbprint registered for %q", s1, deviceID)
		}
		s.authMethod = authMethodX509
	case AuthCA:
		if len(chain) == 0 {
			return nil, "no client certificate for a certificateAuthority device"
		}
		if why := validityProblem(chain[0], now); why != "" {
			return nil, why
		}
		if chain[0].Subject.CommonName != deviceID {
			return nil, fmt.Sprintf("certificate CN %q differs from the device ID %q", chain[0].Subject.CommonName, deviceID)
		}
		if err := verifyChain(chain, e.hubCAs.Load(), now); err != nil {
			return nil, "certificate does not chain to a CA known to the hub: " + err.Error()
		}
		s.authMethod = authMethodX509
	case AuthSAS:
		if password == "" {
			return nil, "no SAS token in the password for a sas device"
		}
		tok, err := sas.Parse(password)
		if err != nil {
			return nil, err.Error()
		}
		h, path := tok.ResourceHost()
		if !e.isHubHost(h) || !strings.EqualFold(path, "devices/"+deviceID) {
			return nil, fmt.Sprintf("SAS token resource %q is not %s/devices/%s", tok.Resource, e.hubHost(), deviceID)
		}
		var verr error = sas.ErrSignature
		for _, k := range []*string{dev.Authentication.SymmetricKey.PrimaryKey, dev.Authentication.SymmetricKey.SecondaryKey} {
			if k == nil {
				continue
			}
			key, err := decodeKey(*k)
			if err != nil {
				continue
			}
			if verr = tok.Verify(key, now); verr == nil {
				break
			}
		}
		if verr != nil {
			return nil, "SAS token rejected: " + verr.Error()
		}
		s.authMethod = authMethodSAS
	default:
		return nil, fmt.Sprintf("device %q has authentication type %q, which cannot connect", deviceID, dev.Authentication.Type)
	}
	return s, ""
}

func matchThumb(t X509Thumbprint, s1, s256 string) bool {
	for _, p := range []*string{t.PrimaryThumbprint, t.SecondaryThumbprint} {
		if p == nil || *p == "" {
			continue
		}
		v := strings.ReplaceAll(*p, ":", "")
		if strings.EqualFold(v, s1) || strings.EqualFold(v, s256) {
			return true
		}
	}
	return false
}

func validityProblem(c *x509.Certificate, now time.Time) string {
	if now.After(c.NotAfter) {
		return fmt.Sprintf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Sprintf("certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

// verifyChain checks that chain[0] leads, through the rest of chain, to a
// certificate in roots. Roots may be intermediates: DPS and IoT Hub trust
// whichever CA certificate was uploaded.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	if roots == nil {
		return fmt.Errorf("no CA certificates registered")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

func chainsTo(chain []*x509.Certificate, anchor *x509.Certificate, now time.Time) bool {
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	return verifyChain(chain, roots, now) == nil
}

// hubHost is the hub's name as DPS assigns it.
func (e *Emulator) hubHost() string {
	if e.info.HubHost != "" {
		return e.info.HubHost
	}
	return e.cfg.HostName
}

// isHubHost accepts the hub's name with or without the MQTT port.
func (e *Emulator) isHubHost(h string) bool {
	if strings.EqualFold(h, e.hubHost()) || strings.EqualFold(h, e.cfg.HostName) {
		return true
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		return strings.EqualFold(host, e.cfg.HostName)
	}
	return false
}

// loadHubCAs builds the pool of CA certificates the hub trusts for
// certificateAuthority devices: every signing certificate ever put in an
// enrollment group (the operator uploads the same CA to DPS and the hub).
func (e *Emulator) loadHubCAs() error {
	pool := x509.NewCertPool()
	err := e.store.view(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketHubCAs)).ForEach(func(_, der []byte) error {
			// Clone: bbolt's value is only valid during the transaction, and a
			// parsed certificate keeps referencing its input.
			c, err := x509.ParseCertificate(bytes.Clone(der))
			if err != nil {
				return fmt.Errorf("emulator: stored hub CA: %w", err)
			}
			pool.AddCert(c)
			return nil
		})
	})
	if err != nil {
		return err
	}
	e.hubCAs.Store(pool)
	return nil
}
