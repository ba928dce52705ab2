package hub

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Message is a device-to-cloud or cloud-to-device message.
type Message struct {
	// Body is the payload, opaque to the hub.
	Body []byte
	// MessageID ($.mid) identifies the message; a retried message should
	// keep it so the cloud side can deduplicate.
	MessageID string
	// ContentType ($.ct) and ContentEncoding ($.ce) describe the body, e.g.
	// "application/json" and "utf-8" so that hub routing can query it.
	ContentType, ContentEncoding string
	// CorrelationID ($.cid) links a message to another one.
	CorrelationID string
	// CreationTime, when set, is sent as iothub-creation-time-utc.
	CreationTime time.Time
	// Properties are the application properties. Names must not start
	// with "$" (the hub's system properties) and must not be
	// iothub-creation-time-utc. For a cloud-to-device message they also
	// hold the system properties that have no field here ($.to, $.exp,
	// $.uid).
	Properties map[string]string
}

// Property names of the property bag.
const (
	propMessageID       = "$.mid"
	propCorrelationID   = "$.cid"
	propContentType     = "$.ct"
	propContentEncoding = "$.ce"
	propCreationTime    = "iothub-creation-time-utc"
	creationTimeLayout  = "2006-01-02T15:04:05.000Z"
)

// Topics and filters.
const (
	twinResPrefix     = "$iothub/twin/res/"
	twinDesiredPrefix = "$iothub/twin/PATCH/properties/desired/"
	methodPrefix      = "$iothub/methods/POST/"
	twinGetTopic      = "$iothub/twin/GET/?$rid="
	twinPatchTopic    = "$iothub/twin/PATCH/properties/reported/?$rid="
)

// username is the MQTT username IoT Hub expects from a device.
func username(host, deviceID, clientVersion string) string {
	u := host + "/" + deviceID + "/?api-version=" + APIVersion
	if clientVersion != "" {
		u += "&DeviceClientType=" + escape(clientVersion)
	}
	return u
}

func eventsPrefix(deviceID string) string { return "devices/" + deviceID + "/messages/events/" }
func c2dPrefix(deviceID string) string    { return "devices/" + deviceID + "/messages/devicebound/" }

// subscriptions are the filters subscribed after every connect with their
// QoS: four of the five subscriptions IoT Hub allows a device.
func subscriptions(deviceID string) map[string]byte {
	return map[string]byte{
		c2dPrefix(deviceID) + "#": 1,
		methodPrefix + "#":        0,
		twinResPrefix + "#":       0,
		twinDesiredPrefix + "#":   0,
	}
}

// escape percent-encodes s like JavaScript's encodeURIComponent, which is
// what the Azure SDKs use for property bags: everything but letters, digits
// and -_.!~*'() is encoded, a space as %20.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			strings.IndexByte("-_.!~*'()", ch) >= 0:
			b.WriteByte(ch)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[ch>>4])
			b.WriteByte(hex[ch&15])
		}
	}
	return b.String()
}

// eventTopic returns the telemetry topic of m with its property bag. It
// fails with [ErrInvalidMessage] for a message the hub would never accept.
func eventTopic(deviceID string, m *Message) (string, error) {
	var bag []string
	add := func(k, v string) {
		if v != "" {
			bag = append(bag, k+"="+escape(v))
		}
	}
	add(propMessageID, m.MessageID)
	add(propCorrelationID, m.CorrelationID)
	add(propContentType, m.ContentType)
	add(propContentEncoding, m.ContentEncoding)
	if !m.CreationTime.IsZero() {
		add(propCreationTime, m.CreationTime.UTC().Format(creationTimeLayout))
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		switch {
		case k == "":
			return "", fmt.Errorf("%w: empty application property name", ErrInvalidMessage)
		case strings.HasPrefix(k, "$"):
			return "", fmt.Errorf("%w: application property %q: names starting with $ are the hub's system properties", ErrInvalidMessage, k)
		case strings.EqualFold(k, propCreationTime):
			return "", fmt.Errorf("%w: application property %q: set Message.CreationTime instead", ErrInvalidMessage, k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		bag = append(bag, escape(k)+"="+escape(m.Properties[k]))
	}
	topic := eventsPrefix(deviceID) + strings.Join(bag, "&")
	if n := len(topic) + len(m.Body); n > MaxMessageSize {
		return "", fmt.Errorf("%w: %d bytes with properties, the hub accepts at most %d", ErrInvalidMessage, n, MaxMessageSize)
	}
	return topic, nil
}

// parseQuery splits a property bag or a topic's query into names and
// values, percent-decoding both ("+" stays a plus). A name without "=" has
// an empty value.
func parseQuery(q string) (map[string]string, error) {
	out := make(map[string]string)
	if q == "" {
		return out, nil
	}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("hub: property name %q: %w", k, err)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("hub: property %q value: %w", dk, err)
		}
		out[dk] = dv
	}
	return out, nil
}

// parseC2D decodes a cloud-to-device delivery on
// devices/{id}/messages/devicebound/{property-bag}.
func parseC2D(deviceID, topic string, payload []byte) (Message, error) {
	bag, ok := strings.CutPrefix(topic, c2dPrefix(deviceID))
	if !ok {
		return Message{}, fmt.Errorf("hub: cloud-to-device topic %q is not for device %s", topic, deviceID)
	}
	props, err := parseQuery(bag)
	if err != nil {
		return Message{}, fmt.Errorf("hub: cloud-to-device property bag: %w", err)
	}
	m := Message{Body: payload}
	take := func(k string) string {
		v := props[k]
		delete(props, k)
		return v
	}
	m.MessageID = take(propMessageID)
	m.CorrelationID = take(propCorrelationID)
	m.ContentType = take(propContentType)
	m.ContentEncoding = take(propContentEncoding)
	if ct, ok := props[propCreationTime]; ok {
		if t, err := time.Parse(time.RFC3339Nano, ct); err == nil {
			m.CreationTime = t
			delete(props, propCreationTime)
		}
	}
	if len(props) > 0 {
		m.Properties = props
	}
	return m, nil
}

// splitTopicQuery splits "path/?query" into the path segments after prefix
// and the decoded query.
func splitTopicQuery(topic, prefix string) (segs []string, query map[string]string, err error) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return nil, nil, fmt.Errorf("hub: topic %q does not start with %q", topic, prefix)
	}
	path, q, _ := strings.Cut(rest, "?")
	path = strings.TrimSuffix(path, "/")
	if path != "" {
		segs = strings.Split(path, "/")
	}
	query, err = parseQuery(q)
	if err != nil {
		return nil, nil, fmt.Errorf("hub: topic %q: %w", topic, err)
	}
	return segs, query, nil
}

// twinResponse is a parsed $iothub/twin/res/{status}/?$rid={rid}[&$version=n].
type twinResponse struct {
	status     int
	rid        string
	version    int64
	hasVersion bool
	body       []byte
}

func parseTwinResponse(topic string, body []byte) (twinResponse, error) {
	segs, q, err := splitTopicQuery(topic, twinResPrefix)
	if err != nil {
		return twinResponse{}, err
	}
	if len(segs) != 1 {
		return twinResponse{}, fmt.Errorf("hub: twin response topic %q has no status", topic)
	}
	status, err := strconv.Atoi(segs[0])
	if err != nil {
		return twinResponse{}, fmt.Errorf("hub: twin response topic %q: status %q is not a number", topic, segs[0])
	}
	r := twinResponse{status: status, rid: q["$rid"], body: body}
	if r.rid == "" {
		return twinResponse{}, fmt.Errorf("hub: twin response topic %q has no $rid", topic)
	}
	if v, ok := q["$version"]; ok {
		if r.version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return twinResponse{}, fmt.Errorf("hub: twin response topic %q: $version %q is not a number", topic, v)
		}
		r.hasVersion = true
	}
	return r, nil
}

// parseMethod parses $iothub/methods/POST/{name}/?$rid={rid}.
func parseMethod(topic string) (name, rid string, err error) {
	segs, q, err := splitTopicQuery(topic, methodPrefix)
	if err != nil {
		return "", "", err
	}
	if len(segs) != 1 || segs[0] == "" {
		return "", "", fmt.Errorf("hub: method topic %q has no method name", topic)
	}
	if q["$rid"] == "" {
		return "", "", fmt.Errorf("hub: method topic %q has no $rid", topic)
	}
	return segs[0], q["$rid"], nil
}

// parseDesiredVersion reads $version from a desired-properties PATCH topic,
// $iothub/twin/PATCH/properties/desired/?$version={n}.
func parseDesiredVersion(topic string) (version int64, ok bool, err error) {
	_, q, err := splitTopicQuery(topic, twinDesiredPrefix)
	if err != nil {
		return 0, false, err
	}
	v, ok := q["$version"]
	if !ok {
		return 0, false, nil
	}
	version, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("hub: desired patch topic %q: $version %q is not a number", topic, v)
	}
	return version, true, nil
}

// methodResponseTopic is where the answer to method request rid goes.
func methodResponseTopic(status int, rid string) string {
	return "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + escape(rid)
}
