package emulator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/coldchain/tracker/emulator/internal/sas"
	"github.com/coldchain/tracker/provisioning/pki"
)

// Files in the state directory.
const (
	InfoFile      = "emulator.json"
	TelemetryFile = "telemetry.jsonl"
	StateFile     = "state.db"
	CADir         = "ca"
	ServerCert    = "server.pem"
	ServerKey     = "server.key"
)

// Default addresses, host name and service policy names.
const (
	DefaultMQTTAddr  = "127.0.0.1:8883"
	DefaultHTTPSAddr = "127.0.0.1:8443"
	DefaultHostName  = "localhost"
	DPSPolicy        = "provisioningserviceowner"
	HubPolicy        = "iothubowner"
)

// Sentinel errors.
var (
	// ErrNotStarted means an operation needs a running emulator.
	ErrNotStarted = errors.New("emulator: not started")
	// ErrClosed means the emulator has been closed.
	ErrClosed = errors.New("emulator: closed")
	// ErrNotFound means a device, enrollment or registration does not exist.
	ErrNotFound = errors.New("emulator: not found")
)

// Config configures an Emulator. Only StateDir is required.
type Config struct {
	// StateDir holds the state database, the server CA and certificate,
	// emulator.json and telemetry.jsonl. It is created (mode 0700) if
	// missing.
	StateDir string
	// MQTTAddr is the address of the MQTT over TLS listener shared by DPS
	// and the hub (default 127.0.0.1:8883). Port 0 picks a free port.
	MQTTAddr string
	// HTTPSAddr is the address of the service REST listener (default
	// 127.0.0.1:8443). Port 0 picks a free port.
	HTTPSAddr string
	// HostName is the name devices and service clients use for the
	// emulator (default "localhost"). It is in the server certificate with
	// 127.0.0.1, and it is the DPS and hub host in emulator.json.
	HostName string
	// ExtraHosts are more names or IP addresses for the server certificate.
	// The certificate is reissued when they change.
	ExtraHosts []string
	// Logger receives the emulator's log; nil discards it.
	Logger *slog.Logger
	// LiveOut, if set, gets every device-to-cloud message as one JSON line
	// (the same line telemetry.jsonl gets).
	LiveOut io.Writer
	// DPSPollAfter is the retry-after DPS puts in its 202 answers (whole
	// seconds on the wire). Zero means 1s; a negative value sends 0, for
	// benchmarks.
	DPSPollAfter time.Duration
	// DPSAssigningPolls is how many polls of an operation DPS answers with
	// "assigning" before the final status (default 0: the first poll gets
	// it).
	DPSAssigningPolls int
	// DisabledReply selects how DPS answers a device whose enrollment is
	// disabled: "" or "status" completes the operation with status
	// "disabled" (what the SDKs document), a number such as "403" answers
	// the register request with that HTTP status and an error body.
	DisabledReply string
	// TelemetrySyncInterval is how often telemetry.jsonl is fsynced while
	// messages arrive (default 100ms); every message is written to the file
	// before its PUBACK.
	TelemetrySyncInterval time.Duration
	// TelemetryMemory is how many recent messages (and events) are kept in
	// memory for Telemetry and WaitTelemetry (default 20000).
	TelemetryMemory int
	// Faults are applied at start (the CLI's fault flags).
	Faults FaultSpec
}

// Info is what emulator.json holds: everything a client needs to reach the
// emulator.
type Info struct {
	// StateDir is the emulator's state directory (absolute).
	StateDir string `json:"stateDir"`
	// MQTTAddr and HTTPSAddr are the bound listener addresses.
	MQTTAddr  string `json:"mqttAddr"`
	HTTPSAddr string `json:"httpsAddr"`
	// HostName is the server certificate's name for the emulator.
	HostName string `json:"hostName"`
	// DPSHost is the DPS endpoint devices dial, "host" or "host:port" when
	// the MQTT port is not 8883 (the "provisioningHost" of the SDKs).
	DPSHost string `json:"dpsHost"`
	// HubHost is the hub's name as DPS assigns it (assignedHub) and as it
	// appears in MQTT usernames: "host" or "host:port".
	HubHost string `json:"hubHost"`
	// IDScope is the DPS ID scope.
	IDScope string `json:"idScope"`
	// HTTPSURL is the base URL of the service REST APIs.
	HTTPSURL string `json:"httpsUrl"`
	// DPSConnectionString and HubConnectionString authenticate service
	// REST calls (SAS); their HostName is "host" or "host:port" when the
	// HTTPS port is not 443.
	DPSConnectionString string `json:"dpsConnectionString"`
	HubConnectionString string `json:"hubConnectionString"`
	// ServerCAFile is the PEM of the CA that signed the server certificate:
	// clients trust it (NODE_EXTRA_CA_CERTS for the Node SDKs).
	ServerCAFile string `json:"serverCaFile"`
	// TelemetryFile is where device-to-cloud messages are appended.
	TelemetryFile string `json:"telemetryFile"`
	// ConsoleURL is the web console's address; ConsoleToken logs in to it
	// (as does the hub connection string). The token is new on every start.
	ConsoleURL   string `json:"consoleUrl"`
	ConsoleToken string `json:"consoleToken"`
	// PID is the emulator's process ID.
	PID int `json:"pid"`
	// Started is when the emulator started.
	Started time.Time `json:"started"`
}

// Emulator is a local Azure DPS + IoT Hub. Create it with New, start it with
// Start (or Run) and stop it with Close. Its methods are safe for concurrent
// use.
type Emulator struct {
	cfg    Config
	log    *slog.Logger
	faults *Faults
	events *feed[Event]

	// Set by Start, read-only afterwards.
	started   atomic.Bool
	closed    atomic.Bool
	store     *store
	meta      meta
	dpsKey    []byte
	hubKey    []byte
	info      Info
	serverCA  *pki.CA
	serverTLS tls.Certificate
	mqtt      *mqtt.Server
	mqttLn    *listener
	httpSrv   *http.Server
	httpLn    net.Listener
	sink      *telemetrySink
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // goroutines the emulator starts
	work      chan struct{}  // bounds concurrent request handlers
	wgMu      sync.Mutex     // orders wg.Add against shutdown's wg.Wait
	stopping  bool
	closeOnce sync.Once
	closeErr  error

	hubCAs atomic.Pointer[x509.CertPool]
	twinMu sync.Mutex // orders service-side twin updates and their notifications
	c2dMu  sync.Mutex // serialises C2D flushes so messages keep their order
	// enrollGen changes whenever an enrollment is written (inside the
	// writing transaction), so a registration can tell its match is stale.
	enrollGen atomic.Int64

	mu        sync.Mutex
	pending   map[*mqtt.Client]*session // authenticated, CONNACK not yet sent
	sessions  map[*mqtt.Client]*session
	hub       map[string]*session // device ID -> current hub connection
	ops       map[string]*dpsOp
	methods   map[string]chan methodReply
	c2d       map[string][]c2dMessage
	activity  map[string]time.Time // device ID -> last activity
	connTimes map[string]time.Time // device ID -> connection state change
	regCounts map[string]int64     // lower-case registration ID -> register requests
	ridSeq    uint64

	console consoleState // the web console's token and sessions (console.go)
}

// New checks cfg and returns an emulator that is not started yet.
func New(cfg Config) (*Emulator, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("emulator: no state directory; set Config.StateDir (--state DIR)")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("emulator: state directory: %w", err)
	}
	cfg.StateDir = dir
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = DefaultMQTTAddr
	}
	if cfg.HTTPSAddr == "" {
		cfg.HTTPSAddr = DefaultHTTPSAddr
	}
	for _, a := range []struct{ name, addr string }{{"MQTT", cfg.MQTTAddr}, {"HTTPS", cfg.HTTPSAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return nil, fmt.Errorf("emulator: %s address %q: %v (want host:port, e.g. 127.0.0.1:0)", a.name, a.addr, err)
		}
	}
	if cfg.HostName == "" {
		cfg.HostName = DefaultHostName
	}
	if strings.ContainsAny(cfg.HostName, ":/ ") {
		return nil, fmt.Errorf("emulator: host name %q must be a bare DNS name or IP address, without port", cfg.HostName)
	}
	if cfg.DisabledReply != "" && cfg.DisabledReply != "status" {
		n, err := strconv.Atoi(cfg.DisabledReply)
		if err != nil || n < 400 || n > 599 {
			return nil, fmt.Errorf("emulator: DisabledReply %q must be \"status\" or an HTTP error status 400-599", cfg.DisabledReply)
		}
	}
	if cfg.TelemetrySyncInterval <= 0 {
		cfg.TelemetrySyncInterval = 100 * time.Millisecond
	}
	if cfg.TelemetryMemory <= 0 {
		cfg.TelemetryMemory = 20000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{
		cfg:       cfg,
		log:       log,
		events:    newFeed[Event](cfg.TelemetryMemory),
		pending:   map[*mqtt.Client]*session{},
		sessions:  map[*mqtt.Client]*session{},
		hub:       map[string]*session{},
		ops:       map[string]*dpsOp{},
		methods:   map[string]chan methodReply{},
		c2d:       map[string][]c2dMessage{},
		activity:  map[string]time.Time{},
		connTimes: map[string]time.Time{},
		regCounts: map[string]int64{},
		work:      make(chan struct{}, 256),
	}
	e.faults = &Faults{e: e}
	if err := e.faults.Apply(cfg.Faults); err != nil {
		return nil, err
	}
	return e, nil
}

// Start opens the state, creates the server certificate on first run, binds
// both listeners and writes emulator.json. The listeners accept connections
// when it returns. ctx only bounds the start; the emulator runs until Close.
func (e *Emulator) Start(ctx context.Context) (err error) {
	if e.closed.Load() {
		return ErrClosed
	}
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("emulator: already started")
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			e.closeOnce.Do(func() { e.closeErr = e.shutdown() })
		}
	}()
	if err := os.MkdirAll(e.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("emulator: create state directory: %w", err)
	}
	if e.store, err = openStore(filepath.Join(e.cfg.StateDir, StateFile)); err != nil {
		return err
	}
	if err := e.loadMeta(); err != nil {
		return err
	}
	if err := e.loadHubCAs(); err != nil {
		return err
	}
	if err := e.loadRegCounts(); err != nil {
		return err
	}
	if err := e.setupServerCert(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.sink, err = openSink(filepath.Join(e.cfg.StateDir, TelemetryFile), e.cfg.LiveOut, e.cfg.TelemetryMemory); err != nil {
		return err
	}
	// Bind both listeners, then fix Info (it names the bound ports), then
	// serve: connection handlers read Info.
	if err := e.startMQTT(); err != nil {
		return err
	}
	if err := e.startHTTPS(); err != nil {
		return err
	}
	e.info = e.buildInfo()
	if err := e.serveMQTT(); err != nil {
		return err
	}
	e.serveHTTPS()
	raw, err := json.MarshalIndent(e.info, "", "  ")
	if err != nil {
		return fmt.Errorf("emulator: encode %s: %w", InfoFile, err)
	}
	// Mode 0600: the file holds both service keys.
	if err := pki.WriteFileAtomic(filepath.Join(e.cfg.StateDir, InfoFile), append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("emulator: write %s: %w", InfoFile, err)
	}
	e.wgMu.Lock()
	e.wg.Add(1)
	e.wgMu.Unlock()
	go e.housekeeping()
	e.log.Info("emulator started", "mqtt", e.info.MQTTAddr, "https", e.info.HTTPSAddr, "id_scope", e.meta.IDScope,
		"info", filepath.Join(e.cfg.StateDir, InfoFile))
	return nil
}

// Run starts the emulator, serves until ctx is cancelled, then closes it.
func (e *Emulator) Run(ctx context.Context) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return e.Close()
}

// Close stops the listeners, disconnects every device, waits for the
// emulator's goroutines and flushes the state and telemetry files.
func (e *Emulator) Close() error {
	e.closed.Store(true)
	if !e.started.Load() {
		return nil
	}
	e.closeOnce.Do(func() { e.closeErr = e.shutdown() })
	return e.closeErr
}

func (e *Emulator) shutdown() error {
	var errs []error
	if e.cancel != nil {
		e.cancel()
	}
	e.wgMu.Lock()
	e.stopping = true
	e.wgMu.Unlock()
	if e.httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := e.httpSrv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("emulator: stop https: %w", err))
		}
		cancel()
	}
	if e.httpLn != nil {
		e.httpLn.Close() // in case Start failed before serving it
	}
	if e.mqtt != nil {
		if err := e.mqtt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("emulator: stop mqtt: %w", err))
		}
	}
	e.wg.Wait()
	if e.sink != nil {
		if err := e.sink.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.store != nil {
		if err := e.store.close(); err != nil {
			errs = append(errs, fmt.Errorf("emulator: close state: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Info returns the content of emulator.json. It is the zero Info before
// Start.
func (e *Emulator) Info() Info { return e.info }

// Faults returns the fault injector.
func (e *Emulator) Faults() *Faults { return e.faults }

func (e *Emulator) loadMeta() error {
	var m meta
	err := e.store.db.Update(func(tx *bolt.Tx) error {
		got, ok, err := getJSON[meta](tx, bucketMeta, "emulator")
		if err != nil {
			return err
		}
		if ok {
			m = got
			return nil
		}
		m = meta{IDScope: "0ne" + strings.ToUpper(randHex(4)), DPSKey: randKey(), HubKey: randKey(), Created: time.Now().UTC()}
		return putJSON(tx, bucketMeta, "emulator", m)
	})
	if err != nil {
		return fmt.Errorf("emulator: load identity: %w", err)
	}
	e.meta = m
	if e.dpsKey, err = base64.StdEncoding.DecodeString(m.DPSKey); err != nil {
		return fmt.Errorf("emulator: state has a corrupt DPS key: %w", err)
	}
	if e.hubKey, err = base64.StdEncoding.DecodeString(m.HubKey); err != nil {
		return fmt.Errorf("emulator: state has a corrupt hub key: %w", err)
	}
	return nil
}

func (e *Emulator) loadRegCounts() error {
	return e.store.view(func(tx *bolt.Tx) error {
		return forEachJSON(tx, bucketRegCounts, func(k string, n int64) error {
			e.regCounts[k] = n
			return nil
		})
	})
}

// setupServerCert loads the emulator's own CA and server certificate, creating
// them on first run and reissuing the certificate when it nears expiry or the
// host names changed.
func (e *Emulator) setupServerCert() error {
	caDir := filepath.Join(e.cfg.StateDir, CADir)
	ca, err := pki.LoadCA(caDir)
	if errors.Is(err, pki.ErrNoCA) {
		ca, err = pki.InitCA(caDir, pki.CAOptions{CN: "Tracker Emulator Server CA"})
	}
	if err != nil {
		return fmt.Errorf("emulator: server CA: %w", err)
	}
	e.serverCA = ca
	hosts := e.certHosts()
	certPath := filepath.Join(e.cfg.StateDir, ServerCert)
	keyPath := filepath.Join(e.cfg.StateDir, ServerKey)
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && c.Leaf != nil &&
		time.Until(c.Leaf.NotAfter) > 24*time.Hour && certCovers(c.Leaf, hosts) && c.Leaf.CheckSignatureFrom(ca.Issuer) == nil {
		e.serverTLS = c
		return nil
	}
	d, err := ca.IssueServer(hosts, pki.DeviceOptions{})
	if err != nil {
		return fmt.Errorf("emulator: issue server certificate: %w", err)
	}
	if err := pki.WriteFileAtomic(certPath, pki.EncodePEM(d.Chain...), 0o644); err != nil {
		return fmt.Errorf("emulator: write server certificate: %w", err)
	}
	if err := pki.WriteKeyFile(keyPath, d.Key); err != nil {
		return fmt.Errorf("emulator: write server key: %w", err)
	}
	e.serverTLS = d.TLSCertificate()
	e.serverTLS.Leaf = d.Leaf
	return nil
}

func (e *Emulator) certHosts() []string {
	hosts := []string{e.cfg.HostName}
	for _, h := range append([]string{"localhost", "127.0.0.1"}, e.cfg.ExtraHosts...) {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func certCovers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func (e *Emulator) tlsConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{e.serverTLS},
		MinVersion:   tls.VersionTLS12,
		// The classic key exchanges Azure's endpoints offer; the post-quantum
		// hybrid Go prefers by default costs more CPU per handshake than
		// the rest of a registration.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
	}
}

func (e *Emulator) buildInfo() Info {
	mqttAddr := e.mqttLn.Address()
	httpsAddr := e.httpLn.Addr().String()
	_, mport, _ := net.SplitHostPort(mqttAddr)
	_, hport, _ := net.SplitHostPort(httpsAddr)
	mqttHost := e.cfg.HostName
	if mport != "8883" {
		mqttHost = net.JoinHostPort(e.cfg.HostName, mport)
	}
	restHost := e.cfg.HostName
	if hport != "443" {
		restHost = net.JoinHostPort(e.cfg.HostName, hport)
	}
	url := "https://" + restHost
	return Info{
		StateDir:            e.cfg.StateDir,
		MQTTAddr:            mqttAddr,
		HTTPSAddr:           httpsAddr,
		HostName:            e.cfg.HostName,
		DPSHost:             mqttHost,
		HubHost:             mqttHost,
		IDScope:             e.meta.IDScope,
		HTTPSURL:            url,
		DPSConnectionString: sas.ConnectionString{HostName: restHost, SharedAccessKeyName: DPSPolicy, SharedAccessKey: e.meta.DPSKey}.String(),
		HubConnectionString: sas.ConnectionString{HostName: restHost, SharedAccessKeyName: HubPolicy, SharedAccessKey: e.meta.HubKey}.String(),
		ServerCAFile:        filepath.Join(e.cfg.StateDir, CADir, pki.RootCertFile),
		TelemetryFile:       filepath.Join(e.cfg.StateDir, TelemetryFile),
		ConsoleURL:          url + ConsolePath,
		ConsoleToken:        e.consoleToken(),
		PID:                 os.Getpid(),
		Started:             time.Now().UTC(),
	}
}

// LoadInfo reads DIR/emulator.json written by a running (or stopped)
// emulator.
func LoadInfo(stateDir string) (Info, error) {
	path := filepath.Join(stateDir, InfoFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, fmt.Errorf("emulator: %s not found; start one with 'trackerctl emulator --state %s'", path, stateDir)
	}
	if err != nil {
		return Info{}, fmt.Errorf("emulator: read %s: %w", path, err)
	}
	var info Info
	if err := json.Unmarshal(raw, &info); err != nil {
		return Info{}, fmt.Errorf("emulator: %s is not valid JSON: %w", path, err)
	}
	return info, nil
}

// housekeeping fsyncs telemetry, expires DPS operations and drops pending
// sessions whose CONNACK was never sent.
func (e *Emulator) housekeeping() {
	defer e.wg.Done()
	sync := time.NewTicker(e.cfg.TelemetrySyncInterval)
	defer sync.Stop()
	sweep := time.NewTicker(10 * time.Second)
	defer sweep.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-sync.C:
			if err := e.sink.sync(); err != nil {
				e.log.Error("telemetry fsync failed", "err", err)
			}
		case now := <-sweep.C:
			e.mu.Lock()
			for id, op := range e.ops {
				if now.Sub(op.created) > 15*time.Minute {
					delete(e.ops, id)
				}
			}
			// A connection whose CONNACK could not be written never gets
			// OnDisconnect.
			for cl := range e.pending {
				if cl.Closed() {
					delete(e.pending, cl)
				}
			}
			for cl, s := range e.sessions {
				if cl.Closed() && cl.StopTime() > 0 && now.Unix()-cl.StopTime() > 10 {
					delete(e.sessions, cl)
					if e.hub[s.id] == s {
						delete(e.hub, s.id)
					}
				}
			}
			e.mu.Unlock()
		}
	}
}

// goWork runs fn on a new goroutine owned by the emulator, at most
// cap(e.work) at a time. It blocks (the caller is a client's read loop, which
// is then paced) while all slots are taken, and drops fn once the emulator is
// closing.
func (e *Emulator) goWork(fn func()) {
	select {
	case e.work <- struct{}{}:
	case <-e.ctx.Done():
		return
	}
	e.wgMu.Lock()
	if e.stopping {
		e.wgMu.Unlock()
		<-e.work
		return
	}
	e.wg.Add(1)
	e.wgMu.Unlock()
	go func() {
		defer func() { <-e.work; e.wg.Done() }()
		fn()
	}()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newETag returns an opaque etag shaped like DPS's: base64 of a quoted UUID.
func newETag() string {
	return base64.StdEncoding.EncodeToString([]byte(`"` + newUUID() + `"`))
}

func thumbprints(c *x509.Certificate) (string, string) { return pki.Thumbprints(c) }

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
