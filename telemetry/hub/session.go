package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// disconnectQuiesce is how long a graceful disconnect waits for the
// DISCONNECT packet to be written before closing the connection.
const disconnectQuiesce = 500 // milliseconds

// session is one MQTT connection with its own paho client. A PUBACK counts
// only for publishes made through the session that received it.
type session struct {
	c  *Client
	pc mqtt.Client

	ctx    context.Context // ends with the connection
	end    context.CancelCauseFunc
	done   <-chan struct{}
	upMono time.Time // when the connection came up (monotonic)

	sessionPresent bool
	throttled      atomic.Bool // the hub answered 429 on this connection

	rawMu     sync.Mutex
	raw       net.Conn
	rawClosed bool

	mu      sync.Mutex
	closing bool           // no more goroutines may start
	wg      sync.WaitGroup // goroutines owned by the session
}

// goOwned runs f in a goroutine the session waits for on close, unless the
// session is already closing; it reports whether f was started.
func (s *session) goOwned(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Go(f)
	return true
}

// errConnClosed is the cause of a session ended by Run itself.
var errConnClosed = errors.New("hub: connection closed by the client")

// reason is why the session ended.
func (s *session) reason() error {
	if err := context.Cause(s.ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return errConnClosed
}

// dial opens the TLS connection for paho, bounded by ctx and the connect
// timeout, and records it so that a cancelled connect can close it.
func (s *session) dial(ctx context.Context) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, s.c.cfg.ConnectTimeout)
	defer cancel()
	d := tls.Dialer{Config: s.c.tlsConf}
	conn, err := d.DialContext(dctx, "tcp", s.c.addr)
	if err != nil {
		return nil, fmt.Errorf("hub: dial %s: %w", s.c.addr, err)
	}
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	if s.rawClosed {
		conn.Close()
		return nil, fmt.Errorf("hub: dial %s: %w", s.c.addr, context.Canceled)
	}
	s.raw = conn
	return conn, nil
}

// abortDial closes the network connection of an unfinished connect.
func (s *session) abortDial() {
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	s.rawClosed = true
	if s.raw != nil {
		s.raw.Close()
	}
}

// failureKind classifies a failed connection attempt.
type failureKind int

const (
	failOther failureKind = iota
	failRefused
	failThrottled
)

// connectError is a failed connection attempt.
type connectError struct {
	kind failureKind
	err  error
}

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// classifyConnect sorts paho's connect error by CONNACK code or TLS alert.
func classifyConnect(rc byte, err error) failureKind {
	switch rc {
	case packets.ErrRefusedIDRejected, packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised:
		return failRefused
	case packets.ErrRefusedServerUnavailable:
		return failThrottled
	}
	// A TLS alert from the server during the handshake (or, with TLS 1.3,
	// on the first read) means it refused the device certificate.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return failRefused
	}
	return failOther
}

// connect opens one connection and subscribes. The returned session is up
// and not yet published as current.
func (c *Client) connect(ctx context.Context) (*session, error) {
	sctx, end := context.WithCancelCause(ctx)
	s := &session{c: c, ctx: sctx, end: end, done: sctx.Done()}

	opts := mqtt.NewClientOptions()
	opts.AddBroker("ssl://" + c.addr)
	opts.SetClientID(c.cfg.DeviceID)
	opts.SetUsername(c.username)
	opts.SetProtocolVersion(4)
	opts.SetCleanSession(c.cfg.CleanSession)
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetOrderMatters(false)
	opts.SetKeepAlive(c.cfg.KeepAlive)
	opts.SetConnectTimeout(c.cfg.ConnectTimeout)
	opts.SetWriteTimeout(c.cfg.PublishTimeout)
	opts.SetStore(mqtt.NewMemoryStore())
	opts.SetDefaultPublishHandler(s.handle)
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		s.end(fmt.Errorf("%w: %w", ErrConnectionLost, err))
	})
	opts.SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
		return s.dial(sctx)
	})
	s.pc = mqtt.NewClient(opts)

	tok := s.pc.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		s.abortDial()
		<-tok.Done() // prompt: the dial or the CONNACK read fails
		s.close()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		s.end(err)
		var rc byte
		if ct, ok := tok.(*mqtt.ConnectToken); ok {
			rc = ct.ReturnCode()
		}
		return nil, &connectError{kind: classifyConnect(rc, err), err: fmt.Errorf("hub: connect to %s: %w", c.addr, err)}
	}
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		s.sessionPresent = ct.SessionPresent()
	}

	if err := s.subscribe(); err != nil {
		s.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &connectError{kind: failOther, err: err}
	}
	s.upMono = time.Now()
	return s, nil
}

// subscribe makes the hub subscriptions and checks every grant.
func (s *session) subscribe() error {
	subs := subscriptions(s.c.cfg.DeviceID)
	tok := s.pc.SubscribeMultiple(subs, nil)
	t := time.NewTimer(s.c.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-s.done:
		return fmt.Errorf("hub: subscribe: %w", s.reason())
	case <-t.C:
		return fmt.Errorf("hub: subscribe: no SUBACK within %v: %w", s.c.cfg.ConnectTimeout, ErrTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("hub: subscribe: %w", err)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	res := st.Result()
	var refused []string
	for f := range subs {
		if g, ok := res[f]; !ok || g > 2 {
			refused = append(refused, f)
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("hub: the hub refused the subscriptions %s", strings.Join(refused, ", "))
	}
	return nil
}

// close ends the session: a graceful DISCONNECT if the connection is still
// up, then waits for the session's own goroutines.
func (s *session) close() {
	s.end(errConnClosed)
	s.pc.Disconnect(disconnectQuiesce)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wg.Wait()
}

// handle runs on a paho goroutine (OrderMatters is off, so one per
// message). It only routes; it blocks at most until the session ends.
func (s *session) handle(_ mqtt.Client, m mqtt.Message) {
	c := s.c
	topic := m.Topic()
	switch {
	case strings.HasPrefix(topic, twinResPrefix):
		r, err := parseTwinResponse(topic, m.Payload())
		if err != nil {
			c.log.Warn("ignoring twin response", "err", err)
			return
		}
		c.deliverResponse(r)
	case strings.HasPrefix(topic, twinDesiredPrefix):
		v, ok, err := parseDesiredVersion(topic)
		if err != nil {
			c.log.Warn("ignoring desired properties", "err", err)
			return
		}
		ev := event{desired: m.Payload(), version: v, hasVersion: ok}
		s.queue(c.events, ev)
	case strings.HasPrefix(topic, methodPrefix):
		name, rid, err := parseMethod(topic)
		if err != nil {
			c.log.Warn("ignoring method request", "err", err)
			return
		}
		select {
		case c.methods <- methodCall{s: s, name: name, rid: rid, payload: m.Payload()}:
		case <-s.done:
		}
	case strings.HasPrefix(topic, c2dPrefix(c.cfg.DeviceID)):
		msg, err := parseC2D(c.cfg.DeviceID, topic, m.Payload())
		if err != nil {
			c.log.Warn("ignoring cloud-to-device message", "err", err)
			return
		}
		s.queue(c.events, event{c2d: &msg})
	default:
		c.log.Debug("ignoring message on unexpected topic", "topic", topic)
	}
}

// queue hands ev to the dispatcher unless the session ends first.
func (s *session) queue(ch chan<- event, ev event) {
	select {
	case ch <- ev:
	case <-s.done:
	}
}
