package emulator

import (
	"reflect"
	"strings"
	"testing"
)

func TestTopicMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"$dps/registrations/res/#", "$dps/registrations/res/202/?$rid=1&retry-after=3", true},
		{"$iothub/twin/res/#", "$iothub/twin/res/204/?$rid=1&$version=2", true},
		{"devices/+/messages/devicebound/#", "devices/d1/messages/devicebound/", true},
		{"devices/d1/messages/devicebound/#", "devices/d2/messages/devicebound/", false},
		{"$iothub/methods/POST/#", "$iothub/methods/POST/status/?$rid=1", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/#", "a", true}, // "#" also matches the parent level
		{"a/+", "a", false},
	} {
		if got := topicMatch(tc.filter, tc.topic); got != tc.want {
			t.Errorf("topicMatch(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestParseBag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []prop
	}{
		{"", nil},
		{"%24.mid=m%201&%24.ct=application%2Fjson", []prop{{"$.mid", "m 1"}, {"$.ct", "application/json"}}},
		{"$.ce=utf-8&flag&k=", []prop{{"$.ce", "utf-8"}, {"flag", ""}, {"k", ""}}},
		{"a%zz=b", []prop{{"a%zz", "b"}}},
		{"plus=a+b&eq=x%3Dy", []prop{{"plus", "a+b"}, {"eq", "x=y"}}},
	} {
		if got := parseBag(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseBag(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// formatBag is the inverse for what parseBag decodes.
	props := []prop{{"$.mid", "id 1"}, {"k&=", "v+/ ü"}}
	if got := parseBag(formatBag(props)); !reflect.DeepEqual(got, props) {
		t.Errorf("parseBag(formatBag(%v)) = %v", props, got)
	}
}

func TestUsernames(t *testing.T) {
	scope, id, q, ok := parseDPSUsername("0ne00ABCDEF/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1")
	if !ok || scope != "0ne00ABCDEF" || id != "dev-1" || q.Get("api-version") != "2019-03-31" || q.Get("ClientVersion") != "azure-iot-provisioning-device/1.9.1" {
		t.Errorf("DPS username = %q %q %v %v", scope, id, q, ok)
	}
	for _, bad := range []string{"", "scope/registrations", "scope/devices/d/api-version=1", "/registrations/d/x"} {
		if _, _, _, ok := parseDPSUsername(bad); ok {
			t.Errorf("parseDPSUsername(%q) accepted", bad)
		}
	}
	for _, tc := range []struct {
		in                   string
		host, device, module string
		ok                   bool
	}{
		{"localhost:18883/d1/?api-version=2021-04-12&DeviceClientType=x", "localhost:18883", "d1", "", true},
		{"hub.azure-devices.net/d1/api-version=2020-09-30", "hub.azure-devices.net", "d1", "", true},
		{"h/d1/m1/?api-version=1", "h", "d1", "m1", true},
		{"h/?api-version=1", "", "", "", false},
		{"just-a-name", "", "", "", false},
	} {
		host, dev, mod, _, ok := parseHubUsername(tc.in)
		if ok != tc.ok || host != tc.host || dev != tc.device || mod != tc.module {
			t.Errorf("parseHubUsername(%q) = %q %q %q %v, want %q %q %q %v", tc.in, host, dev, mod, ok, tc.host, tc.device, tc.module, tc.ok)
		}
	}
}

func TestMergePatch(t *testing.T) {
	dst := map[string]any{"a": 1.0, "o": map[string]any{"x": 1.0, "y": 2.0}, "gone": true}
	got := mergePatch(dst, map[string]any{"o": map[string]any{"y": nil, "z": 3.0}, "gone": nil, "b": "new", "$version": 9.0})
	want := map[string]any{"a": 1.0, "o": map[string]any{"x": 1.0, "z": 3.0}, "b": "new"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergePatch = %v, want %v", got, want)
	}
}

func TestPayloadJSON(t *testing.T) {
	for _, tc := range []struct {
		body, ct, want string
	}{
		{`{"a": 1}`, "application/json", `{"a":1}`},
		{`{"a": 1}`, "application/json; charset=utf-8", `{"a":1}`},
		{`{"a": 1}`, "", `"{\"a\": 1}"`},
		{`not json`, "application/json", `"not json"`},
		{"\xff", "", "\"\uFFFD\""},
	} {
		if got := string(payloadJSON([]byte(tc.body), tc.ct)); got != tc.want {
			t.Errorf("payloadJSON(%q, %q) = %s, want %s", tc.body, tc.ct, got, tc.want)
		}
	}
}

func FuzzParseBag(f *testing.F) {
	f.Add("%24.mid=1&%24.ct=application%2Fjson&k=v")
	f.Add("a&&b=%&=c")
	f.Fuzz(func(t *testing.T, bag string) {
		for _, p := range parseBag(bag) {
			if p.key == "" && !strings.HasPrefix(bag, "=") && !strings.Contains(bag, "&=") {
				t.Fatalf("empty key from %q", bag)
			}
		}
	})
}

func FuzzUsernames(f *testing.F) {
	f.Add("0ne00ABCDEF/registrations/dev-1/api-version=2019-03-31")
	f.Add("localhost:18883/d1/?api-version=2021-04-12")
	f.Fuzz(func(t *testing.T, u string) {
		if _, id, _, ok := parseDPSUsername(u); ok && (id == "" || strings.Contains(id, "/")) {
			t.Fatalf("DPS id %q from %q", id, u)
		}
		if host, dev, _, _, ok := parseHubUsername(u); ok && (host == "" || dev == "") {
			t.Fatalf("hub host %q device %q from %q", host, dev, u)
		}
	})
}

func FuzzParseDPSTopic(f *testing.F) {
	f.Add("$dps/registrations/PUT/iotdps-register/?$rid=1")
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=x")
	f.Fuzz(func(t *testing.T, topic string) {
		kind, q, ok := parseDPSTopic(topic)
		if ok && (kind == "" || q == nil) {
			t.Fatalf("parseDPSTopic(%q) = %q %v", topic, kind, q)
		}
	})
}
