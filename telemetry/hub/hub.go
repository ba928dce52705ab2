package hub

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Outcomes callers branch on.
var (
	// ErrUnauthorized means the hub refused the device's identity several
	// times in a row (CONNACK 2, 4 or 5, or a TLS alert from the server):
	// the device is unknown, disabled or deleted in the hub, or its
	// certificate is not accepted. Provision again through DPS.
	ErrUnauthorized = errors.New("hub: device identity refused")
	// ErrNotConnected means there is no connection to the hub at the moment;
	// nothing was sent. Keep the message and try again once connected.
	ErrNotConnected = errors.New("hub: not connected")
	// ErrConnectionLost means the connection ended before the PUBACK or the
	// response arrived. The hub may or may not have the message: keep it and
	// send it again.
	ErrConnectionLost = errors.New("hub: connection lost before acknowledgement")
	// ErrTimeout means no PUBACK or response arrived within
	// [Config.PublishTimeout]. For a publish the client also drops the
	// connection, which the hub considers broken.
	ErrTimeout = errors.New("hub: timed out waiting for the hub")
	// ErrThrottled means the hub asked the device to slow down (status 429,
	// or CONNACK 3 "server unavailable"); the reconnect backoff is longer
	// after it.
	ErrThrottled = errors.New("hub: throttled by the hub")
	// ErrInvalidMessage means a message can never be sent as it is (too
	// large, or a property name the hub reserves). Retrying will not help.
	ErrInvalidMessage = errors.New("hub: invalid message")
)

// Defaults for the zero fields of [Config].
const (
	DefaultPort           = 8883
	DefaultKeepAlive      = 60 * time.Second
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = 2 * time.Minute
	DefaultMaxInFlight    = 8
	DefaultConnectTimeout = 30 * time.Second
	DefaultPublishTimeout = 30 * time.Second
	DefaultMaxRefusals    = 3
	// APIVersion is the IoT Hub MQTT api-version sent in the username.
	APIVersion = "2021-04-12"
	// MaxMessageSize is IoT Hub's limit for a device-to-cloud message, body
	// and properties together.
	MaxMessageSize = 256 * 1024
)

// Config configures a [Client]. Zero durations and counts take the
// defaults above.
type Config struct {
	// Host is the assigned hub, "name.azure-devices.net" or "host:port";
	// the port is 8883 when absent. The host part (without the port) is the
	// TLS server name and the first element of the MQTT username.
	Host string
	// DeviceID is the device's identity in the hub, also the MQTT client id.
	DeviceID string
	// Certificate is the device certificate followed by its intermediates;
	// its PrivateKey must be a crypto.Signer.
	Certificate tls.Certificate
	// RootCAs verifies the hub's server certificate; nil uses the system
	// roots.
	RootCAs *x509.CertPool
	// Time is the clock used for TLS verification and for the times in
	// [State], for boards without a real-time clock; nil is time.Now.
	Time func() time.Time
	// KeepAlive is the MQTT keep-alive interval (default 60 s); IoT Hub drops
	// a connection that is idle for 1.5 times this.
	KeepAlive time.Duration
	// ReconnectMin and ReconnectMax bound the wait between connection
	// attempts: after the n-th consecutive failure the wait is drawn
	// uniformly from [ReconnectMin, min(ReconnectMax, ReconnectMin·2ⁿ)]
	// (defaults 1 s and 2 min). The random source is seeded from the device
	// id, so a fleet that lost the hub at once does not return in lockstep.
	// After a throttling refusal the wait is drawn from the upper half of
	// [ReconnectMin, ReconnectMax]. The failure count resets only after a
	// connection has stayed up for ReconnectMax, so a hub that accepts and
	// drops at once is retried more and more slowly.
	ReconnectMin, ReconnectMax time.Duration
	// MaxInFlight bounds the QoS 1 publishes awaiting their PUBACK
	// (default 8).
	MaxInFlight int
	// ConnectTimeout bounds the TLS handshake and, separately, the wait for
	// CONNACK and SUBACK (default 30 s).
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for a PUBACK or a twin response
	// (default 30 s).
	PublishTimeout time.Duration
	// MaxRefusals is how many consecutive identity refusals make Run return
	// [ErrUnauthorized] (default 3).
	MaxRefusals int
	// ClientVersion goes into the username as DeviceClientType, e.g.
	// "coldchain-trackerd/1.2.0"; empty leaves it out.
	ClientVersion string
	// Logger receives connection events (never payloads or keys), with a
	// device_id attribute added; the caller names the component. Nil
	// discards them.
	Logger *slog.Logger
	// CleanSession asks the hub to forget the device's session on every
	// connect. The default, false, is what the Azure SDKs do: the hub keeps
	// the subscriptions and queues cloud-to-device messages (up to 50) while
	// the device is offline, and delivers them after it reconnects.
	CleanSession bool
}

// State is a snapshot of the connection, for status reports.
type State struct {
	// Connected reports whether a connection is up and subscribed.
	Connected bool
	// Since is when Connected last changed (zero before the first attempt).
	Since time.Time
	// ConnectedAt is when the current or the last connection came up.
	ConnectedAt time.Time
	// Connects counts connections that came up; Reconnects is Connects-1
	// once there was one.
	Connects, Reconnects int
	// Attempts counts connection attempts, Failures the ones that failed.
	Attempts, Failures int
	// Refusals counts the current run of identity refusals.
	Refusals int
	// LastError is the last connection error, empty if none yet.
	LastError string
	// NextAttempt is when the next connection attempt is due while
	// disconnected and waiting.
	NextAttempt time.Time
	// InFlight is the number of publishes awaiting their PUBACK.
	InFlight int
	// SessionPresent is the CONNACK flag of the current connection: the hub
	// kept the device's session.
	SessionPresent bool
}

// MethodHandler answers a direct method. It returns the status reported to
// the caller (200 for success, by convention) and a response that is
// marshalled to JSON (a json.RawMessage is sent as it is).
type MethodHandler func(ctx context.Context, name string, payload json.RawMessage) (status int, response any)

// Client is an IoT Hub device client. Create it with [New], set the
// callbacks, then call [Client.Run].
type Client struct {
	cfg      Config
	addr     string // host:port to dial
	hostname string // host without port
	username string
	tlsConf  *tls.Config
	log      *slog.Logger

	slots   chan struct{} // MaxInFlight publish slots
	rid     atomic.Uint64
	running atomic.Bool

	events  chan event
	methods chan methodCall

	mu        sync.Mutex
	cur       *session
	connected chan struct{} // closed while cur != nil
	state     State
	pending   map[string]*request
	onDesired func(json.RawMessage, int64)
	onMethod  MethodHandler
	onC2D     func(Message)
	rng       *rand.Rand
}

// New checks cfg and returns a client; it does not connect.
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	hostname, port, err := net.SplitHostPort(cfg.Host)
	if err != nil {
		hostname, port = cfg.Host, strconv.Itoa(DefaultPort)
	}
	if hostname == "" {
		return nil, fmt.Errorf("hub: host %q has no host name: give the assigned hub, e.g. name.azure-devices.net", cfg.Host)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nil, fmt.Errorf("hub: host %q has an invalid port", cfg.Host)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:       cfg,
		addr:      net.JoinHostPort(hostname, port),
		hostname:  hostname,
		username:  username(hostname, cfg.DeviceID, cfg.ClientVersion),
		log:       log.With("device_id", cfg.DeviceID),
		slots:     make(chan struct{}, cfg.MaxInFlight),
		events:    make(chan event, 16),
		methods:   make(chan methodCall, 16),
		connected: make(chan struct{}),
		pending:   make(map[string]*request),
		rng:       newRand(cfg.DeviceID),
	}
	c.tlsConf = &tls.Config{
		Certificates: []tls.Certificate{cfg.Certificate},
		RootCAs:      cfg.RootCAs,
		ServerName:   hostname,
		MinVersion:   tls.VersionTLS12,
		Time:         cfg.Time,
	}
	return c, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	if cfg.Host == "" {
		errs = append(errs, errors.New("hub: no host: set the assigned hub from the DPS registration"))
	}
	if err := checkDeviceID(cfg.DeviceID); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.Certificate.Certificate) == 0 {
		errs = append(errs, errors.New("hub: no device certificate: load the device's certificate chain and key"))
	} else if _, ok := cfg.Certificate.PrivateKey.(crypto.Signer); !ok {
		errs = append(errs, errors.New("hub: the device certificate has no private key that can sign"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"KeepAlive", cfg.KeepAlive}, {"ReconnectMin", cfg.ReconnectMin}, {"ReconnectMax", cfg.ReconnectMax}, {"ConnectTimeout", cfg.ConnectTimeout}, {"PublishTimeout", cfg.PublishTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("hub: %s is negative (%v)", d.name, d.v))
		}
	}
	if cfg.MaxInFlight < 0 || cfg.MaxRefusals < 0 {
		errs = append(errs, errors.New("hub: MaxInFlight and MaxRefusals must not be negative"))
	}
	if cfg.KeepAlive > 0 && cfg.KeepAlive < time.Second {
		errs = append(errs, fmt.Errorf("hub: KeepAlive %v is below the MQTT resolution of one second", cfg.KeepAlive))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.Time == nil {
		cfg.Time = time.Now
	}
	setDur := func(p *time.Duration, def time.Duration) {
		if *p == 0 {
			*p = def
		}
	}
	setDur(&cfg.KeepAlive, DefaultKeepAlive)
	setDur(&cfg.ReconnectMin, DefaultReconnectMin)
	setDur(&cfg.ReconnectMax, DefaultReconnectMax)
	setDur(&cfg.ConnectTimeout, DefaultConnectTimeout)
	setDur(&cfg.PublishTimeout, DefaultPublishTimeout)
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxRefusals == 0 {
		cfg.MaxRefusals = DefaultMaxRefusals
	}
	return nil
}

// checkDeviceID applies IoT Hub's rule for device ids (up to 128 ASCII
// letters, digits and -.%_*?!(),:=@$'), which also keeps MQTT wildcards and
// topic separators out of the topics built from it.
func checkDeviceID(id string) error {
	if id == "" {
		return errors.New("hub: no device id: use the deviceId from the DPS registration")
	}
	if len(id) > 128 {
		return fmt.Errorf("hub: device id %.20q... is longer than 128 characters", id)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r < 128 && strings.ContainsRune("-.%_*?!(),:=@$'", r):
		default:
			return fmt.Errorf("hub: device id %q contains %q: IoT Hub allows letters, digits and -.%%_*?!(),:=@$'", id, r)
		}
	}
	return nil
}

// newRand seeds the backoff jitter from the device id.
func newRand(deviceID string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(deviceID))
	s := h.Sum64()
	return rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))
}

// OnDesired sets the callback for desired properties. It receives every
// desired-property patch whose $version is newer than the last one
// delivered, and after each (re)connect the full desired document from a
// twin GET when its $version differs from the last one delivered, so nothing
// is missed while offline. The document includes "$version". Set it before
// Run.
func (c *Client) OnDesired(f func(patch json.RawMessage, version int64)) {
	c.mu.Lock()
	c.onDesired = f
	c.mu.Unlock()
}

// OnMethod sets the direct-method handler. Up to four methods run at once,
// off paho's goroutines, with a context that ends when Run returns. Without
// a handler methods are answered with status 501. Set it before Run.
func (c *Client) OnMethod(f MethodHandler) {
	c.mu.Lock()
	c.onMethod = f
	c.mu.Unlock()
}

// OnC2D sets the callback for cloud-to-device messages, delivered one at a
// time in arrival order. A message is acknowledged to the hub once it has
// been queued for the callback; if the connection ends before that PUBACK
// is out, the hub delivers the message again after the reconnect, so
// delivery is at least once (deduplicate on MessageID). Without a callback
// messages are acknowledged and dropped. Set it before Run.
func (c *Client) OnC2D(f func(Message)) {
	c.mu.Lock()
	c.onC2D = f
	c.mu.Unlock()
}

// State returns a snapshot of the connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.liveLocked()
	s := c.state
	s.InFlight = len(c.slots)
	return s
}

// Connected returns a channel that is closed while the client is connected.
// Once the connection ends, later calls return a new open channel.
func (c *Client) Connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.liveLocked()
	return c.connected
}

// WaitConnected blocks until the client is connected or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	select {
	case <-c.Connected():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub: wait for connection: %w", ctx.Err())
	}
}

// current returns the connected session, or nil.
func (c *Client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveLocked()
}
