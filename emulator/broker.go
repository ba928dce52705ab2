package emulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type connKind int

const (
	kindDPS connKind = iota + 1
	kindHub
)

// String names the service.
func (k connKind) String() string {
	if k == kindDPS {
		return "dps"
	}
	return "hub"
}

// session is one authenticated MQTT connection.
type session struct {
	kind       connKind
	cl         *mqtt.Client
	id         string // registration ID as the device wrote it (DPS), or device ID (hub)
	chain      []*x509.Certificate
	authMethod string // iothub-connection-auth-method annotation
	generation string // the hub device's generationId
	connected  time.Time
	apiVersion string
	kicked     string // why the emulator closed the connection, if it did
}

// errKicked is the stop cause of connections the emulator closes.
var errKicked = errors.New("emulator: connection closed by the emulator")

func (e *Emulator) startMQTT() error {
	opts := &mqtt.Options{
		Logger: slog.New(minLevel{h: e.log.With("component", "mqtt").Handler(), min: slog.LevelError}),
		Capabilities: func() *mqtt.Capabilities {
			c := mqtt.NewDefaultServerCapabilities()
			c.MaximumSessionExpiryInterval = 24 * 60 * 60
			c.RetainAvailable = 0
			return c
		}(),
		// Replies go straight to one client (see deliver); the broker never
		// routes device publishes, so $SYS topics are not needed either.
		SysTopicResendInterval: 3600,
	}
	srv := mqtt.New(opts)
	if err := srv.AddHook(&hook{e: e}, nil); err != nil {
		return fmt.Errorf("emulator: mqtt hook: %w", err)
	}
	e.mqttLn = newListener("mqtts", e.cfg.MQTTAddr, e.tlsConfigMQTT())
	if err := srv.AddListener(e.mqttLn); err != nil {
		return fmt.Errorf("emulator: listen mqtt on %s: %w", e.cfg.MQTTAddr, err)
	}
	e.mqtt = srv
	return nil
}

// serveMQTT starts accepting devices on the listener bound by startMQTT.
func (e *Emulator) serveMQTT() error {
	if err := e.mqtt.Serve(); err != nil {
		return fmt.Errorf("emulator: serve mqtt: %w", err)
	}
	return nil
}

// tlsConfigMQTT asks devices for a certificate without verifying it in the
// handshake: which CA a device may chain to depends on the enrollments and
// the registry, so the CONNECT hook verifies it.
func (e *Emulator) tlsConfigMQTT() *tls.Config {
	c := e.tlsConfig()
	c.ClientAuth = tls.RequestClientCert
	return c
}

// hook connects mochi's broker to the emulator's DPS and hub logic.
type hook struct {
	mqtt.HookBase
	e *Emulator
}

// ID names the hook for mochi.
func (h *hook) ID() string { return "emulator" }

// Provides lists the events the hook handles.
func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribe, mqtt.OnPublish,
		mqtt.OnPublished, mqtt.OnPacketSent, mqtt.OnQosDropped, mqtt.OnWill, mqtt.OnPacketRead,
	}, []byte{b})
}

// OnPacketRead closes the connection of a client publishing to a topic
// name with wildcards, which mochi would otherwise drop without a PUBACK
// or a word: IoT Hub closes the connection on any invalid publish.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && strings.ContainsAny(pk.TopicName, "+#") {
		if s := h.e.sessionOf(cl); s != nil {
			h.e.kick(s, fmt.Sprintf("topic name %q contains a wildcard", pk.TopicName))
		}
		return pk, packets.ErrTopicNameInvalid
	}
	return pk, nil
}

// OnConnect authenticates the CONNECT. Refusals get their CONNACK here, so
// each can carry the right return code (mochi's own refusal is always 5).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	e := h.e
	s, code, reason := e.authenticate(cl, pk)
	if code != packets.CodeSuccess {
		kind := EventHubRefused
		if s != nil && s.kind == kindDPS {
			kind = EventDPSRefused
		}
		id := pk.Connect.ClientIdentifier
		e.event(kind, id, reason)
		e.log.Info("connection refused", "client_id", id, "remote", cl.Net.Remote, "reason", reason)
		e.mqtt.SendConnack(cl, code, false, nil)
		return code
	}
	// DPS and hub connections share the listener but not the client-ID
	// namespace: a device's DPS connection must not take over its hub
	// session.
	if s.kind == kindDPS {
		cl.ID = "dps/" + strings.ToLower(s.id)
	} else {
		cl.ID = "hub/" + s.id
	}
	e.mu.Lock()
	e.pending[cl] = s
	e.mu.Unlock()
	return nil
}

// OnConnectAuthenticate admits the clients OnConnect authenticated.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	_, ok := h.e.pending[cl]
	return ok
}

// OnSessionEstablish runs just before the CONNACK, and before mochi takes
// over an older session of the same client: the device counts as connected
// from here, so a client that has its CONNACK finds itself connected.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	e := h.e
	e.mu.Lock()
	s := e.pending[cl]
	delete(e.pending, cl)
	if s == nil {
		e.mu.Unlock()
		return
	}
	e.sessions[cl] = s
	var old *session
	if s.kind == kindHub {
		old = e.hub[s.id]
		if old != nil && old.kicked == "" {
			old.kicked = "new connection for the same device (400027 ConnectionForcefullyClosedOnNewConnection)"
		}
		e.hub[s.id] = s
		now := time.Now().UTC()
		e.connTimes[s.id] = now
		e.activity[s.id] = now
	}
	e.mu.Unlock()
	if old != nil {
		e.event(EventHubKicked, s.id, "a new connection replaced this one")
	}
	if s.kind == kindHub {
		e.event(EventHubConnect, s.id, s.authMethod)
	} else {
		e.event(EventDPSConnect, s.id, "")
	}
}

// OnSessionEstablished runs after the CONNACK: a persistent session may
// already hold the C2D subscription, so queued messages can go.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	s := h.e.sessionOf(cl)
	if s != nil && s.kind == kindHub {
		h.e.goWork(func() { h.e.flushC2D(s.id) })
	}
}

// OnDisconnect forgets the session and records why it ended.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	e := h.e
	e.mu.Lock()
	s := e.sessions[cl]
	delete(e.sessions, cl)
	delete(e.pending, cl)
	current := s != nil && s.kind == kindHub && e.hub[s.id] == s
	if current {
		delete(e.hub, s.id)
		e.connTimes[s.id] = time.Now().UTC()
	}
	e.mu.Unlock()
	if s == nil || s.kind != kindHub {
		return
	}
	detail := "client disconnected"
	if s.kicked != "" {
		detail = s.kicked
	} else if err != nil && !errors.Is(err, packets.CodeDisconnect) {
		detail = err.Error()
	}
	e.event(EventHubDisconnect, s.id, detail)
}

// OnACLCheck is called for SUBSCRIBE filters (write=false); publishes are
// checked in OnPublish, where any QoS can be answered with a disconnect.
func (h *hook) OnACLCheck(cl *mqtt.Client, filter string, write bool) bool {
	if write {
		return true
	}
	s := h.e.sessionOf(cl)
	if s == nil {
		return false
	}
	switch s.kind {
	case kindDPS:
		return filter == "$dps/registrations/res/#"
	case kindHub:
		switch filter {
		case "devices/" + s.id + "/messages/devicebound/#", "devices/+/messages/devicebound/#",
			"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#":
			return true
		}
	}
	return false
}

// OnSubscribe grants at most QoS 1, as DPS and IoT Hub do.
func (h *hook) OnSubscribe(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		if pk.Filters[i].Qos > 1 {
			pk.Filters[i].Qos = 1
		}
	}
	return pk
}

// OnPacketSent runs after a packet reached the client's socket. Queued C2D
// messages follow the SUBACK of a devicebound subscription, not precede it.
func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	s := h.e.sessionOf(cl)
	if s == nil || s.kind != kindHub {
		return
	}
	if _, ok := subscribed(cl, "devices/"+s.id+"/messages/devicebound/"); ok {
		h.e.goWork(func() { h.e.flushC2D(s.id) })
	}
}

// OnQosDropped puts back a C2D message that was never acknowledged when its
// session ends.
func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	s := h.e.sessionOf(cl)
	if s == nil || s.kind != kindHub || pk.FixedHeader.Type != packets.Publish {
		return
	}
	if strings.HasPrefix(pk.TopicName, "devices/"+s.id+"/messages/devicebound/") {
		h.e.requeueC2D(s.id, pk)
	}
}

// OnWill turns a hub device's will message into telemetry, as IoT Hub does
// (application property iothub-MessageType=Will).
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	s := h.e.sessionOf(cl)
	if s == nil || s.kind != kindHub {
		return will, nil
	}
	bag, ok := telemetryBag(will.TopicName, s.id)
	if ok {
		h.e.recordTelemetry(s, will.TopicName, bag, will.Payload, map[string]string{"iothub-MessageType": "Will"})
	}
	// The will then goes to the broker's subscribers of its topic: devices
	// cannot subscribe to telemetry topics, so there are none.
	return will, nil
}

// OnPublish handles every device publish. Its return value decides the
// PUBACK: CodeSuccessIgnore acknowledges without routing, ErrRejectPacket
// sends nothing. Replies are sent after the PUBACK (OnPublished), from
// goroutines the emulator owns.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	e := h.e
	s := e.sessionOf(cl)
	if s == nil {
		cl.Stop(errKicked)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos > 1 {
		e.kick(s, "QoS 2 publish (only QoS 0 and 1 are supported)")
		return pk, packets.ErrRejectPacket
	}
	if d := e.faults.delay(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-e.ctx.Done():
			t.Stop()
			return pk, packets.ErrRejectPacket
		}
	}
	withheld := pk.FixedHeader.Qos == 1 && e.faults.withholdPuback(s.id)
	var err error
	switch s.kind {
	case kindDPS:
		err = e.dpsPublish(s, pk)
	case kindHub:
		err = e.hubPublish(s, pk, withheld)
	}
	if err != nil {
		e.kick(s, err.Error())
		return pk, packets.ErrRejectPacket
	}
	if withheld {
		e.event(EventPubackWithheld, s.id, pk.TopicName)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished runs after the PUBACK was written: now the answer may go out.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	e := h.e
	s := e.sessionOf(cl)
	if s == nil {
		return
	}
	topic, payload := pk.TopicName, pk.Payload
	switch s.kind {
	case kindDPS:
		e.goWork(func() { e.dpsRequest(s, topic, payload) })
	case kindHub:
		if strings.HasPrefix(topic, "$iothub/twin/") {
			e.goWork(func() { e.twinRequest(s, topic, payload) })
		}
	}
}

func (e *Emulator) sessionOf(cl *mqtt.Client) *session {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.sessions[cl]; s != nil {
		return s
	}
	return e.pending[cl]
}

// kick closes a connection the way IoT Hub does on a protocol violation:
// the TCP connection just ends.
func (e *Emulator) kick(s *session, why string) {
	e.mu.Lock()
	if s.kicked == "" {
		s.kicked = why
	}
	e.mu.Unlock()
	if s.kind == kindHub {
		e.event(EventHubKicked, s.id, why)
	} else {
		e.event(EventDPSFailed, s.id, "connection closed: "+why)
	}
	e.log.Info("closing device connection", "device_id", s.id, "kind", s.kind, "reason", why)
	s.cl.Stop(errKicked)
}

// kickDevice closes every connection of device (or registration) id.
func (e *Emulator) kickDevice(id, why string) bool {
	e.mu.Lock()
	var victims []*session
	for _, s := range e.sessions {
		if s.id == id || (s.kind == kindDPS && strings.EqualFold(s.id, id)) {
			victims = append(victims, s)
		}
	}
	e.mu.Unlock()
	for _, s := range victims {
		e.kick(s, why)
	}
	return len(victims) > 0
}

// forgetSession removes a deleted device's persistent MQTT session, so a
// device created again under the same ID starts clean.
func (e *Emulator) forgetSession(id string) {
	if cl, ok := e.mqtt.Clients.Get("hub/" + id); ok {
		cl.Stop(errKicked)
		e.mqtt.UnsubscribeClient(cl)
		cl.ClearInflights()
		e.mqtt.Clients.Delete(cl.ID)
	}
}

// deliver writes a PUBLISH to one client. Replies never go through the
// broker's topic routing: every DPS device subscribes to the same
// $dps/registrations/res/# filter and must only see its own answers.
func (e *Emulator) deliver(s *session, topic string, payload []byte, qos byte) error {
	cl := s.cl
	if cl.Closed() {
		return fmt.Errorf("emulator: deliver %s to %s: connection closed", topic, s.id)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	}
	if qos > 0 {
		id, err := cl.NextPacketID()
		if err != nil {
			return fmt.Errorf("emulator: deliver %s to %s: %w", topic, s.id, err)
		}
		pk.PacketID = uint16(id)
		// Tracked in flight so the client's PUBACK completes it and a
		// persistent session resends it after a reconnect.
		cl.State.Inflight.Set(pk)
	}
	if err := cl.WritePacket(pk); err != nil {
		return fmt.Errorf("emulator: deliver %s to %s: %w", topic, s.id, err)
	}
	return nil
}

// subscribed reports whether the client has a subscription matching topic
// and with which QoS.
func subscribed(cl *mqtt.Client, topic string) (byte, bool) {
	var q byte
	var ok bool
	for filter, sub := range cl.State.Subscriptions.GetAll() {
		if topicMatch(filter, topic) {
			if !ok || sub.Qos > q {
				q = sub.Qos
			}
			ok = true
		}
	}
	return min(q, 1), ok
}

// topicMatch implements MQTT filter matching for + and #.
func topicMatch(filter, topic string) bool {
	fs := strings.Split(filter, "/")
	ts := strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// peerChain returns the certificates the client sent in its TLS handshake.
func peerChain(cl *mqtt.Client) []*x509.Certificate {
	var c net.Conn = cl.Net.Conn
	if t, ok := c.(*trackedConn); ok {
		c = t.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	return tc.ConnectionState().PeerCertificates
}

// minLevel drops records below min (mochi logs every client error at warn).
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

// Enabled drops records below the minimum level.
func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}

// Handle passes the record on.
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }

// WithAttrs keeps the minimum level.
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(a), min: m.min}
}

// WithGroup keeps the minimum level.
func (m minLevel) WithGroup(n string) slog.Handler { return minLevel{h: m.h.WithGroup(n), min: m.min} }
