package service_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// cloud is an in-process emulator with service clients pointed at it over
// real HTTPS.
type cloud struct {
	emu   *emulator.Emulator
	info  emulator.Info
	roots *x509.CertPool
	dps   *service.DPSClient
	hub   *service.HubClient
	fleet *service.Fleet
	ca    *pki.CA
}

func startCloud(t testing.TB) *cloud {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the emulator")
	}
	emu, err := emulator.New(emulator.Config{
		StateDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0",
		DPSPollAfter: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("emulator close: %v", err)
		}
	})
	c := &cloud{emu: emu, info: emu.Info()}
	cas, err := pki.ReadCertsFile(c.info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	c.roots = x509.NewCertPool()
	for _, ca := range cas {
		c.roots.AddCert(ca)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: c.roots}
	t.Cleanup(tr.CloseIdleConnections)
	opts := service.Options{HTTPClient: &http.Client{Transport: tr}, BaseURL: c.info.HTTPSURL}
	dcs, err := service.ParseConnectionString(c.info.DPSConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	hcs, err := service.ParseConnectionString(c.info.HubConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	if c.dps, err = service.NewDPS(dcs, opts); err != nil {
		t.Fatal(err)
	}
	if c.hub, err = service.NewHub(hcs, opts); err != nil {
		t.Fatal(err)
	}
	c.fleet = &service.Fleet{DPS: c.dps, Hub: c.hub}
	if c.ca, err = pki.NewMemoryCA(pki.CAOptions{Intermediate: true}); err != nil {
		t.Fatal(err)
	}
	return c
}

// group creates an enabled enrollment group for the cloud's CA.
func (c *cloud) group(t testing.TB, id string) *service.EnrollmentGroup {
	t.Helper()
	g, err := c.dps.PutGroup(t.Context(), &service.EnrollmentGroup{
		EnrollmentGroupID:  id,
		Attestation:        service.X509GroupAttestation(c.ca.Issuer),
		IoTHubHostName:     c.info.HubHost,
		ProvisioningStatus: service.StatusEnabled,
	})
	if err != nil {
		t.Fatalf("PutGroup(%s): %v", id, err)
	}
	return g
}

// device issues a device certificate.
func (c *cloud) device(t testing.TB, id string) *pki.Device {
	t.Helper()
	d, err := c.ca.IssueDevice(id, pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dial connects an MQTT client with the device's certificate.
func (c *cloud) dial(t testing.TB, d *pki.Device, username string, onConnect func(mqtt.Client)) (mqtt.Client, error) {
	t.Helper()
	host, _, _ := strings.Cut(c.info.HubHost, ":")
	o := mqtt.NewClientOptions().AddBroker("ssl://" + c.info.MQTTAddr).SetClientID(d.ID).
		SetUsername(username).SetProtocolVersion(4).SetAutoReconnect(false).SetOrderMatters(false).
		SetConnectTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{d.TLSCertificate()}, RootCAs: c.roots, ServerName: host})
	if onConnect != nil {
		o.SetOnConnectHandler(onConnect)
	}
	cl := mqtt.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	return cl, tok.Error()
}

// register runs a DPS registration for d the way a device does (MQTT,
// X.509) and returns the final operation status.
func (c *cloud) register(t testing.TB, d *pki.Device) string {
	t.Helper()
	cl, err := c.dial(t, d, c.info.IDScope+"/registrations/"+d.ID+"/api-version=2019-03-31", nil)
	if err != nil {
		t.Fatalf("DPS connect %s: %v", d.ID, err)
	}
	defer cl.Disconnect(0)
	replies := make(chan mqtt.Message, 4)
	if tok := cl.Subscribe("$dps/registrations/res/#", 1, func(_ mqtt.Client, m mqtt.Message) { replies <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("DPS subscribe: %v", tok.Error())
	}
	topic := "$dps/registrations/PUT/iotdps-register/?$rid=1"
	body := `{"registrationId":"` + d.ID + `"}`
	for rid := 2; rid < 50; rid++ {
		if tok := cl.Publish(topic, 1, false, body); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("DPS publish: %v", tok.Error())
		}
		var m mqtt.Message
		select {
		case m = <-replies:
		case <-time.After(15 * time.Second):
			t.Fatalf("no DPS reply for %s", d.ID)
		}
		var op struct {
			OperationID string `json:"operationId"`
			Status      string `json:"status"`
		}
		if err := json.Unmarshal(m.Payload(), &op); err != nil {
			t.Fatalf("DPS reply %s: %s", m.Topic(), m.Payload())
		}
		if op.Status != service.RegistrationAssigning {
			return op.Status
		}
		topic = fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%d&operationId=%s", rid, url.QueryEscape(op.OperationID))
		body = " "
	}
	t.Fatalf("registration of %s never completed", d.ID)
	return ""
}

// hubUser is the MQTT username of device id on the emulator's hub.
func (c *cloud) hubUser(id string) string {
	return c.info.HubHost + "/" + id + "/?api-version=2021-04-12"
}

func TestGroupCRUD(t *testing.T) {
	c := startCloud(t)
	ctx := t.Context()
	g := c.group(t, "fleet-a")
	if g.ETag == "" || g.ProvisioningStatus != service.StatusEnabled {
		t.Fatalf("created group = %+v, want an ETag and enabled", g)
	}
	got, err := c.dps.GetGroup(ctx, "fleet-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != g.ETag || got.IoTHubHostName != c.info.HubHost || got.Attestation.X509 == nil || got.Attestation.X509.SigningCertificates == nil {
		t.Errorf("GetGroup = %+v", got)
	}
	if info := got.Attestation.X509.SigningCertificates.Primary.Info; info == nil || !strings.Contains(info.SubjectName, c.ca.Issuer.Subject.CommonName) {
		t.Errorf("signing certificate info = %+v, want the issuer %q", info, c.ca.Issuer.Subject.CommonName)
	}

	// An update with the current ETag wins; one with the old ETag gets 412.
	got.ProvisioningStatus = service.StatusDisabled
	upd, err := c.dps.PutGroup(ctx, got)
	if err != nil {
		t.Fatalf("PutGroup with current etag: %v", err)
	}
	if upd.ETag == g.ETag || upd.ProvisioningStatus != service.StatusDisabled {
		t.Errorf("updated group = %+v, want a new ETag and disabled", upd)
	}
	stale := *got
	stale.ETag = g.ETag
	if _, err := c.dps.PutGroup(ctx, &stale); !service.IsPreconditionFailed(err) {
		t.Errorf("PutGroup with stale etag = %v, want 412", err)
	}
	if err := c.dps.DeleteGroup(ctx, "fleet-a", g.ETag); !service.IsPreconditionFailed(err) {
		t.Errorf("DeleteGroup with stale etag = %v, want 412", err)
	}

	// Paging: five groups in pages of two.
	for i := range 4 {
		c.group(t, fmt.Sprintf("fleet-%c", 'b'+i))
	}
	var ids []string
	cont, pages := "", 0
	for {
		page, next, err := c.dps.QueryGroups(ctx, 2, cont)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 2 {
			t.Errorf("page of %d groups, asked for 2", len(page))
		}
		pages++
		for _, g := range page {
			ids = append(ids, g.EnrollmentGroupID)
		}
		if next == "" {
			break
		}
		cont = next
	}
	if len(ids) != 5 || pages != 3 {
		t.Errorf("paged query = %v in %d pages, want 5 groups in 3 pages", ids, pages)
	}
	all, err := c.dps.ListGroups(ctx)
	if err != nil || len(all) != 5 {
		t.Errorf("ListGroups = %d groups, %v", len(all), err)
	}

	if err := c.dps.DeleteGroup(ctx, "fleet-a", upd.ETag); err != nil {
		t.Fatalf("DeleteGroup with current etag: %v", err)
	}
	if _, err := c.dps.GetGroup(ctx, "fleet-a"); !service.IsNotFound(err) {
		t.Errorf("GetGroup after delete = %v, want not found", err)
	}
	if err := c.dps.DeleteGroup(ctx, "fleet-a", ""); !service.IsNotFound(err) {
		t.Errorf("second DeleteGroup = %v, want not found", err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	c := startCloud(t)
	cs, _ := service.ParseConnectionString(c.info.DPSConnectionString)
	cs.Key = "d3Jvbmcga2V5IHdyb25nIGtleQ=="
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: c.roots}
	defer tr.CloseIdleConnections()
	bad, _ := service.NewDPS(cs, service.Options{HTTPClient: &http.Client{Transport: tr}, BaseURL: c.info.HTTPSURL})
	if _, err := bad.ListGroups(t.Context()); !service.IsUnauthorized(err) {
		t.Fatalf("ListGroups with a wrong key = %v, want 401", err)
	}
}

func TestDisenrollReenroll(t *testing.T) {
	c := startCloud(t)
	ctx := t.Context()
	c.group(t, "fleet")
	d := c.device(t, "trk-0001")
	if st := c.register(t, d); st != service.RegistrationAssigned {
		t.Fatalf("first registration = %s, want assigned", st)
	}
	e, err := c.fleet.Disenroll(ctx, d.Leaf)
	if err != nil {
		t.Fatalf("Disenroll: %v", err)
	}
	if e.RegistrationID != "trk-0001" || e.ProvisioningStatus != service.StatusDisabled {
		t.Errorf("enrollment = %+v", e)
	}
	again, err := c.fleet.Disenroll(ctx, d.Leaf)
	if err != nil || again.ETag != e.ETag {
		t.Errorf("second Disenroll = %+v, %v; want the same enrollment untouched", again, err)
	}
	if st := c.register(t, d); st != service.RegistrationDisabled {
		t.Errorf("registration while disenrolled = %s, want disabled", st)
	}
	found, err := c.fleet.Reenroll(ctx, "trk-0001")
	if err != nil || !found {
		t.Fatalf("Reenroll = %v, %v", found, err)
	}
	if st := c.register(t, d); st != service.RegistrationAssigned {
		t.Errorf("registration after reenroll = %s, want assigned", st)
	}
	if found, err := c.fleet.Reenroll(ctx, "trk-0001"); err != nil || found {
		t.Errorf("second Reenroll = %v, %v; want nothing found", found, err)
	}
	// A certificate without the device's CN is refused before any call.
	if _, err := c.fleet.DeprovisionDevice(ctx, "trk-0002", d.Leaf, service.DeviceDeprovisionOptions{}); !errors.Is(err, service.ErrCertMismatch) {
		t.Errorf("DeprovisionDevice with another device's cert = %v, want ErrCertMismatch", err)
	}
}

func TestDeregister(t *testing.T) {
	c := startCloud(t)
	ctx := t.Context()
	c.group(t, "fleet")
	d1, d2 := c.device(t, "trk-1"), c.device(t, "trk-2")
	for _, d := range []*pki.Device{d1, d2} {
		if st := c.register(t, d); st != service.RegistrationAssigned {
			t.Fatalf("register %s = %s", d.ID, st)
		}
	}
	rep, err := c.fleet.Deregister(ctx, "trk-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (service.DeregisterReport{HubDevice: service.OutcomeDeleted, Registration: service.OutcomeDeleted}) {
		t.Errorf("Deregister = %+v", rep)
	}
	if _, err := c.hub.GetDevice(ctx, "trk-1"); !service.IsNotFound(err) {
		t.Errorf("hub device after deregister: %v", err)
	}
	if _, err := c.dps.GetRegistration(ctx, "trk-1"); !service.IsNotFound(err) {
		t.Errorf("registration after deregister: %v", err)
	}
	if _, err := c.dial(t, d1, c.hubUser("trk-1"), nil); err == nil {
		t.Error("a deregistered device could still connect to the hub")
	}
	rep, err = c.fleet.Deregister(ctx, "trk-1", false)
	if err != nil || rep != (service.DeregisterReport{HubDevice: service.OutcomeAbsent, Registration: service.OutcomeAbsent}) {
		t.Errorf("second Deregister = %+v, %v", rep, err)
	}

	rep, err = c.fleet.Deregister(ctx, "trk-2", true)
	if err != nil || rep.HubDevice != service.OutcomeDisabled {
		t.Fatalf("Deregister --disable = %+v, %v", rep, err)
	}
	dev, err := c.hub.GetDevice(ctx, "trk-2")
	if err != nil || dev.Status != service.DeviceDisabled {
		t.Errorf("disabled device = %+v, %v", dev, err)
	}
	// A stale ETag on the device is refused.
	dev.Status = service.DeviceEnabled
	dev.ETag = "stale"
	if _, err := c.hub.PutDevice(ctx, dev); !service.IsPreconditionFailed(err) {
		t.Errorf("PutDevice with stale etag = %v, want 412", err)
	}
}

func TestDeprovisionDeviceOffline(t *testing.T) {
	c := startCloud(t)
	ctx := t.Context()
	c.group(t, "fleet")
	d := c.device(t, "trk-off")
	if st := c.register(t, d); st != service.RegistrationAssigned {
		t.Fatalf("register = %s", st)
	}
	var steps []string
	rep, err := c.fleet.DeprovisionDevice(ctx, "trk-off", d.Leaf, service.DeviceDeprovisionOptions{
		DrainTimeout: 5 * time.Second, Disable: true,
		Progress: func(s string) { steps = append(steps, s) },
	})
	if err != nil {
		t.Fatalf("DeprovisionDevice: %v", err)
	}
	if !rep.HubIdentity || rep.Answer != nil || !rep.SentC2D || rep.UnsentEstimate != -1 {
		t.Errorf("report = %+v, want an offline device asked by C2D", rep)
	}
	if rep.Enrollment != service.StatusDisabled || rep.Deregister.HubDevice != service.OutcomeDisabled || rep.Deregister.Registration != service.OutcomeDeleted {
		t.Errorf("report = %+v, want disenrolled, hub disabled, registration deleted", rep)
	}
	// The disabled identity keeps the queued C2D request.
	dev, err := c.hub.GetDevice(ctx, "trk-off")
	if err != nil || dev.CloudToDeviceMessageCount != 1 {
		t.Errorf("hub device = %+v, %v; want one pending C2D message", dev, err)
	}
	if st := c.register(t, d); st != service.RegistrationDisabled {
		t.Errorf("registration after deprovision = %s, want disabled", st)
	}
	if len(steps) != 3 {
		t.Errorf("progress steps = %q", steps)
	}

	// A rerun finds the identity disabled and does not ask again; it
	// deletes the record the refused registration above left.
	rep, err = c.fleet.DeprovisionDevice(ctx, "trk-off", d.Leaf, service.DeviceDeprovisionOptions{DrainTimeout: 5 * time.Second, OfflineWait: time.Hour, Disable: true})
	if err != nil {
		t.Fatalf("second DeprovisionDevice: %v", err)
	}
	if !rep.HubDisabled || rep.SentC2D || rep.Deregister.HubDevice != service.OutcomeDisabled || rep.Deregister.Registration != service.OutcomeDeleted {
		t.Errorf("rerun report = %+v", rep)
	}
	if dev, err := c.hub.GetDevice(ctx, "trk-off"); err != nil || dev.CloudToDeviceMessageCount != 1 {
		t.Errorf("hub device after rerun = %+v, %v; want still one pending C2D message", dev, err)
	}
}

// TestDeprovisionDeviceOnline answers the deprovision method from a
// connected device.
func TestDeprovisionDeviceOnline(t *testing.T) {
	c := startCloud(t)
	ctx := t.Context()
	c.group(t, "fleet")
	d := c.device(t, "trk-on")
	if st := c.register(t, d); st != service.RegistrationAssigned {
		t.Fatalf("register = %s", st)
	}
	var (
		mu       sync.Mutex
		requests []string
	)
	cl, err := c.dial(t, d, c.hubUser("trk-on"), nil)
	if err != nil {
		t.Fatalf("hub connect: %v", err)
	}
	defer cl.Disconnect(0)
	tok := cl.Subscribe("$iothub/methods/POST/#", 0, func(cl mqtt.Client, m mqtt.Message) {
		mu.Lock()
		requests = append(requests, m.Topic()+" "+string(m.Payload()))
		mu.Unlock()
		_, q, _ := strings.Cut(m.Topic(), "?")
		v, _ := url.ParseQuery(q)
		cl.Publish("$iothub/methods/res/200/?$rid="+v.Get("$rid"), 0, false, `{"sealed":true,"shipmentId":"SHP-9","unsent":0,"drained":true}`)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	rep, err := c.fleet.DeprovisionDevice(ctx, "trk-on", d.Leaf, service.DeviceDeprovisionOptions{DrainTimeout: 7 * time.Second})
	if err != nil {
		t.Fatalf("DeprovisionDevice: %v", err)
	}
	want := service.DeprovisionAnswer{Sealed: true, ShipmentID: "SHP-9", Drained: true}
	if rep.Answer == nil || *rep.Answer != want || rep.SentC2D {
		t.Errorf("report = %+v answer %+v, want %+v without C2D", rep, rep.Answer, want)
	}
	if rep.Deregister.HubDevice != service.OutcomeDeleted {
		t.Errorf("hub device %s, want deleted", rep.Deregister.HubDevice)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 1 || !strings.HasPrefix(requests[0], "$iothub/methods/POST/deprovision/") || !strings.HasSuffix(requests[0], `{"drainTimeoutSeconds":7}`) {
		t.Errorf("method requests = %q", requests)
	}
}

// TestGroupDeprovisionRerun interrupts a group deprovisioning after one
// device and checks that a second run finishes it and a third finds
// nothing left.
func TestGroupDeprovisionRerun(t *testing.T) {
	c := startCloud(t)
	c.group(t, "fleet")
	c.group(t, "other")
	const n = 4
	for i := range n {
		d := c.device(t, fmt.Sprintf("trk-%02d", i))
		if st := c.register(t, d); st != service.RegistrationAssigned {
			t.Fatalf("register %s = %s", d.ID, st)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	rep, err := c.fleet.DeprovisionGroup(ctx, "fleet", service.GroupDeprovisionOptions{
		Parallel: 1,
		Progress: func(p service.GroupProgress) {
			if p.Done == 1 {
				cancel() // the operator pressed ^C
			}
		},
	})
	if !errors.Is(err, service.ErrIncomplete) || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted DeprovisionGroup = %v, want ErrIncomplete and context.Canceled", err)
	}
	if rep.Registrations != n || rep.DevicesDeleted != 1 || rep.RegistrationsDeleted != 1 || rep.Group != service.OutcomeFailed {
		t.Errorf("interrupted report = %+v", rep)
	}
	g, err := c.dps.GetGroup(t.Context(), "fleet")
	if err != nil || g.ProvisioningStatus != service.StatusDisabled {
		t.Fatalf("group after interruption = %+v, %v; want it kept, disabled", g, err)
	}

	var seen []string
	rep, err = c.fleet.DeprovisionGroup(t.Context(), "fleet", service.GroupDeprovisionOptions{
		Progress: func(p service.GroupProgress) { seen = append(seen, p.RegistrationID) },
	})
	if err != nil {
		t.Fatalf("rerun: %v", err)
	}
	if rep.Registrations != n-1 || rep.RegistrationsDeleted != n-1 || rep.DevicesDeleted != n-1 || rep.Group != service.OutcomeDeleted || len(seen) != n-1 {
		t.Errorf("rerun report = %+v, progress %v", rep, seen)
	}
	for i := range n {
		id := fmt.Sprintf("trk-%02d", i)
		if _, err := c.hub.GetDevice(t.Context(), id); !service.IsNotFound(err) {
			t.Errorf("hub device %s: %v, want deleted", id, err)
		}
		if _, err := c.dps.GetRegistration(t.Context(), id); !service.IsNotFound(err) {
			t.Errorf("registration %s: %v, want deleted", id, err)
		}
	}
	if _, err := c.dps.GetGroup(t.Context(), "other"); err != nil {
		t.Errorf("the other group was touched: %v", err)
	}

	rep, err = c.fleet.DeprovisionGroup(t.Context(), "fleet", service.GroupDeprovisionOptions{})
	if err != nil || rep.Group != service.OutcomeAbsent || rep.Registrations != 0 {
		t.Errorf("third run = %+v, %v; want nothing left", rep, err)
	}
}

// TestDeprovisionDeviceComesOnline starts with the device offline: the
// request goes by C2D, and when the device connects during the offline
// wait it receives that message and answers the method.
func TestDeprovisionDeviceComesOnline(t *testing.T) {
	c := startCloud(t)
	c.group(t, "fleet")
	d := c.device(t, "trk-late")
	if st := c.register(t, d); st != service.RegistrationAssigned {
		t.Fatalf("register = %s", st)
	}
	waiting := make(chan struct{})
	type result struct {
		rep *service.DeviceReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := c.fleet.DeprovisionDevice(t.Context(), "trk-late", d.Leaf, service.DeviceDeprovisionOptions{
			DrainTimeout: 5 * time.Second, OfflineWait: time.Minute, PollInterval: 20 * time.Millisecond,
			Progress: func(s string) {
				if strings.HasPrefix(s, "device offline; waiting") {
					close(waiting)
				}
			},
		})
		done <- result{rep, err}
	}()
	select {
	case <-waiting:
	case r := <-done:
		t.Fatalf("DeprovisionDevice returned before waiting: %+v, %v", r.rep, r.err)
	}
	c2d := make(chan string, 1)
	cl, err := c.dial(t, d, c.hubUser("trk-late"), nil)
	if err != nil {
		t.Fatalf("hub connect: %v", err)
	}
	defer cl.Disconnect(0)
	answer := func(cl mqtt.Client, m mqtt.Message) {
		_, q, _ := strings.Cut(m.Topic(), "?")
		v, _ := url.ParseQuery(q)
		cl.Publish("$iothub/methods/res/200/?$rid="+v.Get("$rid"), 0, false, `{"sealed":true,"shipmentId":"SHP-1","unsent":3,"drained":false}`)
	}
	// The device takes the C2D request first, then subscribes to methods
	// (a device that is slow to subscribe gets asked again).
	if tok := cl.Subscribe("devices/trk-late/messages/devicebound/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		c2d <- m.Topic() + " " + string(m.Payload())
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe C2D: %v", tok.Error())
	}
	select {
	case m := <-c2d:
		if !strings.Contains(m, "command=deprovision") || !strings.HasSuffix(m, `{"command":"deprovision"}`) {
			t.Errorf("C2D message = %q", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the device never received the C2D request")
	}
	if tok := cl.Subscribe("$iothub/methods/POST/#", 0, answer); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe methods: %v", tok.Error())
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("DeprovisionDevice did not finish after the device connected")
	}
	if r.err != nil {
		t.Fatalf("DeprovisionDevice: %v", r.err)
	}
	want := service.DeprovisionAnswer{Sealed: true, ShipmentID: "SHP-1", Unsent: 3}
	if !r.rep.SentC2D || r.rep.Answer == nil || *r.rep.Answer != want {
		t.Errorf("report = %+v, answer %+v; want C2D sent and then %+v", r.rep, r.rep.Answer, want)
	}
}

// BenchmarkDeprovisionGroup measures how fast a group of 20 provisioned
// devices is removed (hub identity and registration record each) with the
// default parallelism, against the emulator over HTTPS.
func BenchmarkDeprovisionGroup(b *testing.B) {
	c := startCloud(b)
	const n = 20
	devices := make([]*pki.Device, n)
	for i := range devices {
		devices[i] = c.device(b, fmt.Sprintf("bench-%03d", i))
	}
	var removed int
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		id := fmt.Sprintf("grp-%d", i)
		c.group(b, id)
		for _, d := range devices {
			if st := c.register(b, d); st != service.RegistrationAssigned {
				b.Fatalf("register %s = %s", d.ID, st)
			}
		}
		b.StartTimer()
		rep, err := c.fleet.DeprovisionGroup(b.Context(), id, service.GroupDeprovisionOptions{})
		if err != nil || rep.DevicesDeleted != n {
			b.Fatalf("DeprovisionGroup = %+v, %v", rep, err)
		}
		removed += rep.DevicesDeleted
	}
	b.ReportMetric(float64(removed)/b.Elapsed().Seconds(), "devices/s")
}
