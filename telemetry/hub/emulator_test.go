package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// These tests run the client against the real emulator in-process: MQTT
// over mutual TLS on 127.0.0.1, the registry and twins through its service
// REST API.

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

type hubEnv struct {
	emu   *emulator.Emulator
	svc   *service.HubClient
	roots *x509.CertPool
	host  string
}

func startEmulator(t testing.TB) *hubEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("emulator test skipped in -short mode")
	}
	emu, err := emulator.New(emulator.Config{StateDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0",
		Logger: testLogger(t).With("side", "emulator")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("emulator close: %v", err)
		}
	})
	info := emu.Info()
	caCerts, err := pki.ReadCertsFile(info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range caCerts {
		roots.AddCert(c)
	}
	cs, err := service.ParseConnectionString(info.HubConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	svc, err := service.NewHub(cs, service.Options{HTTPClient: &http.Client{Transport: tr}, BaseURL: info.HTTPSURL})
	if err != nil {
		t.Fatal(err)
	}
	return &hubEnv{emu: emu, svc: svc, roots: roots, host: info.HubHost}
}

// device issues a certificate for id and registers it in the hub as a
// selfSigned (thumbprint) device.
func (e *hubEnv) device(t testing.TB, id string) tls.Certificate {
	t.Helper()
	d, err := sharedPKI(t).ca.IssueDevice(id, pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sha1, _ := pki.Thumbprints(d.Leaf)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	_, err = e.svc.CreateDevice(ctx, &service.Device{
		DeviceID: id,
		Authentication: &service.Authentication{
			Type:           "selfSigned",
			X509Thumbprint: &service.X509Thumbprint{PrimaryThumbprint: sha1},
		},
	})
	if err != nil {
		t.Fatalf("create device %s: %v", id, err)
	}
	return d.TLSCertificate()
}

// patchDesired changes desired properties of device id through the
// service API, conditional on the twin's current etag.
func (e *hubEnv) patchDesired(t testing.TB, id string, desired map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	tw, err := e.svc.GetTwin(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpdateTwin(ctx, id, service.TwinPatch{Properties: &service.TwinPatchProps{Desired: desired}}, tw.ETag); err != nil {
		t.Fatal(err)
	}
}

// running is a client whose Run goroutine the test owns.
type running struct {
	*Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels Run and returns its error.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// config is a client configuration for the emulator with quick reconnects.
func (e *hubEnv) config(t testing.TB, id string, cert tls.Certificate) Config {
	return Config{
		Host: e.host, DeviceID: id, Certificate: cert, RootCAs: e.roots,
		ReconnectMin: 5 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
		ClientVersion: "trackerd/test", Logger: testLogger(t),
	}
}

// run starts Run for a client and stops it at the end of the test.
func run(t testing.TB, cfg Config, setup func(*Client)) *running {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{Client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// connected waits until the client is connected.
func (r *running) connected(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	select {
	case <-r.Connected():
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned before connecting: %v", err)
	case <-ctx.Done():
		t.Fatalf("not connected within %v: %+v", testTimeout, r.State())
	}
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a bounded deadline
	}
}

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestEmulatorPublish(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "pub-1")
	r := run(t, e.config(t, "pub-1", cert), nil)
	r.connected(t)

	ctx := waitCtx(t)
	created := time.Date(2026, 5, 6, 7, 8, 9, 123_000_000, time.UTC)
	m := Message{
		Body:      []byte(`{"seq":7,"tempC":4.5}`),
		MessageID: "pub-1-7", ContentType: "application/json", ContentEncoding: "utf-8", CorrelationID: "corr 1",
		CreationTime: created,
		Properties:   map[string]string{"alert": "temp high", "shipment": "S/42&x=1"},
	}
	if err := r.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got, err := e.emu.WaitTelemetry(ctx, func(m emulator.Message) bool { return m.MessageID() == "pub-1-7" })
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != "pub-1" || string(got.Payload) != string(m.Body) {
		t.Errorf("emulator got device %q payload %q", got.DeviceID, got.Payload)
	}
	for k, want := range map[string]string{"content_type": "application/json", "content_encoding": "utf-8", "correlation_id": "corr 1"} {
		if got.System[k] != want {
			t.Errorf("system property %s = %q, want %q (all: %v)", k, got.System[k], want, got.System)
		}
	}
	for k, want := range map[string]string{"alert": "temp high", "shipment": "S/42&x=1"} {
		if got.Properties[k] != want {
			t.Errorf("application property %s = %q, want %q (all: %v)", k, got.Properties[k], want, got.Properties)
		}
	}
	st := r.State()
	if !st.Connected || st.Connects != 1 || st.InFlight != 0 {
		t.Errorf("state after publish: %+v", st)
	}
}

func TestEmulatorConnectionLostBeforePuback(t *testing.T) {
	// paho fails pending tokens itself only with a clean session; either
	// way Publish must report the loss, never success.
	for _, clean := range []bool{false, true} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) { testConnectionLost(t, clean) })
	}
}

func testConnectionLost(t *testing.T, clean bool) {
	e := startEmulator(t)
	cert := e.device(t, "lost-1")
	cfg := e.config(t, "lost-1", cert)
	cfg.CleanSession = clean
	r := run(t, cfg, nil)
	for round := range 5 {
		r.connected(t)
		e.emu.Faults().WithholdPubacks("lost-1", 1)
		ctx := waitCtx(t)
		res := make(chan error, 1)
		mid := "lost-1-" + string(rune('a'+round))
		go func() { res <- r.Publish(ctx, Message{Body: []byte("{}"), MessageID: mid}) }()
		if _, err := e.emu.WaitEvent(ctx, func(ev emulator.Event) bool {
			return ev.Kind == emulator.EventPubackWithheld && ev.DeviceID == "lost-1" && strings.Contains(ev.Detail, mid)
		}); err != nil {
			t.Fatalf("round %d: no withheld PUBACK event: %v", round, err)
		}
		if !e.emu.Faults().DropDevice("lost-1") {
			t.Fatalf("round %d: no connection to drop", round)
		}
		if err := <-res; !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("round %d: Publish = %v, want ErrConnectionLost", round, err)
		}
	}
	// After the drops the client is back and publishes normally.
	r.connected(t)
	ctx := waitCtx(t)
	if err := r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "lost-1-after"}); err != nil {
		t.Fatalf("Publish after reconnect: %v", err)
	}
	if st := r.State(); st.Connects < 6 || st.InFlight != 0 {
		t.Errorf("state: %+v, want at least 6 connections and nothing in flight", st)
	}
}

func TestEmulatorPublishTimeoutReconnects(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "slow-1")
	cfg := e.config(t, "slow-1", cert)
	cfg.PublishTimeout = 300 * time.Millisecond
	r := run(t, cfg, nil)
	r.connected(t)
	e.emu.Faults().WithholdPubacks("slow-1", 1)
	ctx := waitCtx(t)
	err := r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "slow-1-1"})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Publish = %v, want ErrTimeout", err)
	}
	eventually(t, "a new connection after the timeout", func() bool { return r.State().Connects >= 2 && r.State().Connected })
	if err := r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "slow-1-2"}); err != nil {
		t.Fatalf("Publish after reconnect: %v", err)
	}
}

func TestEmulatorTwinTimeout(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "tto-1")
	cfg := e.config(t, "tto-1", cert)
	cfg.PublishTimeout = 200 * time.Millisecond
	r := run(t, cfg, nil)
	r.connected(t)
	e.emu.Faults().Latency(2 * time.Second)
	ctx := waitCtx(t)
	if _, _, err := r.GetTwin(ctx); !errors.Is(err, ErrTimeout) {
		t.Fatalf("GetTwin with a slow hub = %v, want ErrTimeout", err)
	}
	e.emu.Faults().Latency(-1)
	// A slow twin answer does not cost the connection: once the hub has
	// worked through the delayed request, requests succeed again on it.
	eventually(t, "a twin request to succeed", func() bool {
		_, err := r.UpdateReported(ctx, map[string]int{"x": 1})
		return err == nil
	})
	if st := r.State(); st.Connects != 1 || !st.Connected {
		t.Errorf("state %+v, want the first connection still up", st)
	}
}

func TestEmulatorMaxInFlight(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "win-1")
	cfg := e.config(t, "win-1", cert)
	cfg.MaxInFlight = 2
	r := run(t, cfg, nil)
	r.connected(t)
	e.emu.Faults().WithholdPubacks("win-1", 2)
	ctx := waitCtx(t)
	res := make(chan error, 2)
	for i := range 2 {
		go func() { res <- r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "win-1-" + string(rune('a'+i))}) }()
	}
	eventually(t, "two publishes in flight", func() bool { return r.State().InFlight == 2 })
	// The window is full: a third publish waits for a slot until its
	// context ends, and never reaches the hub.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := r.Publish(short, Message{Body: []byte("{}"), MessageID: "win-1-c"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Publish = %v, want context.DeadlineExceeded", err)
	}
	for _, m := range e.emu.Telemetry() {
		if m.MessageID() == "win-1-c" {
			t.Fatal("the third message reached the hub although the window was full")
		}
	}
	e.emu.Faults().DropDevice("win-1")
	for range 2 {
		if err := <-res; !errors.Is(err, ErrConnectionLost) {
			t.Errorf("withheld Publish = %v, want ErrConnectionLost", err)
		}
	}
	r.connected(t)
	if err := r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "win-1-d"}); err != nil {
		t.Fatalf("Publish after the window drained: %v", err)
	}
}

func TestEmulatorAbandonedPublishKeepsSlot(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "aban-1")
	cfg := e.config(t, "aban-1", cert)
	cfg.MaxInFlight = 1
	r := run(t, cfg, nil)
	r.connected(t)
	e.emu.Faults().WithholdPubacks("aban-1", 1)
	ctx := waitCtx(t)
	short, cancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() { res <- r.Publish(short, Message{Body: []byte("{}"), MessageID: "aban-1-a"}) }()
	if _, err := e.emu.WaitEvent(ctx, func(ev emulator.Event) bool {
		return ev.Kind == emulator.EventPubackWithheld && strings.Contains(ev.Detail, "aban-1-a")
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned Publish = %v, want context.Canceled", err)
	}
	if n := r.State().InFlight; n != 1 {
		t.Errorf("in flight after abandoning an unacknowledged publish = %d, want 1 (the slot stays taken)", n)
	}
	short2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	err := r.Publish(short2, Message{Body: []byte("{}"), MessageID: "aban-1-b"})
	cancel2()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with the window held = %v, want context.DeadlineExceeded", err)
	}
	e.emu.Faults().DropDevice("aban-1")
	eventually(t, "the slot to be released by the connection loss", func() bool { return r.State().InFlight == 0 })
	r.connected(t)
	if err := r.Publish(ctx, Message{Body: []byte("{}"), MessageID: "aban-1-c"}); err != nil {
		t.Fatalf("Publish after the loss: %v", err)
	}
}

func TestEmulatorSecondClientKicksFirst(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "dup-1")
	first := run(t, e.config(t, "dup-1", cert), nil)
	first.connected(t)
	second := run(t, e.config(t, "dup-1", cert), nil)
	second.connected(t)
	eventually(t, "the first client to reconnect", func() bool { return first.State().Connects >= 2 })
	if err := second.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("second Run = %v, want context.Canceled", err)
	}
	first.connected(t)
	if err := first.Publish(waitCtx(t), Message{Body: []byte("{}"), MessageID: "dup-1-1"}); err != nil {
		t.Fatalf("Publish from the first client: %v", err)
	}
}

func TestEmulatorDeletedDeviceUnauthorized(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "del-1")
	r := run(t, e.config(t, "del-1", cert), nil)
	r.connected(t)
	ctx := waitCtx(t)
	dev, err := e.svc.GetDevice(ctx, "del-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteDevice(ctx, "del-1", dev.ETag); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Run = %v, want ErrUnauthorized", err)
		}
	case <-ctx.Done():
		t.Fatalf("Run still going after the device was deleted: %+v", r.State())
	}
	if st := r.State(); st.Connected || st.Refusals != DefaultMaxRefusals {
		t.Errorf("state: %+v", st)
	}
	if err := r.Publish(ctx, Message{Body: []byte("{}")}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish after Run returned = %v, want ErrNotConnected", err)
	}
}

func TestEmulatorRefusedConnectionsRetried(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "ref-1")
	e.emu.Faults().RefuseConnections(time.Hour)
	r := run(t, e.config(t, "ref-1", cert), nil)
	eventually(t, "several refused attempts", func() bool { return r.State().Failures >= DefaultMaxRefusals+1 })
	if st := r.State(); st.Connected || st.Refusals != 0 {
		t.Errorf("state while the hub is unavailable: %+v; want retries, not identity refusals", st)
	}
	e.emu.Faults().RefuseConnections(0)
	r.connected(t)
}

// desiredLog records OnDesired calls.
type desiredLog struct {
	mu    sync.Mutex
	calls []desiredCall
	ch    chan struct{}
}

type desiredCall struct {
	doc     map[string]any
	version int64
}

func newDesiredLog() *desiredLog { return &desiredLog{ch: make(chan struct{}, 100)} }

func (l *desiredLog) record(patch json.RawMessage, version int64) {
	var doc map[string]any
	json.Unmarshal(patch, &doc)
	l.mu.Lock()
	l.calls = append(l.calls, desiredCall{doc, version})
	l.mu.Unlock()
	l.ch <- struct{}{}
}

// next waits for the next call.
func (l *desiredLog) next(t testing.TB) desiredCall {
	t.Helper()
	select {
	case <-l.ch:
	case <-time.After(testTimeout):
		t.Fatal("no desired-properties callback")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[len(l.calls)-1]
}

func (l *desiredLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

func TestEmulatorTwin(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "twin-1")
	log := newDesiredLog()
	r := run(t, e.config(t, "twin-1", cert), func(c *Client) { c.OnDesired(log.record) })
	r.connected(t)
	ctx := waitCtx(t)

	// After connecting: the full desired document, even if empty.
	first := log.next(t)
	if _, ok := first.doc["$version"]; !ok {
		t.Errorf("first desired document %v has no $version", first.doc)
	}

	v1, err := r.UpdateReported(ctx, map[string]any{"firmware": "1.0.0", "intervalS": 60})
	if err != nil {
		t.Fatalf("UpdateReported: %v", err)
	}
	v2, err := r.UpdateReported(ctx, json.RawMessage(`{"intervalS":null,"state":"ok"}`))
	if err != nil {
		t.Fatalf("UpdateReported: %v", err)
	}
	if v1 <= 0 || v2 <= v1 {
		t.Errorf("reported versions %d then %d, want increasing", v1, v2)
	}
	_, reported, err := r.GetTwin(ctx)
	if err != nil {
		t.Fatalf("GetTwin: %v", err)
	}
	var rep map[string]any
	if err := json.Unmarshal(reported, &rep); err != nil {
		t.Fatal(err)
	}
	if rep["firmware"] != "1.0.0" || rep["state"] != "ok" || rep["intervalS"] != nil || rep["$version"] != float64(v2) {
		t.Errorf("reported = %s, want firmware, state, no intervalS, $version %d", reported, v2)
	}
	twin, err := e.svc.GetTwin(ctx, "twin-1")
	if err != nil {
		t.Fatal(err)
	}
	if twin.Properties.Reported["state"] != "ok" {
		t.Errorf("service sees reported %v", twin.Properties.Reported)
	}

	// A desired patch from the service arrives live with its version.
	e.patchDesired(t, "twin-1", map[string]any{"telemetryInterval": 30, "shipmentId": "S-1"})
	live := log.next(t)
	if live.doc["telemetryInterval"] != float64(30) || live.doc["shipmentId"] != "S-1" || live.version <= first.version {
		t.Errorf("desired patch %v version %d (first was %d)", live.doc, live.version, first.version)
	}
	if live.doc["$version"] != float64(live.version) {
		t.Errorf("patch $version %v differs from the version passed %d", live.doc["$version"], live.version)
	}

	// Offline: a change made while disconnected arrives after the
	// reconnect as the full document.
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	e.patchDesired(t, "twin-1", map[string]any{"thresholds": map[string]any{"maxC": 8}})
	r2 := run(t, e.config(t, "twin-1", cert), func(c *Client) { c.OnDesired(log.record) })
	r2.connected(t)
	full := log.next(t)
	th, _ := full.doc["thresholds"].(map[string]any)
	if full.version <= live.version || full.doc["telemetryInterval"] != float64(30) || th["maxC"] != float64(8) {
		t.Errorf("desired after reconnect = %v version %d, want the whole document past version %d", full.doc, full.version, live.version)
	}
}

func TestEmulatorDesiredNotRepeated(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "twin-2")
	log := newDesiredLog()
	r := run(t, e.config(t, "twin-2", cert), func(c *Client) { c.OnDesired(log.record) })
	r.connected(t)
	first := log.next(t)
	// A drop and reconnect with no change in between: the GET after the
	// reconnect carries the same version and is not delivered again.
	e.emu.Faults().DropDevice("twin-2")
	eventually(t, "a reconnect", func() bool { return r.State().Connects >= 2 && r.State().Connected })
	e.patchDesired(t, "twin-2", map[string]any{"telemetryInterval": 10})
	next := log.next(t)
	if next.doc["telemetryInterval"] != float64(10) || next.version != first.version+1 {
		t.Errorf("after the reconnect got %v version %d, want the patch at version %d (the unchanged document must not repeat)", next.doc, next.version, first.version+1)
	}
	if n := log.count(); n != 2 {
		t.Errorf("%d desired callbacks, want 2", n)
	}
}

func TestEmulatorMethods(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "meth-1")
	type call struct {
		name    string
		payload string
	}
	calls := make(chan call, 10)
	r := run(t, e.config(t, "meth-1", cert), func(c *Client) {
		c.OnMethod(func(ctx context.Context, name string, payload json.RawMessage) (int, any) {
			calls <- call{name, string(payload)}
			if name == "status" {
				return 200, map[string]any{"state": "ok", "depth": 3}
			}
			return 404, map[string]string{"message": "unknown method " + name}
		})
	})
	r.connected(t)
	ctx := waitCtx(t)
	status, resp, err := e.svc.InvokeMethod(ctx, "meth-1", "status", map[string]int{"verbose": 1}, 10*time.Second)
	if err != nil {
		t.Fatalf("InvokeMethod: %v", err)
	}
	var body map[string]any
	json.Unmarshal(resp, &body)
	if status != 200 || body["state"] != "ok" || body["depth"] != float64(3) {
		t.Errorf("status method = %d %s", status, resp)
	}
	if c := <-calls; c.name != "status" || c.payload != `{"verbose":1}` {
		t.Errorf("handler got %q %q", c.name, c.payload)
	}
	status, resp, err = e.svc.InvokeMethod(ctx, "meth-1", "reboot", nil, 10*time.Second)
	if err != nil {
		t.Fatalf("InvokeMethod: %v", err)
	}
	if status != 404 || !strings.Contains(string(resp), "unknown method reboot") {
		t.Errorf("unknown method = %d %s", status, resp)
	}
}

func TestEmulatorMethodWithoutHandler(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "meth-2")
	r := run(t, e.config(t, "meth-2", cert), nil)
	r.connected(t)
	status, _, err := e.svc.InvokeMethod(waitCtx(t), "meth-2", "status", nil, 10*time.Second)
	if err != nil || status != 501 {
		t.Errorf("InvokeMethod without a handler = %d, %v; want 501", status, err)
	}
}

func TestEmulatorC2D(t *testing.T) {
	e := startEmulator(t)
	cert := e.device(t, "c2d-1")
	got := make(chan Message, 10)
	setup := func(c *Client) { c.OnC2D(func(m Message) { got <- m }) }
	r := run(t, e.config(t, "c2d-1", cert), setup)
	r.connected(t)
	ctx := waitCtx(t)
	if err := e.svc.SendC2D(ctx, "c2d-1", []byte(`{"cmd":"beep"}`), map[string]string{"kind": "cmd 1"}); err != nil {
		t.Fatal(err)
	}
	var firstID string
	select {
	case m := <-got:
		if string(m.Body) != `{"cmd":"beep"}` || m.Properties["kind"] != "cmd 1" || m.MessageID == "" {
			t.Errorf("C2D message %+v", m)
		}
		firstID = m.MessageID
	case <-ctx.Done():
		t.Fatal("no cloud-to-device message")
	}

	// Sent while offline: delivered after the reconnect (persistent
	// session, CleanSession false).
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// Offline as far as the hub knows.
	if _, err := e.emu.WaitEvent(ctx, func(ev emulator.Event) bool {
		return ev.Kind == emulator.EventHubDisconnect && ev.DeviceID == "c2d-1"
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SendC2D(ctx, "c2d-1", []byte(`offline`), nil); err != nil {
		t.Fatal(err)
	}
	r2 := run(t, e.config(t, "c2d-1", cert), setup)
	r2.connected(t)
	// Delivery is at least once: the first message comes again if its
	// PUBACK had not gone out when the client stopped.
	for {
		select {
		case m := <-got:
			if m.MessageID == firstID {
				continue
			}
			if string(m.Body) != "offline" {
				t.Errorf("C2D after reconnect %+v", m)
			}
		case <-ctx.Done():
			t.Fatal("the message sent while offline was not delivered after the reconnect")
		}
		break
	}
}

// BenchmarkPublish measures acknowledged publishes per second over TLS to
// the emulator with 256-byte bodies, one at a time and with a window of 8
// publishes in flight.
func BenchmarkPublish(b *testing.B) {
	e := startEmulator(b)
	for _, window := range []int{1, 8} {
		id := fmt.Sprintf("bench-%d", window)
		cfg := e.config(b, id, e.device(b, id))
		cfg.MaxInFlight = window
		cfg.Logger = nil
		r := run(b, cfg, nil)
		r.connected(b)
		body := []byte(strings.Repeat("x", 256))
		b.Run(fmt.Sprintf("inflight=%d", window), func(b *testing.B) {
			ctx := waitCtx(b)
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed sync.Once
			start := time.Now()
			for range window {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := r.Publish(ctx, Message{Body: body, MessageID: id}); err != nil {
							failed.Do(func() { b.Errorf("Publish: %v", err) })
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
