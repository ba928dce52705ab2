package hub

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abcXYZ019", "abcXYZ019"},
		{"-_.!~*'()", "-_.!~*'()"},
		{"application/json", "application%2Fjson"},
		{"a b+c", "a%20b%2Bc"},
		{"k=v&x#/?$%", "k%3Dv%26x%23%2F%3F%24%25"},
		{"°C", "%C2%B0C"},
		{"coldchain-trackerd/1.0 (linux; arm)", "coldchain-trackerd%2F1.0%20(linux%3B%20arm)"},
	}
	for _, tt := range tests {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsername(t *testing.T) {
	if got, want := username("h.azure-devices.net", "dev-1", ""), "h.azure-devices.net/dev-1/?api-version=2021-04-12"; got != want {
		t.Errorf("username without version = %q, want %q", got, want)
	}
	if got, want := username("localhost", "d", "trackerd/1.2 (arm)"), "localhost/d/?api-version=2021-04-12&DeviceClientType=trackerd%2F1.2%20(arm)"; got != want {
		t.Errorf("username with version = %q, want %q", got, want)
	}
}

func TestEventTopic(t *testing.T) {
	created := time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"empty", Message{}, "devices/d1/messages/events/"},
		{"system", Message{MessageID: "d1-5-9", ContentType: "application/json", ContentEncoding: "utf-8", CorrelationID: "c 1"},
			"devices/d1/messages/events/$.mid=d1-5-9&$.cid=c%201&$.ct=application%2Fjson&$.ce=utf-8"},
		{"creation time in UTC", Message{CreationTime: created},
			"devices/d1/messages/events/iothub-creation-time-utc=2026-03-04T04%3A06%3A07.891Z"},
		{"app properties sorted and encoded", Message{MessageID: "m", Properties: map[string]string{"z": "1", "alert type": "temp/high", "a": ""}},
			"devices/d1/messages/events/$.mid=m&a=&alert%20type=temp%2Fhigh&z=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eventTopic("d1", &tt.m)
			if err != nil {
				t.Fatalf("eventTopic: %v", err)
			}
			if got != tt.want {
				t.Errorf("eventTopic = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEventTopicInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    Message
	}{
		{"empty name", Message{Properties: map[string]string{"": "x"}}},
		{"system name", Message{Properties: map[string]string{"$.mid": "x"}}},
		{"creation time as property", Message{Properties: map[string]string{"IoTHub-Creation-Time-UTC": "x"}}},
		{"too large", Message{Body: make([]byte, MaxMessageSize-len("devices/d1/messages/events/")+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := eventTopic("d1", &tt.m)
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("eventTopic = %v, want ErrInvalidMessage", err)
			}
		})
	}
	// Exactly at the limit is accepted.
	m := Message{Body: make([]byte, MaxMessageSize-len("devices/d1/messages/events/"))}
	if _, err := eventTopic("d1", &m); err != nil {
		t.Errorf("eventTopic at the size limit: %v", err)
	}
}

func TestParseC2D(t *testing.T) {
	topic := "devices/d1/messages/devicebound/%24.mid=m%201&$.cid=c1&%24.ct=application%2Fjson&$.ce=utf-8&$.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&cmd=set+point&flag&empty="
	got, err := parseC2D("d1", topic, []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Message{
		Body: []byte(`{"x":1}`), MessageID: "m 1", CorrelationID: "c1", ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"$.to": "/devices/d1/messages/devicebound", "cmd": "set+point", "flag": "", "empty": ""},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parseC2D mismatch (-want +got):\n%s", d)
	}

	bare, err := parseC2D("d1", "devices/d1/messages/devicebound/", nil)
	if err != nil || bare.Properties != nil || bare.MessageID != "" {
		t.Errorf("parseC2D(bare) = %+v, %v; want an empty message", bare, err)
	}
	if _, err := parseC2D("d1", "devices/d2/messages/devicebound/", nil); err == nil {
		t.Error("parseC2D accepted another device's topic")
	}
	if _, err := parseC2D("d1", "devices/d1/messages/devicebound/a=%zz", nil); err == nil {
		t.Error("parseC2D accepted a bad percent escape")
	}
}

func TestEventTopicRoundTrip(t *testing.T) {
	m := Message{MessageID: "d/1 #2", ContentType: "application/json", Properties: map[string]string{"k&=": "v=&+%"}}
	topic, err := eventTopic("d1", &m)
	if err != nil {
		t.Fatal(err)
	}
	bag, _ := strings.CutPrefix(topic, eventsPrefix("d1"))
	got, err := parseQuery(bag)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"$.mid": "d/1 #2", "$.ct": "application/json", "k&=": "v=&+%"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("property bag round trip (-want +got):\n%s", d)
	}
	if strings.ContainsAny(topic, "#+ ") {
		t.Errorf("topic %q contains a wildcard or a space", topic)
	}
}

func TestParseTwinResponse(t *testing.T) {
	r, err := parseTwinResponse("$iothub/twin/res/204/?$rid=17&$version=42", nil)
	if err != nil || r.status != 204 || r.rid != "17" || !r.hasVersion || r.version != 42 {
		t.Errorf("parseTwinResponse = %+v, %v; want 204 rid 17 version 42", r, err)
	}
	r, err = parseTwinResponse("$iothub/twin/res/200/?$rid=a%20b", []byte("{}"))
	if err != nil || r.status != 200 || r.rid != "a b" || r.hasVersion || string(r.body) != "{}" {
		t.Errorf("parseTwinResponse = %+v, %v; want 200 rid 'a b' no version", r, err)
	}
	for _, bad := range []string{
		"$iothub/twin/res/?$rid=1",
		"$iothub/twin/res/abc/?$rid=1",
		"$iothub/twin/res/200/",
		"$iothub/twin/res/200/?$rid=1&$version=x",
		"$iothub/twin/res/200/extra/?$rid=1",
		"$iothub/methods/POST/x/?$rid=1",
	} {
		if _, err := parseTwinResponse(bad, nil); err == nil {
			t.Errorf("parseTwinResponse(%q) accepted", bad)
		}
	}
}

func TestParseMethod(t *testing.T) {
	name, rid, err := parseMethod("$iothub/methods/POST/flush/?$rid=5")
	if err != nil || name != "flush" || rid != "5" {
		t.Errorf("parseMethod = %q, %q, %v; want flush, 5", name, rid, err)
	}
	for _, bad := range []string{"$iothub/methods/POST/?$rid=1", "$iothub/methods/POST/x/", "$iothub/methods/POST//?$rid=1", "$iothub/methods/POST/a/b/?$rid=1"} {
		if _, _, err := parseMethod(bad); err == nil {
			t.Errorf("parseMethod(%q) accepted", bad)
		}
	}
	if got, want := methodResponseTopic(200, "5"), "$iothub/methods/res/200/?$rid=5"; got != want {
		t.Errorf("methodResponseTopic = %q, want %q", got, want)
	}
}

func TestParseDesiredVersion(t *testing.T) {
	v, ok, err := parseDesiredVersion("$iothub/twin/PATCH/properties/desired/?$version=9")
	if err != nil || !ok || v != 9 {
		t.Errorf("parseDesiredVersion = %d, %v, %v; want 9", v, ok, err)
	}
	if _, ok, err := parseDesiredVersion("$iothub/twin/PATCH/properties/desired/"); ok || err != nil {
		t.Errorf("parseDesiredVersion without version = %v, %v; want not ok, no error", ok, err)
	}
	if _, _, err := parseDesiredVersion("$iothub/twin/PATCH/properties/desired/?$version=nine"); err == nil {
		t.Error("parseDesiredVersion accepted a non-number")
	}
	if v, ok := desiredVersion([]byte(`{"telemetryInterval":30,"$version":12}`)); !ok || v != 12 {
		t.Errorf("desiredVersion = %d, %v; want 12", v, ok)
	}
	if _, ok := desiredVersion([]byte(`{"a":1}`)); ok {
		t.Error("desiredVersion found a version in a document without one")
	}
}

func TestSubscriptions(t *testing.T) {
	subs := subscriptions("d1")
	want := map[string]byte{
		"devices/d1/messages/devicebound/#":       1,
		"$iothub/methods/POST/#":                  0,
		"$iothub/twin/res/#":                      0,
		"$iothub/twin/PATCH/properties/desired/#": 0,
	}
	if d := cmp.Diff(want, subs); d != "" {
		t.Errorf("subscriptions (-want +got):\n%s", d)
	}
	if len(subs) > 5 {
		t.Errorf("%d subscriptions, IoT Hub allows 5", len(subs))
	}
}
