package emulator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/emulator/internal/sas"
	"github.com/coldchain/tracker/provisioning/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait is the bound for anything a test waits for; tests never sleep.
const wait = 20 * time.Second

type env struct {
	t    testing.TB
	e    *emulator.Emulator
	info emulator.Info
	dir  string
	ca   *pki.CA // the fleet CA devices are issued from
	http *http.Client
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EMULATOR_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start runs an emulator in a temporary directory on free ports.
func start(t testing.TB, mod ...func(*emulator.Config)) *env {
	t.Helper()
	return startIn(t, t.TempDir(), mod...)
}

func startIn(t testing.TB, dir string, mod ...func(*emulator.Config)) *env {
	t.Helper()
	cfg := emulator.Config{
		StateDir:     dir,
		MQTTAddr:     "127.0.0.1:0",
		HTTPSAddr:    "127.0.0.1:0",
		Logger:       testLogger(t),
		DPSPollAfter: -1,
	}
	for _, m := range mod {
		m(&cfg)
	}
	e, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	v := &env{t: t, e: e, info: e.Info(), dir: dir}
	ca, err := pki.NewMemoryCA(pki.CAOptions{CN: "Test Fleet Root", Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	v.ca = ca
	v.http = &http.Client{Transport: &http.Transport{TLSClientConfig: v.tlsConfig(nil)}, Timeout: wait}
	t.Cleanup(func() {
		v.http.CloseIdleConnections()
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return v
}

func (v *env) serverPool() *x509.CertPool {
	v.t.Helper()
	certs, err := pki.ReadCertsFile(v.info.ServerCAFile)
	if err != nil {
		v.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

func (v *env) tlsConfig(dev *pki.Device) *tls.Config {
	c := &tls.Config{RootCAs: v.serverPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if dev != nil {
		c.Certificates = []tls.Certificate{dev.TLSCertificate()}
	}
	return c
}

func (v *env) device(id string) *pki.Device {
	v.t.Helper()
	d, err := v.ca.IssueDevice(id, pki.DeviceOptions{})
	if err != nil {
		v.t.Fatal(err)
	}
	return d
}

// rest calls a service API with a SAS token for the DPS or hub policy.
func (v *env) rest(method, path string, body any, hdr map[string]string) (int, []byte) {
	v.t.Helper()
	cs := v.info.HubConnectionString
	seg := strings.ToLower(strings.SplitN(strings.TrimPrefix(path, "/"), "/", 2)[0])
	if seg == "enrollmentgroups" || seg == "enrollments" || seg == "registrations" {
		cs = v.info.DPSConnectionString
	}
	return v.restAs(cs, time.Now().Add(time.Hour), method, path, body, hdr)
}

func (v *env) restAs(connStr string, expiry time.Time, method, path string, body any, hdr map[string]string) (int, []byte) {
	v.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			v.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	if !strings.Contains(path, "api-version") && !strings.HasPrefix(path, "/emulator") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=2021-10-01"
	}
	req, err := http.NewRequest(method, "https://"+v.info.HTTPSAddr+path, r)
	if err != nil {
		v.t.Fatal(err)
	}
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		v.t.Fatal(err)
	}
	key, _ := cs.Key()
	req.Header.Set("Authorization", sas.NewToken(cs.HostName, cs.SharedAccessKeyName, key, expiry))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	resp, err := v.http.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		v.t.Fatal(err)
	}
	return resp.StatusCode, raw
}

func (v *env) mustREST(want int, method, path string, body any, hdr map[string]string) []byte {
	v.t.Helper()
	code, raw := v.rest(method, path, body, hdr)
	if code != want {
		v.t.Fatalf("%s %s = %d %s, want %d", method, path, code, raw, want)
	}
	return raw
}

// enrollGroup creates an enrollment group signed by the env's CA issuer.
func (v *env) enrollGroup(id string, status string) {
	v.t.Helper()
	v.mustREST(200, "PUT", "/enrollmentGroups/"+id, map[string]any{
		"enrollmentGroupId": id,
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": string(pki.EncodePEM(v.ca.Root))}},
		}},
		"provisioningStatus": status,
	}, nil)
}

// enrollIndividual creates an individual enrollment for dev.
func (v *env) enrollIndividual(dev *pki.Device, status string, hdr map[string]string) []byte {
	v.t.Helper()
	return v.mustREST(200, "PUT", "/enrollments/"+dev.ID, map[string]any{
		"registrationId": dev.ID,
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(pki.EncodePEM(dev.Leaf))}},
		}},
		"provisioningStatus": status,
	}, hdr)
}

type mqttMsg struct {
	topic   string
	payload []byte
	qos     byte
}

// mqttClient connects paho as a device. It returns the client, or the
// connect error.
func (v *env) connect(dev *pki.Device, clientID, username string, lost chan<- error) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("ssl://" + v.info.MQTTAddr).SetClientID(clientID).
		SetUsername(username).SetProtocolVersion(4).SetTLSConfig(v.tlsConfig(dev)).
		SetAutoReconnect(false).SetOrderMatters(false).SetKeepAlive(60 * time.Second).
		SetConnectTimeout(wait).SetCleanSession(true)
	if lost != nil {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	v.t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (v *env) dpsUsername(id string) string {
	return v.info.IDScope + "/registrations/" + id + "/api-version=2019-03-31&ClientVersion=test"
}

func (v *env) hubUsername(id string) string {
	return v.info.HubHost + "/" + id + "/?api-version=2021-04-12&DeviceClientType=test"
}

func subscribe(t testing.TB, c paho.Client, filter string, qos byte) <-chan mqttMsg {
	t.Helper()
	ch := make(chan mqttMsg, 100)
	tok := c.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) {
		ch <- mqttMsg{topic: m.Topic(), payload: m.Payload(), qos: m.Qos()}
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, q := range st.Result() {
			if q == 0x80 {
				t.Fatalf("subscribe %s refused", f)
			}
		}
	}
	return ch
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, payload any) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func recv(t testing.TB, ch <-chan mqttMsg) mqttMsg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message within the bound")
	}
	return mqttMsg{}
}

// dpsResult is a DPS answer seen by the device.
type dpsResult struct {
	status int
	query  url.Values
	body   map[string]any
	raw    []byte
}

func parseDPS(t testing.TB, m mqttMsg) dpsResult {
	t.Helper()
	rest := strings.TrimPrefix(m.topic, "$dps/registrations/res/")
	st, q, ok := strings.Cut(rest, "/?")
	if !ok {
		t.Fatalf("DPS answer topic %q", m.topic)
	}
	code, err := strconv.Atoi(st)
	if err != nil {
		t.Fatalf("DPS answer topic %q", m.topic)
	}
	vals, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(m.payload, &body); err != nil {
		t.Fatalf("DPS answer body %q is not a JSON object: %v", m.payload, err)
	}
	return dpsResult{status: code, query: vals, body: body, raw: m.payload}
}

// register runs the DPS flow for dev and returns every answer it got, the
// last being final (not 202).
func (v *env) register(dev *pki.Device, body string) []dpsResult {
	v.t.Helper()
	c, err := v.connect(dev, dev.ID, v.dpsUsername(dev.ID), nil)
	if err != nil {
		v.t.Fatalf("DPS connect: %v", err)
	}
	defer c.Disconnect(0)
	res := subscribe(v.t, c, "$dps/registrations/res/#", 1)
	publish(v.t, c, "$dps/registrations/PUT/iotdps-register/?$rid=r1", 1, body)
	var out []dpsResult
	for i := 0; i < 50; i++ {
		r := parseDPS(v.t, recv(v.t, res))
		out = append(out, r)
		if r.status != 202 && r.status != 429 && r.status < 500 {
			return out
		}
		op, _ := r.body["operationId"].(string)
		rid := fmt.Sprintf("r%d", i+2)
		if op == "" {
			publish(v.t, c, "$dps/registrations/PUT/iotdps-register/?$rid="+rid, 1, body)
		} else {
			publish(v.t, c, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="+rid+"&operationId="+url.QueryEscape(op), 1, " ")
		}
	}
	v.t.Fatal("registration did not finish in 50 answers")
	return nil
}

// hubConnect connects dev to the hub as deviceID.
func (v *env) hubConnect(dev *pki.Device, lost chan<- error) paho.Client {
	v.t.Helper()
	c, err := v.connect(dev, dev.ID, v.hubUsername(dev.ID), lost)
	if err != nil {
		v.t.Fatalf("hub connect %s: %v", dev.ID, err)
	}
	return c
}

func jsonPath(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func decode(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s", raw)
	}
	return m
}

// connectPassword connects a SAS-authenticated device (no certificate).
func (v *env) connectPassword(id, password string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("ssl://" + v.info.MQTTAddr).SetClientID(id).
		SetUsername(v.hubUsername(id)).SetPassword(password).SetProtocolVersion(4).SetTLSConfig(v.tlsConfig(nil)).
		SetAutoReconnect(false).SetConnectTimeout(wait)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	v.t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}
