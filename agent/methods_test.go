package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
	"github.com/coldchain/tracker/telemetry"
)

// hubClient is the IoT Hub service client for the fleet's emulator.
func (f *fleet) hubClient() *service.HubClient {
	f.t.Helper()
	info := f.emu.Info()
	certs, err := pki.ReadCertsFile(info.ServerCAFile)
	if err != nil {
		f.t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig(newPool(certs))
	hc := &http.Client{Transport: tr}
	cs, err := service.ParseConnectionString(info.HubConnectionString)
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := service.NewHub(cs, service.Options{HTTPClient: hc, BaseURL: info.HTTPSURL})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestDirectMethodsTwinAndC2D(t *testing.T) {
	f := newFleet(t)
	const id = "container-0201"
	dir := f.bundle(id)
	p := f.start(dir)
	p.waitStatus("connected and subscribed", 30*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	hub := f.hubClient()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// status answers with the same document as the local API.
	code, body, err := hub.InvokeMethod(ctx, id, "status", nil, 20*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("status method = %d %s, %v", code, body, err)
	}
	var st agent.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Identity.DeviceID != id || st.Connection.State != "connected" {
		t.Fatalf("status method body %s (%v)", body, err)
	}

	// flush drains and says so.
	code, body, err = hub.InvokeMethod(ctx, id, "flush", map[string]any{"timeoutSeconds": 10}, 20*time.Second)
	if err != nil || code != 200 || !strings.Contains(string(body), `"drained":true`) {
		t.Fatalf("flush method = %d %s, %v", code, body, err)
	}

	// An unknown method is a 404 with a helpful message.
	code, body, _ = hub.InvokeMethod(ctx, id, "selfdestruct", nil, 20*time.Second)
	if code != 404 || !strings.Contains(string(body), "unknown method") {
		t.Errorf("unknown method = %d %s", code, body)
	}

	// Desired properties apply live: a new interval and shipment.
	patch := service.TwinPatch{Properties: &service.TwinPatchProps{Desired: map[string]any{"telemetryInterval": 2, "shipmentId": "SHP-TWIN"}}}
	if _, err := hub.UpdateTwin(ctx, id, patch, "*"); err != nil {
		t.Fatal(err)
	}
	p.waitStatus("twin applied", 20*time.Second, func(s agent.Status) bool {
		return s.Telemetry.ShipmentID == "SHP-TWIN" && s.Telemetry.Interval == "2s"
	})
	f.waitRecord(id, "with the twin's shipment", 30*time.Second, func(r telemetry.Record) bool { return r.Shipment == "SHP-TWIN" })
	// The device reports its effective config and buffer in the twin.
	deadline := time.Now().Add(20 * time.Second)
	for {
		tw, err := hub.GetTwin(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := json.Marshal(tw.Properties.Reported)
		if strings.Contains(string(rep), `"shipmentId":"SHP-TWIN"`) && strings.Contains(string(rep), `"firmwareVersion"`) && strings.Contains(string(rep), `"certExpiry"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported properties never showed the applied config: %s", rep)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// reprovision: the device registers with DPS again by itself.
	code, body, err = hub.InvokeMethod(ctx, id, "reprovision", nil, 20*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("reprovision method = %d %s, %v", code, body, err)
	}
	f.waitEvent(emulator.EventDPSAssigned, id, 2, 60*time.Second)
	f.waitEvent(emulator.EventHubConnect, id, 2, 30*time.Second)

	// A C2D command reaches a device that was offline when it was sent.
	p.stop()
	if err := hub.SendC2D(ctx, id, []byte(`{"command":"flush"}`), map[string]string{"command": "flush"}); err != nil {
		t.Fatal(err)
	}
	p2 := f.start(dir)
	f.waitEvent(emulator.EventC2D, id, 1, 60*time.Second)
	p2.waitStatus("connected", 30*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	p2.stop()
}

func TestExpiredCertificateIsRejectedClearly(t *testing.T) {
	f := newFleet(t)
	const id = "container-0202"
	dir := f.bundle(id)
	ca, err := pki.LoadCA(f.caDir)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := ca.IssueDevice(id, pki.DeviceOptions{NotBefore: time.Now().Add(-400 * 24 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(filepath.Join(dir, "device.key.pem"), dev.Key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "device.chain.pem"), pki.EncodePEM(dev.Chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	p := f.start(dir)
	st := p.waitStatus("rejected", 30*time.Second, func(s agent.Status) bool {
		return s.Provisioning.State == "rejected" && s.Provisioning.LastError != ""
	})
	if !strings.Contains(strings.ToLower(st.Provisioning.LastError), "expired") {
		t.Errorf("rejection of an expired certificate says %q", st.Provisioning.LastError)
	}
	warned := false
	for _, w := range st.Warnings {
		warned = warned || strings.Contains(w.Msg, "expired")
	}
	if !warned {
		t.Errorf("no warning about the expired certificate: %+v", st.Warnings)
	}
	p.stop()
}
