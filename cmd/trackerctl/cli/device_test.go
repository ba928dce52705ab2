package cli_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// svcEnv is an emulator running in-process, a CA with issued devices, and
// service clients to check what the commands did.
type svcEnv struct {
	state, caDir, devices string
	info                  emulator.Info
	dps                   *service.DPSClient
	hub                   *service.HubClient
}

func startSvcEnv(t *testing.T) *svcEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the emulator")
	}
	s := &svcEnv{state: t.TempDir(), caDir: filepath.Join(t.TempDir(), "ca"), devices: filepath.Join(t.TempDir(), "devices")}
	emu, err := emulator.New(emulator.Config{StateDir: s.state, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", DPSPollAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	s.info = emu.Info()
	ca, err := pki.InitCA(s.caDir, pki.CAOptions{Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"trk-1", "trk-2"} {
		d, err := ca.IssueDevice(id, pki.DeviceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.WriteDevice(s.devices, d, false); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	cas, err := pki.ReadCertsFile(s.info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(cas[0])
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	t.Cleanup(tr.CloseIdleConnections)
	opts := service.Options{HTTPClient: &http.Client{Transport: tr}, BaseURL: s.info.HTTPSURL}
	dcs, _ := service.ParseConnectionString(s.info.DPSConnectionString)
	hcs, _ := service.ParseConnectionString(s.info.HubConnectionString)
	s.dps, _ = service.NewDPS(dcs, opts)
	s.hub, _ = service.NewHub(hcs, opts)
	return s
}

type svcResult struct {
	code           int
	stdout, stderr string
}

// svcRun runs trackerctl in-process; env holds the environment variables.
func svcRun(t *testing.T, env map[string]string, args ...string) svcResult {
	t.Helper()
	var out, errb bytes.Buffer
	e := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code := cli.Main(t.Context(), args, e)
	return svcResult{code, out.String(), errb.String()}
}

// ok runs trackerctl against the emulator and requires success.
func (s *svcEnv) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := svcRun(t, nil, append(args, "--emulator", s.state)...)
	if r.code != 0 {
		t.Fatalf("trackerctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fail runs trackerctl against the emulator and requires exit code and a
// message on stderr.
func (s *svcEnv) fail(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	r := svcRun(t, nil, append(args, "--emulator", s.state)...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Errorf("trackerctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

func TestGroupCommands(t *testing.T) {
	s := startSvcEnv(t)
	twin := filepath.Join(t.TempDir(), "twin.json")
	os.WriteFile(twin, []byte(`{"tags":{"fleet":"reefer"},"properties":{"desired":{"telemetryInterval":30}}}`), 0o644)
	out := s.ok(t, "group", "create", "--id", "reefers", "--ca", s.caDir, "--initial-twin", twin)
	if !strings.Contains(out, "enrollment group reefers created (enabled)") || !strings.Contains(out, "Intermediate") {
		t.Errorf("group create output: %q", out)
	}
	s.fail(t, 1, "enrollment group reefers exists; use --replace", "group", "create", "--id", "reefers", "--ca", s.caDir)
	s.ok(t, "group", "create", "--id", "reefers", "--ca-cert", filepath.Join(s.caDir, pki.RootCertFile), "--replace", "--hub", "hub2.example.net")
	g, err := s.dps.GetGroup(t.Context(), "reefers")
	if err != nil || g.IoTHubHostName != "hub2.example.net" || g.InitialTwin != nil {
		t.Errorf("replaced group = %+v, %v", g, err)
	}

	out = s.ok(t, "group", "show", "--id", "reefers")
	for _, want := range []string{"group          reefers", "status         enabled", "hub2.example.net", "registrations  0"} {
		if !strings.Contains(out, want) {
			t.Errorf("group show lacks %q:\n%s", want, out)
		}
	}
	var shown struct {
		EnrollmentGroupID string `json:"enrollmentGroupId"`
		Registrations     []any  `json:"registrations"`
	}
	if err := json.Unmarshal([]byte(s.ok(t, "group", "show", "--id", "reefers", "--json")), &shown); err != nil || shown.EnrollmentGroupID != "reefers" || shown.Registrations == nil {
		t.Errorf("group show --json = %+v, %v", shown, err)
	}
	s.ok(t, "group", "create", "--id", "dry-vans", "--ca", s.caDir, "--disabled")
	out = s.ok(t, "group", "list")
	if !strings.Contains(out, "reefers") || !strings.Contains(out, "dry-vans") || !strings.Contains(out, "disabled") {
		t.Errorf("group list:\n%s", out)
	}
	var groups []service.EnrollmentGroup
	if err := json.Unmarshal([]byte(s.ok(t, "group", "list", "--json")), &groups); err != nil || len(groups) != 2 {
		t.Errorf("group list --json = %d groups, %v", len(groups), err)
	}

	s.fail(t, 1, "changed (its ETag is no longer bogus)", "group", "delete", "--id", "reefers", "--etag", "bogus")
	out = s.ok(t, "group", "delete", "--id", "reefers")
	if !strings.Contains(out, "deleted; its devices stay registered") {
		t.Errorf("group delete: %q", out)
	}
	s.fail(t, 1, "no enrollment group reefers in DPS", "group", "show", "--id", "reefers")
	s.fail(t, 1, "no enrollment group reefers in DPS", "group", "delete", "--id", "reefers")

	out = s.ok(t, "group", "deprovision", "--id", "dry-vans")
	if !strings.Contains(out, "0 registration records found") || !strings.Contains(out, "enrollment group dry-vans deleted") {
		t.Errorf("group deprovision: %q", out)
	}
	out = s.ok(t, "group", "deprovision", "--id", "dry-vans")
	if !strings.Contains(out, "was already deleted") {
		t.Errorf("group deprovision rerun: %q", out)
	}
}

func TestDeviceCommands(t *testing.T) {
	s := startSvcEnv(t)
	ctx := t.Context()
	s.ok(t, "group", "create", "--id", "reefers", "--ca", s.caDir)

	out := s.ok(t, "device", "disenroll", "--id", "trk-1", "--devices", s.devices)
	if !strings.Contains(out, "device trk-1 disenrolled") {
		t.Errorf("disenroll: %q", out)
	}
	e, err := s.dps.GetEnrollment(ctx, "trk-1")
	if err != nil || e.ProvisioningStatus != service.StatusDisabled {
		t.Fatalf("enrollment after disenroll = %+v, %v", e, err)
	}
	s.fail(t, 1, `is the certificate of "trk-2", not of device trk-1`, "device", "disenroll", "--id", "trk-1", "--cert", filepath.Join(s.devices, "trk-2", pki.DeviceCertFile))
	s.fail(t, 2, "--cert FILE or --devices DIR is required", "device", "disenroll", "--id", "trk-1")
	s.fail(t, 1, "no certificate for trk-9", "device", "disenroll", "--id", "trk-9", "--devices", s.devices)

	out = s.ok(t, "device", "show", "--id", "trk-1")
	if !strings.Contains(out, "disenrolled: disabled individual enrollment") || !strings.Contains(svcLine(out, "hub identity"), "none") {
		t.Errorf("device show:\n%s", out)
	}
	out = s.ok(t, "device", "list")
	if !strings.Contains(out, "trk-1") || !strings.Contains(out, "disenrolled") {
		t.Errorf("device list:\n%s", out)
	}
	out = s.ok(t, "device", "reenroll", "--id", "trk-1")
	if !strings.Contains(out, "re-enrolled") {
		t.Errorf("reenroll: %q", out)
	}
	s.fail(t, 1, "has no individual enrollment", "device", "reenroll", "--id", "trk-1")

	// A hub identity for trk-2, as DPS would have created it.
	leaf, err := pki.ReadCertsFile(filepath.Join(s.devices, "trk-2", pki.DeviceCertFile))
	if err != nil {
		t.Fatal(err)
	}
	sha1, _ := pki.Thumbprints(leaf[0])
	if _, err := s.hub.CreateDevice(ctx, &service.Device{DeviceID: "trk-2", Status: service.DeviceEnabled,
		Authentication: &service.Authentication{Type: service.AuthSelfSigned, X509Thumbprint: &service.X509Thumbprint{PrimaryThumbprint: sha1, SecondaryThumbprint: sha1}}}); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		ID  string          `json:"id"`
		Hub *service.Device `json:"hub"`
	}
	if err := json.Unmarshal([]byte(s.ok(t, "device", "list", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].ID != "trk-2" || rows[0].Hub == nil || rows[0].Hub.Status != service.DeviceEnabled {
		t.Errorf("device list --json = %+v", rows)
	}

	out = s.ok(t, "device", "deprovision", "--id", "trk-2", "--devices", s.devices, "--drain-timeout", "5s", "--offline-wait", "0")
	for _, want := range []string{
		"device offline; sent deprovision by C2D, an unknown number of records may be left unsent",
		"device trk-2 disenrolled (disabled individual enrollment); hub identity deleted; registration record not present",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("deprovision output lacks %q:\n%s", want, out)
		}
	}
	if _, err := s.hub.GetDevice(ctx, "trk-2"); !service.IsNotFound(err) {
		t.Errorf("hub device after deprovision: %v", err)
	}
	if e, err := s.dps.GetEnrollment(ctx, "trk-2"); err != nil || e.ProvisioningStatus != service.StatusDisabled {
		t.Errorf("enrollment after deprovision = %+v, %v", e, err)
	}
	s.fail(t, 1, "device trk-2 not found: no hub identity and no registration record", "device", "deregister", "--id", "trk-2")
	s.fail(t, 1, "device trk-9 not found", "device", "show", "--id", "trk-9")
	s.fail(t, 2, "--id", "device", "show", "--id", "-bad-")
}

func TestServiceConnectionErrors(t *testing.T) {
	r := svcRun(t, nil, "group", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "no DPS connection string: pass --dps-connection-string, set DPS_CONNECTION_STRING, or use --emulator DIR") {
		t.Errorf("group list without connection: %+v", r)
	}
	r = svcRun(t, map[string]string{"DPS_CONNECTION_STRING": "HostName=x;SharedAccessKeyName=y;SharedAccessKey=" + "c2VjcmV0"}, "device", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "no IoT Hub connection string") {
		t.Errorf("device list without hub connection: %+v", r)
	}
	r = svcRun(t, map[string]string{"DPS_CONNECTION_STRING": "HostName=x;SharedAccessKey=c2VjcmV0"}, "group", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "DPS connection string from $DPS_CONNECTION_STRING") || strings.Contains(r.stderr, "c2VjcmV0") {
		t.Errorf("group list with a bad connection string: %+v", r)
	}
	r = svcRun(t, nil, "group", "list", "--emulator", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "start the emulator with 'trackerctl emulator --state") {
		t.Errorf("group list with an empty emulator dir: %+v", r)
	}
}

func TestServiceKeyRefused(t *testing.T) {
	s := startSvcEnv(t)
	info := filepath.Join(s.state, "emulator.json")
	raw, err := os.ReadFile(info)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	cs, _ := service.ParseConnectionString(m["dpsConnectionString"].(string))
	cs.Key = "d3Jvbmcga2V5"
	r := svcRun(t, nil, "group", "list", "--emulator", s.state,
		"--dps-connection-string", "HostName="+cs.HostName+";SharedAccessKeyName="+cs.KeyName+";SharedAccessKey="+cs.Key)
	if r.code != 1 || !strings.Contains(r.stderr, "the connection string's key was refused (check --dps-connection-string") {
		t.Errorf("group list with a wrong key: %+v", r)
	}
}

// svcLine returns the first line of out that starts with prefix.
func svcLine(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
