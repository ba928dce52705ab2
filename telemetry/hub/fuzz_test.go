package hub

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseTopics feeds arbitrary topics from the hub to every parser: none
// may panic, and what they accept must be well formed.
func FuzzParseTopics(f *testing.F) {
	for _, s := range []string{
		"$iothub/twin/res/200/?$rid=1",
		"$iothub/twin/res/204/?$rid=2&$version=5",
		"$iothub/twin/PATCH/properties/desired/?$version=3",
		"$iothub/methods/POST/flush/?$rid=9",
		"devices/d1/messages/devicebound/%24.mid=x&$.ct=application%2Fjson&k=v",
		"devices/d1/messages/devicebound/a=%zz&&=&b",
		"$iothub/twin/res/?",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		if r, err := parseTwinResponse(topic, nil); err == nil && r.rid == "" {
			t.Errorf("parseTwinResponse(%q) accepted an empty $rid", topic)
		}
		if name, rid, err := parseMethod(topic); err == nil && (name == "" || rid == "" || strings.Contains(name, "/")) {
			t.Errorf("parseMethod(%q) = %q, %q", topic, name, rid)
		}
		parseDesiredVersion(topic)
		if m, err := parseC2D("d1", topic, nil); err == nil {
			for k := range m.Properties {
				if k == "$.mid" || k == "$.ct" {
					t.Errorf("parseC2D(%q) left system property %s in Properties", topic, k)
				}
			}
		}
	})
}

// FuzzPropertyBagRoundTrip checks that any application property survives
// the encoding into the telemetry topic and the decoding a hub does.
func FuzzPropertyBagRoundTrip(f *testing.F) {
	f.Add("alert", "temp high", "m-1")
	f.Add("k&=", "v=&+%/#", "id with space")
	f.Add("°C", "ünïcode", "")
	f.Fuzz(func(t *testing.T, key, value, mid string) {
		m := Message{MessageID: mid, Properties: map[string]string{key: value}}
		topic, err := eventTopic("d1", &m)
		if err != nil {
			return // a reserved or empty name
		}
		if strings.ContainsAny(topic, "#+\x00") || !utf8.ValidString(topic) {
			t.Fatalf("topic %q is not a valid MQTT topic name", topic)
		}
		bag, _ := strings.CutPrefix(topic, eventsPrefix("d1"))
		got, err := parseQuery(bag)
		if err != nil {
			t.Fatalf("parseQuery(%q): %v", bag, err)
		}
		if got[key] != value {
			t.Errorf("property %q = %q after the round trip, want %q", key, got[key], value)
		}
		if mid != "" && got["$.mid"] != mid {
			t.Errorf("$.mid = %q after the round trip, want %q", got["$.mid"], mid)
		}
	})
}
