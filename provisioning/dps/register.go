package dps

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Result is the outcome of a successful registration.
type Result struct {
	// Status is the operation's final status, "assigned".
	Status string
	// AssignedHub is the IoT hub's host name, DeviceID the device's
	// identity there.
	AssignedHub, DeviceID string
	// Substatus tells whether this was a first assignment
	// ("initialAssignment") or a re-provisioning
	// ("reprovisionedToInitialAssignment", "deviceDataMigrated", ...).
	Substatus string
	// RegistrationID is the registration ID DPS reports.
	RegistrationID string
	// OperationID is the DPS operation, ETag the registration record's
	// etag.
	OperationID, ETag string
	// CreatedAt and UpdatedAt are the registration record's times (zero
	// when DPS sent none or an unreadable one).
	CreatedAt, UpdatedAt time.Time
	// Payload is the custom allocation payload DPS returned, if any.
	Payload json.RawMessage
	// RegistrationState is the whole registrationState object as DPS
	// returned it.
	RegistrationState json.RawMessage
	// Polls is how many operation-status requests it took.
	Polls int
}

// Register provisions the device: it connects to DPS over MQTT with
// mutual TLS, sends the register request, polls the operation until DPS
// answers with a final status, disconnects and returns the assignment.
//
// It fails with an error matching ErrUnauthorized, ErrDisabled,
// ErrServerUntrusted or ErrDeviceCertExpired, a *FailedError, a
// *ThrottledError, a *ConnackError or a *TLSError when DPS gave a definite
// answer, and with another wrapped error (network, ErrTimeout,
// ErrConnectionLost, ErrProtocol, ErrStillAssigning, the context's error)
// when it is worth retrying later. It never retries a connection itself:
// the caller owns the backoff between attempts.
//
// Register waits at least Config.MinPollInterval between two requests and
// honours DPS's retry-after. The context bounds the whole call; when it
// ends, the connection is closed and every goroutine Register started has
// returned before it does.
func Register(ctx context.Context, cfg Config) (*Result, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	c := &client{s: s, log: s.Logger.With("component", "dps"), sleep: sleepCtx}
	return c.register(ctx)
}

// client is the state of one Register call.
type client struct {
	s     *settings
	log   *slog.Logger
	sleep func(ctx context.Context, d time.Duration) error // replaced in tests

	mc    mqtt.Client
	msgs  chan mqtt.Message // responses from the subscription handler
	lost  chan error        // connection lost
	done  chan struct{}     // closed when Register is finishing
	rid   int
	connM sync.Mutex
	conn  net.Conn // the TLS connection, closed to abort a pending connect
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client) register(ctx context.Context) (*Result, error) {
	c.msgs = make(chan mqtt.Message, 16)
	c.lost = make(chan error, 1)
	c.done = make(chan struct{})
	start := time.Now()
	c.log.Debug("dps: connecting", "endpoint", c.s.addr, "registration_id", c.s.RegistrationID)
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.subscribe(ctx); err != nil {
		return nil, err
	}
	res, err := c.run(ctx)
	if err != nil {
		return nil, err
	}
	c.log.Info("dps: assigned", "registration_id", c.s.RegistrationID, "hub", res.AssignedHub,
		"device_id", res.DeviceID, "substatus", res.Substatus, "polls", res.Polls, "took", time.Since(start))
	return res, nil
}

// connect opens the TLS connection and the MQTT session.
func (c *client) connect(ctx context.Context) error {
	s := c.s
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: s.host,
		RootCAs:    s.RootCAs,
		// Always present the device certificate, even when the server's
		// list of acceptable CAs does not name its issuer (Go would then
		// send none): the server decides, and its refusal says why.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.Certificate, nil
		},
		Time: s.Time,
	}
	dialCtx, cancelDial := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancelDial()
	var dialErr error // set by the dial function, read after the token completes
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + s.addr).
		SetClientID(s.RegistrationID).
		SetUsername(username(s.IDScope, s.RegistrationID, s.ClientVersion)).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetOrderMatters(false).
		SetKeepAlive(s.KeepAlive).
		SetPingTimeout(s.OperationTimeout).
		SetConnectTimeout(s.ConnectTimeout).
		SetWriteTimeout(s.OperationTimeout).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{}, Config: tlsConf}
			conn, err := d.DialContext(dialCtx, "tcp", s.addr)
			if err != nil {
				dialErr = err
				return nil, err
			}
			c.connM.Lock()
			c.conn = conn
			c.connM.Unlock()
			if dialCtx.Err() != nil { // cancelled while the handshake finished
				conn.Close()
			}
			return conn, nil
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	c.mc = mqtt.NewClient(opts)
	tok := c.mc.Connect()
	select {
	case <-tok.Done():
	case <-dialCtx.Done():
		// Abort: cancel the dial or close the connection, then wait for
		// paho's connect goroutine, which now fails promptly.
		cancelDial()
		c.connM.Lock()
		if c.conn != nil {
			c.conn.Close()
		}
		c.connM.Unlock()
		<-tok.Done()
		if tok.Error() == nil {
			c.mc.Disconnect(250)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dps: connect to %s: %w", s.addr, err)
		}
		return fmt.Errorf("%w: connect to %s: nothing within %v", ErrTimeout, s.addr, s.ConnectTimeout)
	}
	ct := tok.(*mqtt.ConnectToken)
	if err := tok.Error(); err != nil {
		if rc := ct.ReturnCode(); rc >= 1 && rc <= 5 {
			ce := &ConnackError{Code: rc}
			if now := s.Time(); s.leaf != nil && (now.After(s.leaf.NotAfter) || now.Before(s.leaf.NotBefore)) {
				ce.CertNotValid = true
				ce.Hint = fmt.Sprintf("the device certificate %q is valid from %s to %s, and the device's time is %s",
					s.leaf.Subject.CommonName, s.leaf.NotBefore.UTC().Format(time.RFC3339),
					s.leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			}
			return fmt.Errorf("%w (connecting to %s as %s)", ce, s.addr, s.RegistrationID)
		}
		cause := err
		if dialErr != nil {
			cause = dialErr
		}
		if te := classifyTLS(cause, s.host, s.leaf, s.Time()); te != nil {
			return fmt.Errorf("%w (connecting to %s)", te, s.addr)
		}
		return fmt.Errorf("dps: connect to %s: %w", s.addr, cause)
	}
	if ct.SessionPresent() {
		c.mc.Disconnect(250)
		return fmt.Errorf("%w: connect to %s: CONNACK has session present on a clean session", ErrProtocol, s.addr)
	}
	c.log.Debug("dps: connected", "endpoint", s.addr)
	return nil
}

// close ends the registration: handlers stop delivering, then the client
// sends DISCONNECT and stops its goroutines.
func (c *client) close() {
	close(c.done)
	c.mc.Disconnect(500)
}

// subscribe subscribes to the response topics.
func (c *client) subscribe(ctx context.Context) error {
	tok := c.mc.Subscribe(responseFilter, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case c.msgs <- m:
		case <-c.done:
		}
	})
	if err := c.wait(ctx, tok, "subscribe"); err != nil {
		return err
	}
	st := tok.(*mqtt.SubscribeToken)
	if q, ok := st.Result()[responseFilter]; ok && q > 1 {
		return fmt.Errorf("%w: subscribe %s: granted QoS %#x", ErrProtocol, responseFilter, q)
	}
	return nil
}

// wait waits for a paho token, bounded by OperationTimeout, the context
// and the connection.
func (c *client) wait(ctx context.Context, tok mqtt.Token, what string) error {
	t := time.NewTimer(c.s.OperationTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			if !c.mc.IsConnectionOpen() {
				return fmt.Errorf("%w: %s: %v", ErrConnectionLost, what, err)
			}
			return fmt.Errorf("dps: %s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dps: %s: %w", what, ctx.Err())
	case err := <-c.lost:
		return fmt.Errorf("%w: %s: %v", ErrConnectionLost, what, err)
	case <-t.C:
		return fmt.Errorf("%w: %s: nothing within %v", ErrTimeout, what, c.s.OperationTimeout)
	}
}

// request publishes one request and waits for the response with the same
// $rid. Responses to earlier requests are dropped.
func (c *client) request(ctx context.Context, what, topic string, body []byte, rid string) (response, error) {
	deadline := time.NewTimer(c.s.OperationTimeout)
	defer deadline.Stop()
	tok := c.mc.Publish(topic, 1, false, body)
	if err := c.wait(ctx, tok, what); err != nil {
		return response{}, err
	}
	for {
		select {
		case m := <-c.msgs:
			r, err := parseResponseTopic(m.Topic())
			if err != nil {
				c.log.Debug("dps: ignoring message", "topic", m.Topic(), "err", err)
				continue
			}
			if r.RID != rid {
				c.log.Debug("dps: ignoring response to another request", "rid", r.RID, "want", rid)
				continue
			}
			r.Body = m.Payload()
			return r, nil
		case <-ctx.Done():
			return response{}, fmt.Errorf("dps: %s: waiting for the response: %w", what, ctx.Err())
		case err := <-c.lost:
			if r, ok := c.lastWord(rid); ok {
				return r, nil
			}
			return response{}, fmt.Errorf("%w: %s: %v", ErrConnectionLost, what, err)
		case <-deadline.C:
			return response{}, fmt.Errorf("%w: %s: no response within %v", ErrTimeout, what, c.s.OperationTimeout)
		}
	}
}

// lostGrace is how long lastWord waits for a response that arrived just
// before the connection closed. DPS may answer (401, for example) and then
// close; with OrderMatters off, paho hands each message to the handler on
// a goroutine of its own that may not have run when the loss is reported.
const lostGrace = 200 * time.Millisecond

// lastWord looks for the response to rid among the messages delivered
// around a connection loss.
func (c *client) lastWord(rid string) (response, bool) {
	t := time.NewTimer(lostGrace)
	defer t.Stop()
	for {
		select {
		case m := <-c.msgs:
			r, err := parseResponseTopic(m.Topic())
			if err == nil && r.RID == rid {
				r.Body = m.Payload()
				return r, true
			}
		case <-t.C:
			return response{}, false
		}
	}
}

func (c *client) nextRID() string {
	c.rid++
	return strconv.Itoa(c.rid)
}

// run is the register/poll loop.
func (c *client) run(ctx context.Context) (*Result, error) {
	var (
		operationID string // "" until DPS gave one: register, else poll
		polls       int
		throttled   int
		requests    int
	)
	for {
		requests++
		if requests > c.s.MaxPolls+c.s.ThrottleRetries+1 {
			return nil, fmt.Errorf("%w after %d requests (%d polls)", ErrStillAssigning, requests-1, polls)
		}
		rid := c.nextRID()
		var (
			r   response
			err error
		)
		if operationID == "" {
			c.log.Debug("dps: register", "rid", rid)
			r, err = c.request(ctx, "register", registerTopicFor(rid), c.s.body, rid)
		} else {
			polls++
			c.log.Debug("dps: poll", "rid", rid, "operation_id", operationID, "poll", polls)
			r, err = c.request(ctx, "poll operation "+operationID, pollTopicFor(rid, operationID), nil, rid)
		}
		if err != nil {
			return nil, err
		}
		c.log.Debug("dps: response", "status", r.Status, "rid", r.RID, "retry_after", r.RetryAfter)

		switch {
		case r.Status >= 200 && r.Status < 300:
			op, rs, err := parseOperationStatus(r.Body)
			if err != nil {
				return nil, fmt.Errorf("%w: status %d: %v", ErrProtocol, r.Status, err)
			}
			if op.OperationID != "" {
				operationID = op.OperationID
			}
			switch op.Status {
			case StatusAssigned:
				return c.result(op, rs, polls)
			case StatusAssigning, StatusUnassigned:
				if operationID == "" {
					return nil, fmt.Errorf("%w: status %q without an operationId to poll", ErrProtocol, op.Status)
				}
				if polls >= c.s.MaxPolls {
					return nil, fmt.Errorf("%w: operation %s after %d polls", ErrStillAssigning, operationID, polls)
				}
			case statusRegistering:
				operationID = ""
			case StatusFailed:
				fe := &FailedError{Status: r.Status, OperationID: op.OperationID}
				if rs != nil {
					fe.ErrorCode, fe.Message = rs.ErrorCode, rs.ErrorMessage
				}
				return nil, fe
			case StatusDisabled:
				return nil, fmt.Errorf("%w: registration %s (operation %s); re-enable the enrollment to provision this device", ErrDisabled, c.s.RegistrationID, op.OperationID)
			default:
				return nil, fmt.Errorf("%w: unknown status %q", ErrProtocol, op.Status)
			}
			if err := c.sleep(ctx, pollDelay(r, c.s.MinPollInterval)); err != nil {
				return nil, fmt.Errorf("dps: waiting to poll operation %s: %w", operationID, err)
			}

		case r.Status == 429 || r.Status >= 500:
			eb := parseErrorBody(r.Body)
			te := &ThrottledError{Status: r.Status, RetryAfter: r.RetryAfter,
				ErrorCode: eb.ErrorCode, Message: eb.Message, TrackingID: eb.TrackingID}
			throttled++
			wait := pollDelay(r, c.s.MinPollInterval)
			if throttled > c.s.ThrottleRetries {
				return nil, te
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
				return nil, te
			}
			c.log.Info("dps: throttled, retrying", "status", r.Status, "wait", wait, "attempt", throttled)
			if err := c.sleep(ctx, wait); err != nil {
				return nil, te
			}
			// Re-send what was throttled: the register request, or the
			// poll when an operation is known.

		default:
			eb := parseErrorBody(r.Body)
			return nil, &FailedError{Status: r.Status, ErrorCode: eb.ErrorCode, Message: eb.Message, TrackingID: eb.TrackingID}
		}
	}
}

// result builds the Result of an "assigned" answer, which must name the
// hub and the device.
func (c *client) result(op operationStatus, rs *registrationState, polls int) (*Result, error) {
	if rs == nil || rs.AssignedHub == "" || rs.DeviceID == "" {
		return nil, fmt.Errorf("%w: status assigned without assignedHub and deviceId", ErrProtocol)
	}
	res := &Result{
		Status:            op.Status,
		AssignedHub:       rs.AssignedHub,
		DeviceID:          rs.DeviceID,
		Substatus:         rs.Substatus,
		RegistrationID:    rs.RegistrationID,
		OperationID:       op.OperationID,
		ETag:              rs.ETag,
		CreatedAt:         parseTime(rs.CreatedDateTimeUTC),
		UpdatedAt:         parseTime(rs.LastUpdatedDateTimeUTC),
		RegistrationState: op.RegistrationState,
		Polls:             polls,
	}
	if len(rs.Payload) > 0 && string(rs.Payload) != "null" {
		res.Payload = rs.Payload
	}
	if res.RegistrationID == "" {
		res.RegistrationID = c.s.RegistrationID
	}
	return res, nil
}
