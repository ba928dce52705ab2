package emulator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
)

// provision enrolls the fleet group (once) and registers id through DPS.
func (v *env) provision(id string) *pki.Device {
	v.t.Helper()
	if code, _ := v.rest("GET", "/enrollmentGroups/fleet", nil, nil); code == 404 {
		v.enrollGroup("fleet", "enabled")
	}
	dev := v.device(id)
	answers := v.register(dev, "")
	if final := answers[len(answers)-1]; final.body["status"] != "assigned" {
		v.t.Fatalf("provision %s: %s", id, final.raw)
	}
	return dev
}

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func TestHubTelemetry(t *testing.T) {
	v := start(t)
	dev := v.provision("truck-7")
	c := v.hubConnect(dev, nil)
	if !v.e.IsConnected("truck-7") {
		t.Fatal("IsConnected = false after CONNECT")
	}
	// The property bag as the Node SDK writes it: "$" encoded as %24.
	topic := "devices/truck-7/messages/events/%24.mid=m%201&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=high%26low&iothub-creation-time-utc=2026-01-02T03%3A04%3A05Z"
	publish(t, c, topic, 1, `{"seq": 1, "t": 4.5}`)
	publish(t, c, "devices/truck-7/messages/events/", 1, "plain text")
	m, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return m.MessageID() == "m 1" })
	if err != nil {
		t.Fatal(err)
	}
	if m.System["content_type"] != "application/json" || m.System["content_encoding"] != "utf-8" {
		t.Errorf("system properties %v", m.System)
	}
	if m.Properties["temp alert"] != "high&low" || m.Properties["iothub-creation-time-utc"] != "2026-01-02T03:04:05Z" {
		t.Errorf("application properties %v", m.Properties)
	}
	if _, ok := m.Properties["$.mid"]; ok {
		t.Error("system property leaked into application properties")
	}
	second, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return string(m.Payload) == "plain text" })
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != m.Seq+1 {
		t.Errorf("sequence numbers %d then %d", m.Seq, second.Seq)
	}

	// telemetry.jsonl has both, shaped like monitor-events output.
	raw, err := os.ReadFile(v.info.TelemetryFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines in telemetry.jsonl, want 2", len(lines))
	}
	ev := decode(t, []byte(lines[0]))
	want := map[string]any{
		"origin": "truck-7", "module": "", "interface": "", "component": "",
	}
	for k, w := range want {
		if got := jsonPath(ev, "event", k); got != w {
			t.Errorf("event.%s = %v, want %v", k, got, w)
		}
	}
	if jsonPath(ev, "event", "payload", "t") != 4.5 {
		t.Errorf("JSON payload not parsed: %v", jsonPath(ev, "event", "payload"))
	}
	if jsonPath(ev, "event", "properties", "system", "message_id") != "m 1" ||
		jsonPath(ev, "event", "properties", "application", "temp alert") != "high&low" {
		t.Errorf("properties %v", jsonPath(ev, "event", "properties"))
	}
	for k, w := range map[string]any{
		"iothub-connection-device-id": "truck-7", "iothub-message-source": "Telemetry",
		"x-opt-sequence-number": float64(m.Seq),
	} {
		if got := jsonPath(ev, "event", "annotations", k); got != w {
			t.Errorf("annotations.%s = %v, want %v", k, got, w)
		}
	}
	if _, ok := jsonPath(ev, "event", "annotations", "iothub-enqueuedtime").(float64); !ok {
		t.Error("no numeric iothub-enqueuedtime")
	}
	ev2 := decode(t, []byte(lines[1]))
	if jsonPath(ev2, "event", "payload") != "plain text" {
		t.Errorf("non-JSON payload = %v, want the string", jsonPath(ev2, "event", "payload"))
	}
}

func TestHubRefusals(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-ok")
	stranger, err := pki.NewMemoryCA(pki.CAOptions{CN: "Other CA"})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := stranger.IssueDevice("dev-ok", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := v.ca.IssueDevice("dev-ok", pki.DeviceOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	otherCN := v.device("dev-other")
	for _, tc := range []struct {
		name, clientID, username string
		dev                      *pki.Device
	}{
		{"wrong CA", "dev-ok", v.hubUsername("dev-ok"), foreign},
		{"expired certificate", "dev-ok", v.hubUsername("dev-ok"), expired},
		{"CN differs from device id", "dev-ok", v.hubUsername("dev-ok"), otherCN},
		{"client id differs from username", "dev-x", v.hubUsername("dev-ok"), dev},
		{"unknown device", "dev-nobody", v.hubUsername("dev-nobody"), v.device("dev-nobody")},
		{"wrong host", "dev-ok", "contoso.azure-devices.net/dev-ok/?api-version=2021-04-12", dev},
		{"module identity", "dev-ok/mod", v.info.HubHost + "/dev-ok/mod/?api-version=2021-04-12", dev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.connect(tc.dev, tc.clientID, tc.username, nil)
			if err == nil || !strings.Contains(err.Error(), "not Authorized") {
				t.Fatalf("connect = %v, want not Authorized", err)
			}
		})
	}
	// The host is accepted without the port too.
	c, err := v.connect(dev, "dev-ok", "localhost/dev-ok/?api-version=2021-04-12", nil)
	if err != nil {
		t.Fatalf("host without port: %v", err)
	}
	c.Disconnect(0)
}

func TestHubViolationsDisconnect(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-v")
	for _, tc := range []struct {
		name, topic string
		qos         byte
	}{
		{"another device's telemetry", "devices/dev-w/messages/events/", 1},
		{"unknown topic at QoS 0", "random/topic", 0},
		{"QoS 2", "devices/dev-v/messages/events/", 2},
		{"DPS topic on the hub", "$dps/registrations/PUT/iotdps-register/?$rid=1", 1},
		{"wildcard in the topic name", "devices/dev-v/messages/events/a+b", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var since int64
			if evs := v.e.Events(); len(evs) > 0 {
				since = evs[len(evs)-1].Seq
			}
			lost := make(chan error, 1)
			c := v.hubConnect(dev, lost)
			c.Publish(tc.topic, tc.qos, false, "x")
			select {
			case <-lost:
			case <-time.After(wait):
				t.Fatal("connection stayed open")
			}
			if _, err := v.e.WaitEvent(waitCtx(t), func(ev emulator.Event) bool {
				return ev.Seq > since && ev.Kind == emulator.EventHubKicked && ev.DeviceID == "dev-v" &&
					(strings.Contains(ev.Detail, tc.topic) || tc.qos == 2 && strings.Contains(ev.Detail, "QoS 2"))
			}); err != nil {
				t.Fatalf("no kick event: %v", err)
			}
		})
	}
	// A refused subscription gets SUBACK 0x80 and keeps the connection.
	c := v.hubConnect(dev, nil)
	tok := c.Subscribe("devices/dev-w/messages/devicebound/#", 1, nil)
	if !tok.WaitTimeout(wait) {
		t.Fatal("no SUBACK")
	}
	if q := tok.(*paho.SubscribeToken).Result()["devices/dev-w/messages/devicebound/#"]; q != 0x80 {
		t.Errorf("SUBACK for another device's topic = %#x, want 0x80", q)
	}
	if !c.IsConnectionOpen() {
		t.Error("refused subscription closed the connection")
	}
}

func TestHubSecondConnectionKicksFirst(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-dup")
	lost := make(chan error, 1)
	first := v.hubConnect(dev, lost)
	second := v.hubConnect(dev, nil)
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("first connection not closed")
	}
	if first.IsConnectionOpen() {
		t.Error("first connection still open")
	}
	publish(t, second, "devices/dev-dup/messages/events/", 1, "from second")
	if _, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return string(m.Payload) == "from second" }); err != nil {
		t.Fatal(err)
	}
	if !v.e.IsConnected("dev-dup") {
		t.Error("device not connected after the takeover")
	}
}

func TestHubRegistryDeleteAndDisable(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-del")
	lost := make(chan error, 1)
	v.hubConnect(dev, lost)
	v.mustREST(204, "DELETE", "/devices/dev-del", nil, map[string]string{"If-Match": `"*"`})
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("delete did not cut the connection")
	}
	if _, err := v.connect(dev, dev.ID, v.hubUsername(dev.ID), nil); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("reconnect after delete = %v, want not Authorized", err)
	}
	body := v.mustREST(404, "GET", "/devices/dev-del", nil, nil)
	if !strings.Contains(string(body), `"Message":"ErrorCode:DeviceNotFound;`) {
		t.Errorf("404 body %s", body)
	}

	// Disabling cuts the connection and refuses the next one.
	dev2 := v.provision("dev-dis")
	lost2 := make(chan error, 1)
	v.hubConnect(dev2, lost2)
	d := decode(t, v.mustREST(200, "GET", "/devices/dev-dis", nil, nil))
	if d["connectionState"] != "Connected" {
		t.Errorf("connectionState = %v", d["connectionState"])
	}
	d["status"] = "disabled"
	v.mustREST(200, "PUT", "/devices/dev-dis", d, map[string]string{"If-Match": `"*"`})
	select {
	case <-lost2:
	case <-time.After(wait):
		t.Fatal("disable did not cut the connection")
	}
	if _, err := v.connect(dev2, dev2.ID, v.hubUsername(dev2.ID), nil); err == nil {
		t.Fatal("disabled device connected")
	}
}

func TestHubTwin(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-twin")
	c := v.hubConnect(dev, nil)
	res := subscribe(t, c, "$iothub/twin/res/#", 0)
	desired := subscribe(t, c, "$iothub/twin/PATCH/properties/desired/#", 0)

	publish(t, c, "$iothub/twin/GET/?$rid=g1", 0, " ")
	m := recv(t, res)
	if m.topic != "$iothub/twin/res/200/?$rid=g1" {
		t.Fatalf("twin GET answer topic %q", m.topic)
	}
	doc := decode(t, m.payload)
	if jsonPath(doc, "desired", "$version") != float64(1) || jsonPath(doc, "reported", "$version") != float64(1) {
		t.Errorf("initial twin %s", m.payload)
	}

	publish(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=p1", 0, `{"fw":"1.2","gps":{"fix":true,"sats":7}}`)
	m = recv(t, res)
	if m.topic != "$iothub/twin/res/204/?$rid=p1&$version=2" || len(m.payload) != 0 {
		t.Fatalf("reported PATCH answer %q %q", m.topic, m.payload)
	}
	publish(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=p2", 0, `{"gps":{"sats":null}}`)
	if m = recv(t, res); m.topic != "$iothub/twin/res/204/?$rid=p2&$version=3" {
		t.Fatalf("second PATCH answer %q", m.topic)
	}
	publish(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=p3", 0, `not json`)
	if m = recv(t, res); !strings.HasPrefix(m.topic, "$iothub/twin/res/400/?$rid=p3") || decode(t, m.payload)["errorCode"] == nil {
		t.Fatalf("malformed PATCH answer %q %s", m.topic, m.payload)
	}

	twin := decode(t, v.mustREST(200, "GET", "/twins/dev-twin", nil, nil))
	if jsonPath(twin, "properties", "reported", "fw") != "1.2" || jsonPath(twin, "properties", "reported", "gps", "fix") != true {
		t.Errorf("reported %v", jsonPath(twin, "properties", "reported"))
	}
	if _, ok := jsonPath(twin, "properties", "reported", "gps").(map[string]any)["sats"]; ok {
		t.Error("null in a patch did not delete the property")
	}
	etag, _ := twin["etag"].(string)

	// A stale etag is refused; the current one is taken and the device
	// notified with the new desired version.
	v.mustREST(412, "PATCH", "/twins/dev-twin", map[string]any{"properties": map[string]any{"desired": map[string]any{"interval": 30}}}, map[string]string{"If-Match": `"AAAAAAAAAAA="`})
	upd := decode(t, v.mustREST(200, "PATCH", "/twins/dev-twin", map[string]any{
		"tags":       map[string]any{"shipment": "S-1"},
		"properties": map[string]any{"desired": map[string]any{"interval": 30}},
	}, map[string]string{"If-Match": `"` + etag + `"`}))
	if jsonPath(upd, "properties", "desired", "$version") != float64(2) || jsonPath(upd, "tags", "shipment") != "S-1" {
		t.Errorf("updated twin %v", upd)
	}
	n := recv(t, desired)
	if n.topic != "$iothub/twin/PATCH/properties/desired/?$version=2" {
		t.Fatalf("desired notification topic %q", n.topic)
	}
	if body := decode(t, n.payload); body["interval"] != float64(30) || body["$version"] != float64(2) {
		t.Errorf("desired notification %s", n.payload)
	}
	// GET now shows both versions.
	publish(t, c, "$iothub/twin/GET/?$rid=g2", 0, "")
	doc = decode(t, recv(t, res).payload)
	if jsonPath(doc, "desired", "interval") != float64(30) || jsonPath(doc, "reported", "$version") != float64(3) {
		t.Errorf("twin after updates %v", doc)
	}
}

func TestHubDirectMethod(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-m")
	// Not connected: 404 DeviceNotOnline.
	body := v.mustREST(404, "POST", "/twins/dev-m/methods", map[string]any{"methodName": "status", "responseTimeoutInSeconds": 5}, nil)
	if !strings.Contains(string(body), "DeviceNotOnline") {
		t.Errorf("offline method %s", body)
	}
	c := v.hubConnect(dev, nil)
	c.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
		rid := strings.SplitN(m.Topic(), "$rid=", 2)[1]
		var in map[string]any
		json.Unmarshal(m.Payload(), &in)
		out := fmt.Sprintf(`{"echo":%q,"method":%q}`, in["x"], strings.Split(m.Topic(), "/")[3])
		cl.Publish("$iothub/methods/res/201/?$rid="+rid, 0, false, out)
	}).WaitTimeout(wait)
	res := decode(t, v.mustREST(200, "POST", "/twins/dev-m/methods", map[string]any{
		"methodName": "flush", "payload": map[string]any{"x": "hello"}, "responseTimeoutInSeconds": 10,
	}, nil))
	if res["status"] != float64(201) || jsonPath(res, "payload", "echo") != "hello" || jsonPath(res, "payload", "method") != "flush" {
		t.Errorf("method result %v", res)
	}
}

func TestHubMethodTimeout(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-silent")
	c := v.hubConnect(dev, nil)
	subscribe(t, c, "$iothub/methods/POST/#", 0) // never answers
	res, err := v.e.InvokeMethod(waitCtx(t), "dev-silent", "status", nil, 100*time.Millisecond, 0)
	if err == nil {
		t.Fatalf("InvokeMethod = %v, want a timeout", res)
	}
	var aerr *emulator.APIError
	if !errorsAs(err, &aerr) || aerr.Status != 504 {
		t.Fatalf("error %v, want 504", err)
	}
}

func TestHubC2D(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-c2d")
	// Queued while offline.
	v.mustREST(204, "POST", "/devices/dev-c2d/messages/deviceBound", []byte("first"), map[string]string{"iothub-messageid": "c1", "iothub-app-kind": "cmd one"})
	d := decode(t, v.mustREST(200, "GET", "/devices/dev-c2d", nil, nil))
	if d["cloudToDeviceMessageCount"] != float64(1) {
		t.Errorf("cloudToDeviceMessageCount = %v", d["cloudToDeviceMessageCount"])
	}
	c := v.hubConnect(dev, nil)
	msgs := subscribe(t, c, "devices/dev-c2d/messages/devicebound/#", 1)
	m := recv(t, msgs)
	if !strings.HasPrefix(m.topic, "devices/dev-c2d/messages/devicebound/") || string(m.payload) != "first" || m.qos != 1 {
		t.Fatalf("queued C2D %q %q qos %d", m.topic, m.payload, m.qos)
	}
	bag := strings.TrimPrefix(m.topic, "devices/dev-c2d/messages/devicebound/")
	if !strings.Contains(bag, "%24.mid=c1") || !strings.Contains(bag, "kind=cmd%20one") {
		t.Errorf("property bag %q", bag)
	}
	// Delivered at once while connected.
	if err := v.e.SendC2D("dev-c2d", emulator.C2DMessage{Payload: []byte("second")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, msgs); string(m.payload) != "second" {
		t.Fatalf("live C2D %q", m.payload)
	}
	// Unknown device.
	v.mustREST(404, "POST", "/devices/nobody/messages/deviceBound", []byte("x"), nil)
}

func TestHubFaults(t *testing.T) {
	v := start(t)
	dev := v.provision("dev-f")

	t.Run("withheld puback", func(t *testing.T) {
		c := v.hubConnect(dev, nil)
		v.e.Faults().WithholdPubacks("dev-f", 1)
		held := c.Publish("devices/dev-f/messages/events/", 1, false, "held")
		// The next publish is acknowledged; packets of one connection are
		// handled in order, so the first PUBACK would have come before it.
		publish(t, c, "devices/dev-f/messages/events/", 1, "acked")
		select {
		case <-held.Done():
			t.Fatal("withheld publish was acknowledged")
		default:
		}
		// The message itself was recorded: only the acknowledgement was lost.
		if _, err := v.e.WaitTelemetry(waitCtx(t), func(m emulator.Message) bool { return string(m.Payload) == "held" }); err != nil {
			t.Fatal(err)
		}
		c.Disconnect(0)
	})

	t.Run("refuse connections", func(t *testing.T) {
		v.e.Faults().RefuseConnections(time.Hour)
		_, err := v.connect(dev, dev.ID, v.hubUsername(dev.ID), nil)
		v.e.Faults().RefuseConnections(0)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
			t.Fatalf("connect during refusal = %v, want server unavailable", err)
		}
		c := v.hubConnect(dev, nil)
		c.Disconnect(0)
	})

	t.Run("drop device", func(t *testing.T) {
		lost := make(chan error, 1)
		v.hubConnect(dev, lost)
		if !v.e.Faults().DropDevice("dev-f") {
			t.Fatal("DropDevice found no connection")
		}
		select {
		case <-lost:
		case <-time.After(wait):
			t.Fatal("connection not dropped")
		}
	})

	t.Run("throttle", func(t *testing.T) {
		c := v.hubConnect(dev, nil)
		// A burst of twice the per-second rate cannot all pass at once.
		v.e.Faults().ThrottleD2C(5)
		defer v.e.Faults().ThrottleD2C(0)
		for i := range 10 {
			c.Publish("devices/dev-f/messages/events/", 0, false, fmt.Sprint(i))
		}
		publish(t, c, "devices/dev-f/messages/events/", 1, "last")
		if _, err := v.e.WaitEvent(waitCtx(t), func(ev emulator.Event) bool {
			return ev.Kind == emulator.EventThrottled && strings.HasPrefix(ev.Detail, "delayed")
		}); err != nil {
			t.Fatal("no throttling past the rate:", err)
		}
	})

	t.Run("control endpoint", func(t *testing.T) {
		cc, err := emulator.NewControlClient(v.info)
		if err != nil {
			t.Fatal(err)
		}
		st, err := cc.ApplyFaults(waitCtx(t), emulator.FaultSpec{DPSStatus: 503, DPSCount: 2, Latency: emulator.Duration(time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.DPS) != 1 || st.DPS[0].Status != 503 || st.DPS[0].Remaining != 2 || st.Latency != emulator.Duration(time.Millisecond) {
			t.Errorf("fault state %+v", st)
		}
		if _, err := cc.ApplyFaults(waitCtx(t), emulator.FaultSpec{DPSStatus: 200}); err == nil {
			t.Error("DPS fault status 200 accepted")
		}
		if _, err := cc.ApplyFaults(waitCtx(t), emulator.FaultSpec{Clear: true}); err != nil {
			t.Fatal(err)
		}
		if st := v.e.Faults().State(); len(st.DPS) != 0 || st.Latency != 0 {
			t.Errorf("after clear: %+v", st)
		}
	})
}
