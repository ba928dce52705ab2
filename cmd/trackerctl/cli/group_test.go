package cli_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/provisioning/dps"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// register provisions device id (from s.devices) through DPS with the
// device-side client, as a tracker does on first boot.
func (s *svcEnv) register(t *testing.T, id string) {
	t.Helper()
	d, err := pki.LoadDevice(filepath.Join(s.devices, id))
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.ReadCertsFile(s.info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cas[0])
	_, err = dps.Register(t.Context(), dps.Config{
		Endpoint: s.info.DPSHost, IDScope: s.info.IDScope, RegistrationID: id,
		Certificate: d.TLSCertificate(), RootCAs: roots, MinPollInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func TestGroupDeprovisionCommand(t *testing.T) {
	s := startSvcEnv(t)
	ca, err := pki.LoadCA(s.caDir)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"trk-1", "trk-2"}
	for i := 3; i <= 5; i++ {
		id := fmt.Sprintf("trk-%d", i)
		d, err := ca.IssueDevice(id, pki.DeviceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.WriteDevice(s.devices, d, false); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s.ok(t, "group", "create", "--id", "reefers", "--ca", s.caDir)
	for _, id := range ids {
		s.register(t, id)
	}
	out := s.ok(t, "device", "list", "--group", "reefers")
	if n := strings.Count(out, "reefers"); n != len(ids) {
		t.Errorf("device list --group shows %d devices of the group, want %d:\n%s", n, len(ids), out)
	}
	if !strings.Contains(svcLine(out, "trk-3"), "assigned") || !strings.Contains(svcLine(out, "trk-3"), "enabled") {
		t.Errorf("device list line of trk-3: %q", svcLine(out, "trk-3"))
	}
	out = s.ok(t, "device", "show", "--id", "trk-4")
	if !strings.Contains(svcLine(out, "registration"), "assigned to "+s.info.HubHost+" as trk-4 (initialAssignment)") {
		t.Errorf("device show:\n%s", out)
	}
	if !strings.Contains(s.ok(t, "group", "show", "--id", "reefers"), "registrations  5 (5 assigned)") {
		t.Errorf("group show does not count 5 assigned registrations")
	}

	// On a terminal, progress goes to stderr and the summary to stdout.
	var stdout, stderr bytes.Buffer
	env := &cmdline.Env{Stdout: &stdout, Stderr: &stderr, Terminal: true}
	if code := cli.Main(t.Context(), []string{"group", "deprovision", "--id", "reefers", "--parallel", "2", "--emulator", s.state}, env); code != 0 {
		t.Fatalf("group deprovision: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "\r\x1b[Kdeprovision reefers: 5/5 ") {
		t.Errorf("no progress on the terminal: %q", stderr.String())
	}
	for _, want := range []string{"group reefers: 5 registration records found, 5 deleted; hub devices: 5 deleted, 0 already gone", "enrollment group reefers deleted"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, id := range ids {
		if _, err := s.hub.GetDevice(t.Context(), id); !service.IsNotFound(err) {
			t.Errorf("hub device %s after group deprovision: %v", id, err)
		}
	}
	var rep service.GroupReport
	if err := json.Unmarshal([]byte(s.ok(t, "group", "deprovision", "--id", "reefers", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Group != service.OutcomeAbsent || rep.Registrations != 0 {
		t.Errorf("rerun report = %+v, want nothing left", rep)
	}
	// Without a terminal there is no progress line.
	r := svcRun(t, nil, "group", "deprovision", "--id", "reefers", "--emulator", s.state)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("non-terminal rerun: exit %d, stderr %q", r.code, r.stderr)
	}
}
