package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
)

// consoleClient is a browser-like client of the web console: a cookie jar
// and the session's CSRF token.
type consoleClient struct {
	t    testing.TB
	v    *env
	http *http.Client
	csrf string
}

func (v *env) consoleClient() *consoleClient {
	v.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		v.t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: v.tlsConfig(nil)}
	c := &consoleClient{t: v.t, v: v, http: &http.Client{Transport: tr, Jar: jar, Timeout: wait,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	v.t.Cleanup(tr.CloseIdleConnections)
	return c
}

func (c *consoleClient) url(path string) string {
	return "https://localhost:" + strings.Split(c.v.info.HTTPSAddr, ":")[1] + path
}

// do sends a request; body is JSON-encoded unless it is a string.
func (c *consoleClient) do(method, path string, body any, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.url(path), r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, raw
}

func (c *consoleClient) must(want int, method, path string, body any, hdr map[string]string) []byte {
	c.t.Helper()
	resp, raw := c.do(method, path, body, hdr)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	return raw
}

func (c *consoleClient) login(credential string) *http.Response {
	c.t.Helper()
	resp, raw := c.do("POST", "/console/api/login", map[string]string{"credential": credential}, nil)
	if resp.StatusCode != 200 {
		c.t.Fatalf("login = %d %s", resp.StatusCode, raw)
	}
	var out struct{ CSRF string }
	if err := json.Unmarshal(raw, &out); err != nil || out.CSRF == "" {
		c.t.Fatalf("login answer %s: %v", raw, err)
	}
	c.csrf = out.CSRF
	return resp
}

func (c *consoleClient) action(want int, path string, body any) map[string]any {
	c.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return decode(c.t, c.must(want, "POST", path, body, map[string]string{"X-CSRF-Token": c.csrf}))
}

func (c *consoleClient) state() emulator.ConsoleState {
	c.t.Helper()
	var st emulator.ConsoleState
	if err := json.Unmarshal(c.must(200, "GET", "/console/api/state", nil, nil), &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

func TestConsolePageAndLogin(t *testing.T) {
	v := start(t)
	c := v.consoleClient()
	if v.info.ConsoleToken == "" || v.info.ConsoleURL != v.info.HTTPSURL+"/console/" {
		t.Fatalf("Info console fields: url %q, token %q", v.info.ConsoleURL, v.info.ConsoleToken)
	}
	saved, err := emulator.LoadInfo(v.dir)
	if err != nil || saved.ConsoleToken != v.info.ConsoleToken {
		t.Fatalf("emulator.json console token %q (%v), want the running one", saved.ConsoleToken, err)
	}

	resp, _ := c.do("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Errorf("GET / = %d Location %q, want a redirect to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := c.do("GET", "/console/", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(page, []byte(`src="console.js"`)) {
		t.Fatalf("GET /console/ = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, f := range []string{"/console/console.js", "/console/console.css"} {
		c.must(200, "GET", f, nil, nil)
	}
	// The service APIs still answer as before.
	if code, _ := v.rest("GET", "/devices", nil, nil); code != 200 {
		t.Errorf("GET /devices = %d after mounting the console", code)
	}

	// Not logged in.
	for _, p := range []string{"/console/api/state", "/console/api/session", "/console/api/telemetry", "/console/api/stream"} {
		if body := c.must(401, "GET", p, nil, nil); !strings.Contains(string(body), "not logged in") {
			t.Errorf("GET %s unauthenticated: %s", p, body)
		}
	}

	// Bad credentials, each with a message saying what was wrong.
	dpsCS := v.info.DPSConnectionString
	forged := strings.Replace(v.info.HubConnectionString, "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	for _, tc := range []struct{ name, cred, want string }{
		{"empty", "", "no credential"},
		{"wrong token", "not-the-token", "wrong console token"},
		{"DPS string", dpsCS, "has no access here"},
		{"forged key", forged, "connection string rejected"},
		{"garbage string", "HostName=x;SharedAccessKey=%%%", "not a connection string"},
	} {
		resp, raw := c.do("POST", "/console/api/login", map[string]string{"credential": tc.cred}, nil)
		if resp.StatusCode != 401 || !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s: login = %d %s, want 401 saying %q", tc.name, resp.StatusCode, raw, tc.want)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("%s: failed login set cookies %v", tc.name, resp.Cookies())
		}
	}
	// A login posted as a form (what a cross-site page could send) is refused.
	resp, raw := c.do("POST", "/console/api/login", "credential="+v.info.ConsoleToken, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if resp.StatusCode != 403 || !strings.Contains(string(raw), "application/json") {
		t.Errorf("form login = %d %s, want 403", resp.StatusCode, raw)
	}

	// The token logs in; the session cookie is locked down.
	resp = c.login(v.info.ConsoleToken)
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if strings.Contains(k.Name, "console") {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || !strings.HasPrefix(ck.Name, "__Host-") {
		t.Fatalf("session cookie %+v, want __Host-, HttpOnly, Secure, SameSite=Strict, Path=/", ck)
	}
	sess := decode(t, c.must(200, "GET", "/console/api/session", nil, nil))
	if sess["csrf"] != c.csrf || sess["idScope"] != v.info.IDScope {
		t.Errorf("session %v", sess)
	}
	st := c.state()
	if st.IDScope != v.info.IDScope || st.Hub != v.info.HubHost {
		t.Errorf("state scope %q hub %q", st.IDScope, st.Hub)
	}

	// Logout needs the CSRF token, then ends the session server-side.
	c.must(403, "POST", "/console/api/logout", map[string]any{}, nil)
	c.action(200, "/console/api/logout", nil)
	c.must(401, "GET", "/console/api/state", nil, nil)
	// The old cookie value is dead even if a client keeps sending it.
	stale := v.consoleClient()
	stale.http.Jar.SetCookies(&url.URL{Scheme: "https", Host: "localhost"}, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/"}})
	stale.must(401, "GET", "/console/api/state", nil, nil)

	// The hub's service connection string logs in too.
	c2 := v.consoleClient()
	c2.login(v.info.HubConnectionString)
	c2.must(200, "GET", "/console/api/state", nil, nil)
}

func TestConsoleLoginThrottle(t *testing.T) {
	v := start(t)
	c := v.consoleClient()
	for i := 0; i < 10; i++ {
		c.must(401, "POST", "/console/api/login", map[string]string{"credential": fmt.Sprint("guess-", i)}, nil)
	}
	resp, raw := c.do("POST", "/console/api/login", map[string]string{"credential": v.info.ConsoleToken}, nil)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(raw), "too many failed logins") {
		t.Errorf("login after 10 failures = %d %s (Retry-After %q), want 429", resp.StatusCode, raw, resp.Header.Get("Retry-After"))
	}
}

// batch is a telemetry.Batch body as trackerd sends it.
func batch(device string, seq uint64, at time.Time, tempC float64, lat, lon float64, alerts ...string) string {
	rec := map[string]any{
		"seq": seq, "kind": "reading", "time": at.UTC().Format(time.RFC3339Nano), "clock": "gps", "shipment": "SHP-1",
		"env": map[string]any{"tempC": tempC, "pressureHPa": 1012.5},
		"fix": map[string]any{"time": at.UTC().Format(time.RFC3339Nano), "mode": 3, "lat": lat, "lon": lon},
	}
	if len(alerts) > 0 {
		rec["alerts"] = alerts
	}
	raw, _ := json.Marshal(map[string]any{"v": 1, "device": device, "records": []any{rec}})
	return string(raw)
}

const telemetryTopic = "devices/%s/messages/events/%%24.ct=application%%2Fjson&%%24.ce=utf-8"

// reportConfig patches the twin's reported properties as trackerd does.
func reportConfig(t *testing.T, c paho.Client, minC, maxC float64) {
	t.Helper()
	res := subscribe(t, c, "$iothub/twin/res/#", 0)
	body := fmt.Sprintf(`{"config":{"tempMinC":%v,"tempMaxC":%v,"pressureMinHPa":900,"pressureMaxHPa":1100,"shipmentId":"SHP-1"},"buffer":{"depth":3},"firmwareVersion":"1.2.3"}`, minC, maxC)
	publish(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=cfg1", 0, body)
	if m := recv(t, res); !strings.HasPrefix(m.topic, "$iothub/twin/res/204/") {
		t.Fatalf("reported patch answer %s", m.topic)
	}
}

func TestConsoleStateAndTelemetry(t *testing.T) {
	v := start(t)
	dev := v.provision("reefer-1")
	v.provision("reefer-2") // registered, never connects to the hub
	mc := v.hubConnect(dev, nil)
	reportConfig(t, mc, 3, 6)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// Out of order on purpose: a backlog arrives after newer records.
	publish(t, mc, fmt.Sprintf(telemetryTopic, "reefer-1"), 1, batch("reefer-1", 2, t0.Add(time.Minute), 7.5, 51.9, 4.1, "temp_high"))
	publish(t, mc, fmt.Sprintf(telemetryTopic, "reefer-1"), 1, batch("reefer-1", 1, t0, 4.0, 51.8, 4.0))
	publish(t, mc, fmt.Sprintf(telemetryTopic, "reefer-1"), 1, "not a batch")

	c := v.consoleClient()
	c.login(v.info.ConsoleToken)
	st := c.state()
	if len(st.Groups) != 1 || st.Groups[0].ID != "fleet" || st.Groups[0].Status != "enabled" || st.Groups[0].Registrations != 2 ||
		!strings.Contains(st.Groups[0].Signer, "Test Fleet Root") {
		t.Errorf("groups %+v", st.Groups)
	}
	if len(st.Registrations) != 2 || st.Registrations[0].RegistrationID != "reefer-1" || st.Registrations[0].Status != "assigned" ||
		st.Registrations[0].Enrollment != "group fleet" {
		t.Errorf("registrations %+v", st.Registrations)
	}
	if len(st.Devices) != 2 {
		t.Fatalf("devices %+v", st.Devices)
	}
	d1, d2 := st.Devices[0], st.Devices[1]
	if d1.DeviceID != "reefer-1" || d1.ConnectionState != "Connected" || d1.Messages != 3 || d1.LastActivity.IsZero() ||
		d1.Thresholds.Source != "twin" || d1.Thresholds.TempMinC != 3 || d1.Thresholds.TempMaxC != 6 ||
		d1.Thresholds.PressureMaxHPa == nil || *d1.Thresholds.PressureMaxHPa != 1100 ||
		d1.Shipment != "SHP-1" || d1.BufferDepth != 3 || d1.Firmware != "1.2.3" {
		t.Errorf("reefer-1 row %+v", d1)
	}
	if d2.DeviceID != "reefer-2" || d2.ConnectionState != "Disconnected" || d2.Messages != 0 || d2.Thresholds.Source != "default" ||
		d2.Thresholds.TempMinC != emulator.ConsoleDefaultTempMinC || d2.Thresholds.TempMaxC != emulator.ConsoleDefaultTempMaxC || d2.BufferDepth != -1 {
		t.Errorf("reefer-2 row %+v", d2)
	}
	if st.Messages != 3 || st.TelemetrySeq != 3 || st.EventSeq == 0 {
		t.Errorf("counters messages %d seq %d events %d", st.Messages, st.TelemetrySeq, st.EventSeq)
	}

	var tel emulator.ConsoleTelemetry
	if err := json.Unmarshal(c.must(200, "GET", "/console/api/telemetry?device=reefer-1", nil, nil), &tel); err != nil {
		t.Fatal(err)
	}
	pts := tel.Devices["reefer-1"]
	if tel.Seq != 3 || len(pts) != 2 {
		t.Fatalf("telemetry seq %d points %+v", tel.Seq, pts)
	}
	// In capture order, with the values the charts and the route need.
	if pts[0].Seq != 1 || *pts[0].TempC != 4.0 || *pts[0].Lat != 51.8 || pts[1].Seq != 2 || *pts[1].TempC != 7.5 ||
		*pts[1].Pressure != 1012.5 || *pts[1].Lon != 4.1 || len(pts[1].Alerts) != 1 || pts[1].Alerts[0] != "temp_high" {
		t.Errorf("points %+v", pts)
	}
	if err := json.Unmarshal(c.must(200, "GET", "/console/api/telemetry?limit=1", nil, nil), &tel); err != nil {
		t.Fatal(err)
	}
	if p := tel.Devices["reefer-1"]; len(p) != 1 || p[0].Seq != 1 {
		// The newest message carried record 1 (the backlog).
		t.Errorf("limit=1 kept %+v, want the newest message's record", p)
	}
	for _, bad := range []string{"limit=0", "limit=x", "limit=999999"} {
		if body := c.must(400, "GET", "/console/api/telemetry?"+bad, nil, nil); !strings.Contains(string(body), "limit") {
			t.Errorf("%s: %s", bad, body)
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name, id, data string
}

// openStream connects to the live stream and returns its events; the
// stream closes when the test ends.
func (c *consoleClient) openStream(ctx context.Context, query string, hdr map[string]string) <-chan sseEvent {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", c.url("/console/api/stream"+query), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.t.Fatalf("stream = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	ch := make(chan sseEvent, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					select {
					case ch <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	c.t.Cleanup(func() { resp.Body.Close(); <-done })
	return ch
}

// nextEvent returns the next event named name, skipping others.
func nextEvent(t *testing.T, ch <-chan sseEvent, name string, match func(sseEvent) bool) sseEvent {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended before a %q event", name)
			}
			if ev.name == name && (match == nil || match(ev)) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %q event within the bound", name)
		}
	}
}

func TestConsoleStream(t *testing.T) {
	v := start(t)
	dev := v.provision("live-1")
	c := v.consoleClient()
	c.login(v.info.ConsoleToken)
	ctx, cancel := context.WithCancel(waitCtx(t))
	defer cancel()
	events := c.openStream(ctx, "", nil)

	mc := v.hubConnect(dev, nil)
	ev := nextEvent(t, events, "change", func(ev sseEvent) bool { return strings.Contains(ev.data, emulator.EventHubConnect) })
	var change emulator.Event
	if err := json.Unmarshal([]byte(ev.data), &change); err != nil || change.DeviceID != "live-1" {
		t.Errorf("change event %s: %v", ev.data, err)
	}
	publish(t, mc, fmt.Sprintf(telemetryTopic, "live-1"), 1, batch("live-1", 41, time.Now(), 9.25, 1.26, 103.84, "temp_high"))
	ev = nextEvent(t, events, "telemetry", nil)
	var m emulator.ConsoleMessage
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
		t.Fatal(err)
	}
	if m.DeviceID != "live-1" || m.Seq != 1 || len(m.Points) != 1 || m.Points[0].Seq != 41 || *m.Points[0].TempC != 9.25 || *m.Points[0].Lat != 1.26 {
		t.Errorf("telemetry event %s", ev.data)
	}
	if !strings.HasPrefix(ev.id, "1.") {
		t.Errorf("event id %q, want {telemetrySeq}.{eventSeq}", ev.id)
	}
	// The emulator remembered the device's certificate from its live
	// connection (see TestConsoleActions for its use).

	// A reconnecting browser resumes after the last event it saw: a second
	// stream from Last-Event-ID 0.N replays the message.
	_, evSeq, _ := strings.Cut(ev.id, ".")
	again := c.openStream(ctx, "", map[string]string{"Last-Event-ID": "0." + evSeq})
	ev2 := nextEvent(t, again, "telemetry", nil)
	if ev2.data != ev.data {
		t.Errorf("resumed stream sent %s, want %s", ev2.data, ev.data)
	}
	// Bad resume points are refused with a reason.
	if body := c.must(400, "GET", "/console/api/stream?after=-4", nil, nil); !strings.Contains(string(body), "after") {
		t.Errorf("bad after: %s", body)
	}

	// Logging out ends open streams.
	c.action(200, "/console/api/logout", nil)
	// Wake the stream: any event makes it re-check the session.
	publish(t, mc, fmt.Sprintf(telemetryTopic, "live-1"), 1, batch("live-1", 42, time.Now(), 5, 1.26, 103.84))
	nextEvent(t, events, "logout", nil)
	for range events {
		// Drain until the server closes the stream.
	}
}

func TestConsoleStreamEndsWithEmulator(t *testing.T) {
	v := start(t)
	c := v.consoleClient()
	c.login(v.info.ConsoleToken)
	events := c.openStream(waitCtx(t), "", nil)
	// The stream is up once the emulator's own events flow through it.
	v.provision("bye-1")
	nextEvent(t, events, "change", nil)
	closed := make(chan error, 1)
	go func() { closed <- v.e.Close() }()
	deadline := time.After(wait)
	for open := true; open; {
		select {
		case _, open = <-events:
		case <-deadline:
			t.Fatal("the stream outlived the emulator")
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-deadline:
		t.Fatal("Close did not return")
	}
}

// answerMethods makes a device answer direct methods with answer(name,
// payload) and records what it was asked.
func answerMethods(t *testing.T, c paho.Client, answer func(name string, payload []byte) (int, string)) <-chan mqttMsg {
	t.Helper()
	asked := make(chan mqttMsg, 10)
	tok := c.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
		rid := strings.SplitN(m.Topic(), "$rid=", 2)[1]
		name := strings.Split(m.Topic(), "/")[3]
		status, body := answer(name, m.Payload())
		cl.Publish(fmt.Sprintf("$iothub/methods/res/%d/?$rid=%s", status, rid), 0, false, body)
		asked <- mqttMsg{topic: m.Topic(), payload: m.Payload()}
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe methods: %v", tok.Error())
	}
	return asked
}

func TestConsoleCSRF(t *testing.T) {
	v := start(t)
	v.hubConnect(v.provision("csrf-1"), nil)
	c := v.consoleClient()
	c.login(v.info.ConsoleToken)
	path := "/console/api/devices/csrf-1/disenroll"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		body any
		want string
	}{
		{"no token", nil, map[string]any{}, "X-CSRF-Token"},
		{"wrong token", map[string]string{"X-CSRF-Token": "nope"}, map[string]any{}, "X-CSRF-Token"},
		{"form body", map[string]string{"X-CSRF-Token": c.csrf, "Content-Type": "text/plain"}, "x", "application/json"},
		{"cross origin", map[string]string{"X-CSRF-Token": c.csrf, "Origin": "https://evil.example"}, map[string]any{}, "cross-origin"},
	} {
		resp, raw := c.do("POST", path, tc.body, tc.hdr)
		if resp.StatusCode != 403 || !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s: %d %s, want 403 mentioning %q", tc.name, resp.StatusCode, raw, tc.want)
		}
	}
	if _, err := v.e.Enrollment("csrf-1"); err == nil {
		t.Fatal("a refused request created an enrollment")
	}
	// Another session's token is not this session's.
	other := v.consoleClient()
	other.login(v.info.ConsoleToken)
	if resp, _ := c.do("POST", path, map[string]any{}, map[string]string{"X-CSRF-Token": other.csrf}); resp.StatusCode != 403 {
		t.Errorf("other session's CSRF token accepted: %d", resp.StatusCode)
	}
	// Not logged in at all: 401 before CSRF is looked at.
	anon := v.consoleClient()
	anon.must(401, "POST", path, map[string]any{}, map[string]string{"X-CSRF-Token": c.csrf})
	// Same-origin Origin is fine.
	c.must(200, "POST", path, map[string]any{}, map[string]string{"X-CSRF-Token": c.csrf, "Origin": c.url("")})
}

func TestConsoleActions(t *testing.T) {
	v := start(t)
	c := v.consoleClient()
	c.login(v.info.HubConnectionString)

	// Flush invokes the device's method and returns its answer.
	dev := v.provision("act-1")
	mc := v.hubConnect(dev, nil)
	asked := answerMethods(t, mc, func(name string, _ []byte) (int, string) {
		return 200, `{"unsent":0,"drained":true}`
	})
	res := c.action(200, "/console/api/devices/act-1/flush", nil)
	if res["status"] != float64(200) || jsonPath(res, "payload", "drained") != true {
		t.Errorf("flush answer %v", res)
	}
	m := recv(t, asked)
	if !strings.HasPrefix(m.topic, "$iothub/methods/POST/flush/") || !strings.Contains(string(m.payload), `"timeoutSeconds":25`) {
		t.Errorf("device was asked %s %s", m.topic, m.payload)
	}
	// A device that is not connected cannot be flushed.
	offline := v.provision("act-offline")
	res = c.action(404, "/console/api/devices/act-offline/flush", nil)
	if res["code"] != "DeviceNotOnline" {
		t.Errorf("offline flush %v", res)
	}
	c.action(400, "/console/api/devices/act-1/flush", map[string]any{"timeoutSeconds": 9999})

	// Disenroll: a disabled individual enrollment with the device's leaf.
	res = c.action(200, "/console/api/devices/act-1/disenroll", nil)
	_, want256 := pki.Thumbprints(dev.Leaf)
	if res["created"] != true || res["enrollment"] != "disabled" || !strings.EqualFold(fmt.Sprint(res["thumbprint"]), want256) {
		t.Errorf("disenroll %v", res)
	}
	ie, err := v.e.Enrollment("act-1")
	if err != nil || ie.ProvisioningStatus != emulator.StatusDisabled ||
		!strings.EqualFold(ie.Attestation.X509.ClientCertificates.Primary.Info.SHA256Thumbprint, want256) {
		t.Fatalf("enrollment after disenroll %+v: %v", ie, err)
	}
	// DPS now refuses the device.
	if final := v.register(dev, ""); final[len(final)-1].body["status"] != "disabled" {
		t.Errorf("register after disenroll: %s", final[len(final)-1].raw)
	}
	if res = c.action(200, "/console/api/devices/act-1/disenroll", nil); res["changed"] != false {
		t.Errorf("second disenroll %v, want unchanged", res)
	}
	// A device the emulator never saw connected: nothing to block it with.
	res = c.action(409, "/console/api/devices/act-offline/disenroll", nil)
	if !strings.Contains(fmt.Sprint(res["error"]), "certificate") {
		t.Errorf("disenroll without certificate %v", res)
	}
	_ = offline

	// A device seen by the console, now offline, is disenrolled from the
	// certificate the console kept.
	gone := v.provision("act-gone")
	gc := v.hubConnect(gone, nil)
	c.state() // the console looks while it is connected
	gc.Disconnect(0)
	v.waitDisconnected(t, "act-gone")
	if res = c.action(200, "/console/api/devices/act-gone/disenroll", nil); res["created"] != true {
		t.Errorf("disenroll of an offline device %v", res)
	}
}

// waitDisconnected waits for the hub to see device id's connection end.
func (v *env) waitDisconnected(t *testing.T, id string) {
	t.Helper()
	_, err := v.e.WaitEvent(waitCtx(t), func(ev emulator.Event) bool { return ev.Kind == emulator.EventHubDisconnect && ev.DeviceID == id })
	if err != nil {
		t.Fatalf("%s did not disconnect: %v", id, err)
	}
}

func TestConsoleDeprovision(t *testing.T) {
	v := start(t)
	c := v.consoleClient()
	c.login(v.info.ConsoleToken)

	// A device that refuses: nothing changes.
	stubborn := v.provision("dep-no")
	sc := v.hubConnect(stubborn, nil)
	answerMethods(t, sc, func(string, []byte) (int, string) { return 409, `{"error":"shipment not loaded"}` })
	res := c.action(409, "/console/api/devices/dep-no/deprovision", map[string]any{"drainTimeoutSeconds": 5})
	if !strings.Contains(fmt.Sprint(res["error"]), "nothing was changed") {
		t.Errorf("refused deprovision %v", res)
	}
	if _, err := v.e.Device("dep-no"); err != nil {
		t.Errorf("refused deprovision deleted the device: %v", err)
	}
	if _, err := v.e.Enrollment("dep-no"); err == nil {
		t.Error("refused deprovision disenrolled the device")
	}

	// A device that drains and seals.
	dev := v.provision("dep-ok")
	mc := v.hubConnect(dev, nil)
	asked := answerMethods(t, mc, func(string, []byte) (int, string) {
		return 200, `{"sealed":true,"shipmentId":"SHP-9","unsent":0,"drained":true}`
	})
	c.action(400, "/console/api/devices/dep-ok/deprovision", map[string]any{"drainTimeoutSeconds": 3600})
	res = c.action(200, "/console/api/devices/dep-ok/deprovision", map[string]any{"drainTimeoutSeconds": 7})
	if m := recv(t, asked); !strings.Contains(m.topic, "/deprovision/") || string(m.payload) != `{"drainTimeoutSeconds":7}` {
		t.Errorf("device was asked %s %s", m.topic, m.payload)
	}
	if res["answered"] != true || jsonPath(res, "answer", "sealed") != true || jsonPath(res, "disenroll", "enrollment") != "disabled" ||
		res["hubDevice"] != "deleted" || res["registration"] != "deleted" {
		t.Errorf("deprovision report %v", res)
	}
	if _, err := v.e.Device("dep-ok"); err == nil {
		t.Error("hub identity still there")
	}
	if _, err := v.e.Registration("dep-ok"); err == nil {
		t.Error("registration record still there")
	}
	if ie, err := v.e.Enrollment("dep-ok"); err != nil || ie.ProvisioningStatus != emulator.StatusDisabled {
		t.Errorf("enrollment %+v: %v", ie, err)
	}

	// An offline device the console saw: asked by C2D, then removed.
	off := v.provision("dep-off")
	oc := v.hubConnect(off, nil)
	c.state()
	oc.Disconnect(0)
	v.waitDisconnected(t, "dep-off")
	res = c.action(200, "/console/api/devices/dep-off/deprovision", map[string]any{"drainTimeoutSeconds": 1})
	if res["answered"] != false || res["sentC2D"] != true || res["hubDevice"] != "deleted" || jsonPath(res, "disenroll", "created") != true {
		t.Errorf("offline deprovision %v", res)
	}
	// Nothing left to ask: the console reports absent objects.
	res = c.action(200, "/console/api/devices/dep-off/deprovision", nil)
	if res["hubIdentity"] != false || res["hubDevice"] != "absent" || res["registration"] != "absent" || jsonPath(res, "disenroll", "changed") != false {
		t.Errorf("second deprovision %v", res)
	}
}
