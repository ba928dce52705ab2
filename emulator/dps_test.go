package emulator_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
)

type pkiDevice = pki.Device

func pkiThumbs(c *x509.Certificate) (string, string) { return pki.Thumbprints(c) }
func pkiPEM(c *x509.Certificate) []byte              { return pki.EncodePEM(c) }
func pkiOpts() pki.DeviceOptions                     { return pki.DeviceOptions{} }
func pkiMemoryCA(cn string) (*pki.CA, error)         { return pki.NewMemoryCA(pki.CAOptions{CN: cn}) }
func pkiExpired() pki.DeviceOptions {
	return pki.DeviceOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}
}

func TestDPSGroupRegistration(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	dev := v.device("container-0001")

	answers := v.register(dev, `{"registrationId":"container-0001"}`)
	if len(answers) != 2 || answers[0].status != 202 || answers[1].status != 200 {
		t.Fatalf("answers %+v, want 202 then 200", answers)
	}
	if ra := answers[0].query.Get("retry-after"); ra != "0" {
		t.Errorf("202 retry-after = %q, want 0 (DPSPollAfter < 0)", ra)
	}
	if answers[0].query.Get("$rid") != "r1" {
		t.Errorf("first answer $rid = %q, want r1", answers[0].query.Get("$rid"))
	}
	final := answers[1].body
	if final["status"] != "assigned" {
		t.Fatalf("final %s", answers[1].raw)
	}
	st := final["registrationState"].(map[string]any)
	for k, want := range map[string]any{
		"assignedHub": v.info.HubHost, "deviceId": "container-0001", "status": "assigned",
		"substatus": "initialAssignment", "registrationId": "container-0001",
	} {
		if st[k] != want {
			t.Errorf("registrationState.%s = %v, want %v", k, st[k], want)
		}
	}
	if jsonPath(st, "x509", "enrollmentGroupId") != "fleet" {
		t.Errorf("x509.enrollmentGroupId = %v", jsonPath(st, "x509", "enrollmentGroupId"))
	}
	if st["etag"] == "" || st["etag"] == nil {
		t.Error("no etag")
	}

	// The hub device exists, authenticated by CA.
	d := decode(t, v.mustREST(200, "GET", "/devices/container-0001", nil, nil))
	if jsonPath(d, "authentication", "type") != "certificateAuthority" || d["status"] != "enabled" {
		t.Errorf("hub device %v", d)
	}
	// The registration record.
	rec := decode(t, v.mustREST(200, "GET", "/registrations/CONTAINER-0001", nil, nil))
	if rec["status"] != "assigned" || rec["deviceId"] != "container-0001" {
		t.Errorf("registration record %v", rec)
	}
	if got := v.e.RegistrationCount("Container-0001"); got != 1 {
		t.Errorf("RegistrationCount = %d, want 1", got)
	}

	// An empty body (the C# SDK's) registers again: reprovisioned.
	again := v.register(dev, "")
	st2 := again[len(again)-1].body["registrationState"].(map[string]any)
	if st2["substatus"] != "reprovisionedToInitialAssignment" {
		t.Errorf("second substatus = %v", st2["substatus"])
	}
	if st2["etag"] == st["etag"] {
		t.Error("etag did not change on re-registration")
	}
	if got := v.e.RegistrationCount("container-0001"); got != 2 {
		t.Errorf("RegistrationCount = %d, want 2", got)
	}
	// The group's registrations are listed.
	list := v.mustREST(200, "POST", "/registrations/fleet/query", map[string]any{}, nil)
	if !strings.Contains(string(list), `"registrationId":"container-0001"`) {
		t.Errorf("registrations of fleet: %s", list)
	}
}

func TestDPSAssigningPolls(t *testing.T) {
	v := start(t, func(c *emulator.Config) { c.DPSAssigningPolls = 2 })
	v.enrollGroup("fleet", "")
	answers := v.register(v.device("dev-poll"), "")
	var codes []int
	for _, a := range answers {
		codes = append(codes, a.status)
		if a.status == 202 {
			if a.body["status"] != "assigning" || a.body["operationId"] == nil {
				t.Errorf("202 body %s", a.raw)
			}
			if a.query.Get("retry-after") == "" {
				t.Errorf("202 without retry-after")
			}
		}
	}
	if len(codes) != 4 || codes[3] != 200 || codes[0] != 202 || codes[2] != 202 {
		t.Fatalf("status sequence %v, want 202 202 202 200", codes)
	}
}

func TestDPSDisabledIndividualBlocksGroupMember(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	dev := v.device("dev-blocked")
	v.enrollIndividual(dev, "disabled", nil)
	answers := v.register(dev, "")
	final := answers[len(answers)-1]
	if final.status != 200 || final.body["status"] != "disabled" {
		t.Fatalf("final answer %d %s, want 200 with status disabled", final.status, final.raw)
	}
	if jsonPath(final.body, "registrationState", "assignedHub") != nil {
		t.Errorf("disabled registration has an assigned hub: %s", final.raw)
	}
	rec := decode(t, v.mustREST(200, "GET", "/registrations/dev-blocked", nil, nil))
	if rec["status"] != "disabled" || rec["etag"] == nil || rec["lastUpdatedDateTimeUtc"] == nil {
		t.Errorf("registration record %v", rec)
	}
	if code, _ := v.rest("GET", "/devices/dev-blocked", nil, nil); code != 404 {
		t.Errorf("hub device of a disabled registration: GET = %d, want 404", code)
	}
	// A group member without an individual enrollment still registers.
	ok := v.register(v.device("dev-allowed"), "")
	if ok[len(ok)-1].body["status"] != "assigned" {
		t.Errorf("other member: %s", ok[len(ok)-1].raw)
	}
}

func TestDPSDisabledReplyAsError(t *testing.T) {
	v := start(t, func(c *emulator.Config) { c.DisabledReply = "403" })
	v.enrollGroup("fleet", "disabled")
	answers := v.register(v.device("dev-x"), "")
	if len(answers) != 1 || answers[0].status != 403 || answers[0].body["errorCode"] == nil {
		t.Fatalf("answers %+v, want one 403 with an errorCode", answers)
	}
}

func TestDPSIndividualEnrollmentSelfSigned(t *testing.T) {
	v := start(t)
	dev := v.device("solo-1")
	v.enrollIndividual(dev, "enabled", nil)
	answers := v.register(dev, "")
	if answers[len(answers)-1].body["status"] != "assigned" {
		t.Fatalf("final %s", answers[len(answers)-1].raw)
	}
	d := decode(t, v.mustREST(200, "GET", "/devices/solo-1", nil, nil))
	if jsonPath(d, "authentication", "type") != "selfSigned" {
		t.Fatalf("auth %v", d["authentication"])
	}
	sha1, _ := pkiThumbs(dev.Leaf)
	if jsonPath(d, "authentication", "x509Thumbprint", "primaryThumbprint") != sha1 {
		t.Errorf("thumbprint %v, want %s", jsonPath(d, "authentication", "x509Thumbprint", "primaryThumbprint"), sha1)
	}
	// Another certificate with the same CN is not the enrolled one.
	other := v.device("solo-1")
	res := v.register(other, "")
	if res[0].status != 401 || res[0].body["errorCode"] != float64(401002) {
		t.Errorf("other certificate: %d %s, want 401 401002", res[0].status, res[0].raw)
	}
}

func TestDPSUnknownCAUnauthorized(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	stranger, err := pkiMemoryCA("Somebody Else")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := stranger.IssueDevice("intruder", pkiOpts())
	if err != nil {
		t.Fatal(err)
	}
	answers := v.register(dev, "")
	a := answers[0]
	if len(answers) != 1 || a.status != 401 {
		t.Fatalf("answers %+v, want one 401", answers)
	}
	for _, k := range []string{"errorCode", "trackingId", "message", "timestampUtc"} {
		if a.body[k] == nil {
			t.Errorf("error body lacks %s: %s", k, a.raw)
		}
	}
	if code, _ := v.rest("GET", "/registrations/intruder", nil, nil); code != 404 {
		t.Errorf("registration record of an unauthorized device: %d, want 404", code)
	}
}

func TestDPSLinkedHubFailure(t *testing.T) {
	v := start(t)
	v.mustREST(200, "PUT", "/enrollmentGroups/elsewhere", map[string]any{
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": string(pkiPEM(v.ca.Root))}},
		}},
		"iotHubHostName": "contoso.azure-devices.net",
	}, nil)
	answers := v.register(v.device("dev-f"), "")
	final := answers[len(answers)-1]
	if final.status != 200 || final.body["status"] != "failed" || jsonPath(final.body, "registrationState", "errorCode") == nil {
		t.Fatalf("final %d %s, want 200 failed with an errorCode", final.status, final.raw)
	}
}

func TestDPSConnectRefusals(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	dev := v.device("dev-a")
	expired, err := v.ca.IssueDevice("dev-old", pkiExpired())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, clientID, username string
		dev                      any
	}{
		{"client id differs from username", "dev-b", v.dpsUsername("dev-a"), dev},
		{"CN differs from registration id", "dev-b", v.dpsUsername("dev-b"), dev},
		{"wrong id scope", "dev-a", "0ne00000000/registrations/dev-a/api-version=2019-03-31", dev},
		{"expired certificate", "dev-old", v.dpsUsername("dev-old"), expired},
		{"no certificate", "dev-a", v.dpsUsername("dev-a"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := tc.dev.(*pkiDevice)
			_, err := v.connect(d, tc.clientID, tc.username, nil)
			if err == nil || !strings.Contains(err.Error(), "not Authorized") {
				t.Fatalf("connect = %v, want not Authorized", err)
			}
		})
	}
	evs := v.e.Events()
	var refused int
	for _, ev := range evs {
		if ev.Kind == emulator.EventDPSRefused {
			refused++
		}
	}
	if refused != 5 {
		t.Errorf("%d dps.refused events, want 5", refused)
	}
}

func TestDPSForeignTopicDisconnects(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	dev := v.device("dev-a")
	lost := make(chan error, 1)
	c, err := v.connect(dev, dev.ID, v.dpsUsername(dev.ID), lost)
	if err != nil {
		t.Fatal(err)
	}
	c.Publish("devices/dev-a/messages/events/", 1, false, "x")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("connection not closed after a publish to a hub topic on DPS")
	}
}

func TestDPSInjectedThrottle(t *testing.T) {
	v := start(t)
	v.enrollGroup("fleet", "enabled")
	if err := v.e.Faults().DPSStatus(429, 3*time.Second, 2); err != nil {
		t.Fatal(err)
	}
	answers := v.register(v.device("dev-t"), "")
	if len(answers) < 3 {
		t.Fatalf("answers %+v", answers)
	}
	for _, a := range answers[:2] {
		if a.status != 429 || a.query.Get("retry-after") != "3" || a.body["errorCode"] == nil {
			t.Errorf("throttled answer %d %v %s, want 429 retry-after=3 with errorCode", a.status, a.query, a.raw)
		}
	}
	if answers[len(answers)-1].body["status"] != "assigned" {
		t.Errorf("after the throttle: %s", answers[len(answers)-1].raw)
	}
}
