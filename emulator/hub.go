package emulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Limits IoT Hub applies (S1).
const (
	maxD2CSize      = 256 << 10
	maxC2DSize      = 64 << 10
	maxC2DQueue     = 50
	maxTwinSection  = 32 << 10
	maxMethodSize   = 128 << 10
	twinResPrefix   = "$iothub/twin/res/"
	twinGetPrefix   = "$iothub/twin/GET/?"
	twinPatchPrefix = "$iothub/twin/PATCH/properties/reported/?"
	desiredPrefix   = "$iothub/twin/PATCH/properties/desired/?$version="
	methodReqPrefix = "$iothub/methods/POST/"
	methodResPrefix = "$iothub/methods/res/"
)

// System property names in property bags and how monitor-events names them.
var systemProps = map[string]string{
	"$.mid": "message_id",
	"$.cid": "correlation_id",
	"$.uid": "user_id",
	"$.to":  "to",
	"$.ct":  "content_type",
	"$.ce":  "content_encoding",
	"$.exp": "absolute_expiry_time",
}

// hubPublish handles a hub device publish in the client's read loop:
// telemetry is recorded before its PUBACK, method answers wake their caller,
// twin requests are checked here and answered after the PUBACK. An error
// closes the connection, as IoT Hub does on any protocol violation.
func (e *Emulator) hubPublish(s *session, pk packets.Packet, withheld bool) error {
	topic := pk.TopicName
	e.mu.Lock()
	e.activity[s.id] = time.Now().UTC()
	e.mu.Unlock()
	switch {
	case strings.HasPrefix(topic, "devices/"):
		bag, ok := telemetryBag(topic, s.id)
		if !ok {
			return fmt.Errorf("topic %q is not this device's telemetry topic (devices/%s/messages/events/)", topic, s.id)
		}
		if len(pk.Payload) > maxD2CSize {
			return fmt.Errorf("message of %d bytes exceeds the 256 KiB limit", len(pk.Payload))
		}
		if err := e.throttle(s); err != nil {
			return err
		}
		var extra map[string]string
		if pk.FixedHeader.Retain {
			extra = map[string]string{"mqtt-retain": "true"}
		}
		if _, err := e.recordTelemetry(s, topic, bag, pk.Payload, extra); err != nil {
			return err
		}
		return nil
	case strings.HasPrefix(topic, twinGetPrefix), strings.HasPrefix(topic, twinPatchPrefix):
		q, err := url.ParseQuery(topic[strings.IndexByte(topic, '?')+1:])
		if err != nil || q.Get("$rid") == "" {
			return fmt.Errorf("twin topic %q has no $rid", topic)
		}
		return nil
	case strings.HasPrefix(topic, methodResPrefix):
		rest := topic[len(methodResPrefix):]
		statusStr, query, ok := strings.Cut(rest, "/?")
		status, err := strconv.Atoi(statusStr)
		if !ok || err != nil {
			return fmt.Errorf("method response topic %q: want $iothub/methods/res/{status}/?$rid={rid}", topic)
		}
		q, _ := url.ParseQuery(query)
		rid := q.Get("$rid")
		e.mu.Lock()
		ch := e.methods[s.id+"\x00"+rid]
		e.mu.Unlock()
		if ch == nil {
			e.log.Info("method response for no pending request", "device_id", s.id, "rid", rid)
			return nil
		}
		select {
		case ch <- methodReply{status: status, payload: bytes.Clone(pk.Payload)}:
		default:
		}
		return nil
	}
	return fmt.Errorf("topic %q is not an IoT Hub device topic", topic)
}

// telemetryBag returns the property bag of a telemetry topic of device id.
func telemetryBag(topic, id string) (string, bool) {
	prefix := "devices/" + id + "/messages/events"
	if topic == prefix {
		return "", true
	}
	if !strings.HasPrefix(topic, prefix+"/") {
		return "", false
	}
	return topic[len(prefix)+1:], true
}

// throttle applies the D2C rate limit: wait for a token, or refuse the
// message (and the connection) when the wait would be too long.
func (e *Emulator) throttle(s *session) error {
	wait, ok := e.faults.reserveD2C(time.Now())
	if !ok {
		e.event(EventThrottled, s.id, "refused: over the D2C rate")
		return fmt.Errorf("D2C rate exceeded (429 ThrottlingException)")
	}
	if wait <= 0 {
		return nil
	}
	e.event(EventThrottled, s.id, "delayed "+wait.Round(time.Millisecond).String())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-e.ctx.Done():
		return ErrClosed
	}
}

// recordTelemetry decodes the property bag and appends the message to the
// sink.
func (e *Emulator) recordTelemetry(s *session, topic, bag string, payload []byte, extra map[string]string) (Message, error) {
	m := Message{
		DeviceID:     s.id,
		EnqueuedTime: time.Now().UTC(),
		Payload:      bytes.Clone(payload),
		System:       map[string]string{},
		Properties:   map[string]string{},
		Topic:        topic,
	}
	for _, p := range parseBag(bag) {
		switch {
		case systemProps[p.key] != "":
			m.System[systemProps[p.key]] = p.value
		case p.key == "$.ifid":
			m.Interface = p.value
		case p.key == "$.sub":
			m.Component = p.value
		case strings.HasPrefix(p.key, "$."):
			// Other system properties ($.on for modules, ...) are not
			// application properties.
		default:
			m.Properties[p.key] = p.value
		}
	}
	for k, v := range extra {
		m.Properties[k] = v
	}
	return e.sink.record(m, s.authMethod, s.generation)
}

type prop struct{ key, value string }

// parseBag decodes an MQTT property bag ("k1=v1&k2=v2", keys and values
// URL-encoded, "$" possibly as %24). A key without "=" has an empty value.
// Malformed escapes are kept as written.
func parseBag(bag string) []prop {
	var out []prop
	for _, part := range strings.Split(bag, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		out = append(out, prop{key: unescape(k), value: unescape(v)})
	}
	return out
}

func unescape(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

// formatBag encodes properties for a C2D topic.
func formatBag(props []prop) string {
	parts := make([]string, 0, len(props))
	for _, p := range props {
		parts = append(parts, url.QueryEscape(p.key)+"="+url.QueryEscape(p.value))
	}
	return strings.ReplaceAll(strings.Join(parts, "&"), "+", "%20")
}

// twinRequest answers a twin GET or reported-properties PATCH after its
// PUBACK.
func (e *Emulator) twinRequest(s *session, topic string, payload []byte) {
	q, _ := url.ParseQuery(topic[strings.IndexByte(topic, '?')+1:])
	rid := q.Get("$rid")
	reply := func(status int, extra string, body []byte) {
		t := twinResPrefix + strconv.Itoa(status) + "/?$rid=" + rid + extra
		qos, ok := subscribed(s.cl, t)
		if !ok {
			e.log.Info("twin reply dropped: device is not subscribed to $iothub/twin/res/#", "device_id", s.id)
			return
		}
		if err := e.deliver(s, t, body, qos); err != nil {
			e.log.Info("twin reply not delivered", "device_id", s.id, "err", err)
		}
	}
	if strings.HasPrefix(topic, twinGetPrefix) {
		tr, aerr := e.getTwinRecord(s.id)
		if aerr != nil {
			reply(aerr.Status, "", twinErrorBody(aerr))
			return
		}
		body, _ := json.Marshal(map[string]any{
			"desired":  withVersion(tr.Desired, tr.DesiredVersion),
			"reported": withVersion(tr.Reported, tr.ReportedVersion),
		})
		reply(200, "", body)
		return
	}
	var patch map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(payload), &patch); err != nil || patch == nil {
		reply(400, "", twinErrorBody(badRequest(400004, "reported properties patch is not a JSON object")))
		return
	}
	v, aerr := e.patchReported(s.id, patch)
	if aerr != nil {
		reply(aerr.Status, "", twinErrorBody(aerr))
		return
	}
	e.event(EventTwinReported, s.id, "version "+strconv.FormatInt(v, 10))
	reply(204, "&$version="+strconv.FormatInt(v, 10), nil)
}

func twinErrorBody(aerr *APIError) []byte {
	b, _ := json.Marshal(map[string]any{"errorCode": aerr.Code, "message": aerr.Message})
	return b
}

func withVersion(m map[string]any, v int64) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, val := range m {
		out[k] = val
	}
	out["$version"] = v
	return out
}

// mergePatch applies a JSON merge patch: null deletes, objects merge,
// anything else replaces.
func mergePatch(dst, patch map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range patch {
		if strings.HasPrefix(k, "$") {
			continue // $version, $metadata are the hub's
		}
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			cur, _ := dst[k].(map[string]any)
			dst[k] = mergePatch(cur, pv)
		default:
			dst[k] = v
		}
	}
	return dst
}

// methodReply is a device's answer to a direct method.
type methodReply struct {
	status  int
	payload []byte
}

// MethodResult is the answer to a direct method invocation.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// InvokeMethod calls direct method name on a connected device, as
// POST /twins/{id}/methods does: the device must be connected (or connect
// within connectTimeout) and subscribed to $iothub/methods/POST/#, and answer
// within responseTimeout.
func (e *Emulator) InvokeMethod(ctx context.Context, deviceID, name string, payload json.RawMessage, responseTimeout, connectTimeout time.Duration) (MethodResult, error) {
	r, aerr := e.invokeMethod(ctx, deviceID, name, payload, responseTimeout, connectTimeout)
	if aerr != nil {
		return r, aerr
	}
	return r, nil
}

func (e *Emulator) invokeMethod(ctx context.Context, deviceID, name string, payload json.RawMessage, responseTimeout, connectTimeout time.Duration) (MethodResult, *APIError) {
	if name == "" || strings.ContainsAny(name, "/#+") {
		return MethodResult{}, badRequest(400004, "method name %q is empty or contains / # +", name)
	}
	if len(payload) > maxMethodSize {
		return MethodResult{}, badRequest(400004, "method payload exceeds 128 KiB")
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if _, aerr := e.getDevice(deviceID); aerr != nil {
		return MethodResult{}, aerr
	}
	topicFor := func(rid string) string { return methodReqPrefix + name + "/?$rid=" + rid }
	var s *session
	deadline := time.Now().Add(connectTimeout)
	for {
		e.mu.Lock()
		s = e.hub[deviceID]
		e.mu.Unlock()
		if s != nil {
			if _, ok := subscribed(s.cl, topicFor("0")); ok {
				break
			}
		}
		if time.Now().After(deadline) {
			return MethodResult{}, &APIError{Status: 404, Code: 404103, HubCode: "DeviceNotOnline",
				Message: fmt.Sprintf("device %q is not connected or not subscribed to $iothub/methods/POST/#", deviceID)}
		}
		select {
		case <-ctx.Done():
			return MethodResult{}, &APIError{Status: 504, Code: 504101, HubCode: "GatewayTimeout", Message: "cancelled: " + ctx.Err().Error()}
		case <-time.After(50 * time.Millisecond):
		}
	}
	e.mu.Lock()
	e.ridSeq++
	rid := strconv.FormatUint(e.ridSeq, 16)
	key := deviceID + "\x00" + rid
	ch := make(chan methodReply, 1)
	e.methods[key] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.methods, key)
		e.mu.Unlock()
	}()
	qos, _ := subscribed(s.cl, topicFor(rid))
	if err := e.deliver(s, topicFor(rid), payload, qos); err != nil {
		return MethodResult{}, &APIError{Status: 404, Code: 404103, HubCode: "DeviceNotOnline", Message: err.Error()}
	}
	t := time.NewTimer(responseTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		res := MethodResult{Status: r.status, Payload: json.RawMessage("null")}
		if p := bytes.TrimSpace(r.payload); len(p) > 0 {
			if !json.Valid(p) {
				e.event(EventMethod, deviceID, name+": answer is not JSON")
				return res, &APIError{Status: 400, Code: 400027, HubCode: "BadDeviceResponse", Message: "the device's method response is not valid JSON"}
			}
			res.Payload = json.RawMessage(p)
		}
		e.event(EventMethod, deviceID, fmt.Sprintf("%s -> %d", name, r.status))
		return res, nil
	case <-t.C:
		e.event(EventMethod, deviceID, name+": timed out")
		return MethodResult{}, &APIError{Status: 504, Code: 504101, HubCode: "GatewayTimeout",
			Message: fmt.Sprintf("timed out after %s waiting for device %q to answer method %q", responseTimeout, deviceID, name)}
	case <-ctx.Done():
		return MethodResult{}, &APIError{Status: 504, Code: 504101, HubCode: "GatewayTimeout", Message: "cancelled: " + ctx.Err().Error()}
	case <-e.ctx.Done():
		return MethodResult{}, &APIError{Status: 503, Code: 503000, HubCode: "ServiceUnavailable", Message: "emulator shutting down"}
	}
}

// C2DMessage is a cloud-to-device message to send.
type C2DMessage struct {
	Payload []byte
	// MessageID, CorrelationID, UserID, ContentType, ContentEncoding and
	// Expiry become the $.mid, $.cid, $.uid, $.ct, $.ce and $.exp system
	// properties; MessageID is generated when empty.
	MessageID       string
	CorrelationID   string
	UserID          string
	ContentType     string
	ContentEncoding string
	Expiry          string
	// Properties are application properties.
	Properties map[string]string
}

type c2dMessage struct {
	topicBag string
	payload  []byte
}

// SendC2D queues a cloud-to-device message for device id and delivers it at
// once if the device is connected and subscribed. At most 50 messages wait
// per device (IoT Hub's limit); more are refused.
func (e *Emulator) SendC2D(deviceID string, m C2DMessage) error {
	if aerr := e.sendC2D(deviceID, m); aerr != nil {
		return aerr
	}
	return nil
}

func (e *Emulator) sendC2D(deviceID string, m C2DMessage) *APIError {
	if len(m.Payload) > maxC2DSize {
		return badRequest(400004, "message of %d bytes exceeds the 64 KiB C2D limit", len(m.Payload))
	}
	if _, aerr := e.getDevice(deviceID); aerr != nil {
		return aerr
	}
	if m.MessageID == "" {
		m.MessageID = newUUID()
	}
	var props []prop
	for _, p := range []prop{{"$.mid", m.MessageID}, {"$.cid", m.CorrelationID}, {"$.uid", m.UserID},
		{"$.to", "/devices/" + deviceID + "/messages/deviceBound"}, {"$.ct", m.ContentType}, {"$.ce", m.ContentEncoding}, {"$.exp", m.Expiry}} {
		if p.value != "" {
			props = append(props, p)
		}
	}
	for _, k := range sortedKeys(m.Properties) {
		props = append(props, prop{k, m.Properties[k]})
	}
	e.mu.Lock()
	if len(e.c2d[deviceID]) >= maxC2DQueue {
		e.mu.Unlock()
		return &APIError{Status: 403, Code: 403004, HubCode: "DeviceMaximumQueueDepthExceeded",
			Message: fmt.Sprintf("device %q already has %d messages waiting", deviceID, maxC2DQueue)}
	}
	e.c2d[deviceID] = append(e.c2d[deviceID], c2dMessage{topicBag: formatBag(props), payload: bytes.Clone(m.Payload)})
	e.mu.Unlock()
	e.flushC2D(deviceID)
	return nil
}

// flushC2D delivers queued messages to the device if it is connected and
// subscribed to its devicebound topic.
func (e *Emulator) flushC2D(deviceID string) {
	e.c2dMu.Lock()
	defer e.c2dMu.Unlock()
	prefix := "devices/" + deviceID + "/messages/devicebound/"
	e.mu.Lock()
	s := e.hub[deviceID]
	queue := e.c2d[deviceID]
	if s == nil || len(queue) == 0 {
		e.mu.Unlock()
		return
	}
	qos, ok := subscribed(s.cl, prefix)
	if !ok {
		e.mu.Unlock()
		return
	}
	delete(e.c2d, deviceID)
	e.mu.Unlock()
	for i, m := range queue {
		if err := e.deliver(s, prefix+m.topicBag, m.payload, max(qos, 1)); err != nil {
			e.mu.Lock()
			e.c2d[deviceID] = append(queue[i:], e.c2d[deviceID]...)
			e.mu.Unlock()
			return
		}
		e.event(EventC2D, deviceID, m.topicBag)
	}
}

// requeueC2D puts back a C2D message whose delivery was never acknowledged.
func (e *Emulator) requeueC2D(deviceID string, pk packets.Packet) {
	prefix := "devices/" + deviceID + "/messages/devicebound/"
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.c2d[deviceID]) >= maxC2DQueue {
		return
	}
	m := c2dMessage{topicBag: strings.TrimPrefix(pk.TopicName, prefix), payload: pk.Payload}
	e.c2d[deviceID] = append([]c2dMessage{m}, e.c2d[deviceID]...)
}

func (e *Emulator) purgeC2D(deviceID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.c2d[deviceID])
	delete(e.c2d, deviceID)
	return n
}

// ConnectedDevices returns the IDs of devices connected to the hub.
func (e *Emulator) ConnectedDevices() []string {
	e.mu.Lock()
	ids := make([]string, 0, len(e.hub))
	for id := range e.hub {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	sortStrings(ids)
	return ids
}

// IsConnected reports whether device id has a hub connection.
func (e *Emulator) IsConnected(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hub[id] != nil
}

func decodeKey(k string) ([]byte, error) { return base64.StdEncoding.DecodeString(k) }
