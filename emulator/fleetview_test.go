package emulator_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/dps"
	"github.com/coldchain/tracker/provisioning/pki"
)

// deviceView is what one tool says of one device.
type deviceView struct {
	Enrollment   string // "group" or "disenrolled"
	Registration string // registration record status, "" when none
	Hub          string // hub identity status, "" when none
}

// TestNodeSDKViewAgreesWithTrackerctl walks a fleet through loading,
// delivery of one tracker and its reuse, and checks at each step that the
// official Node service SDKs and 'trackerctl device list' see the same
// emulator state.
func TestNodeSDKViewAgreesWithTrackerctl(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs node and the Azure SDKs")
	}
	ci := os.Getenv("CI") == "true"
	node, err := exec.LookPath("node")
	if err != nil {
		if ci {
			t.Fatal("node is not installed; CI must install it (make deps)")
		}
		t.Skip("node is not installed")
	}
	conf, _ := filepath.Abs("conformance")
	if _, err := os.Stat(filepath.Join(conf, "node_modules", "azure-iothub")); err != nil {
		t.Fatal("conformance/node_modules is missing: run 'make deps'")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work := t.TempDir()
	ctl := filepath.Join(work, "trackerctl")
	run(t, ctx, "..", nil, "go", "build", "-o", ctl, "./cmd/trackerctl")

	// The Node service SDKs cannot put a port in a REST host name.
	e, err := emulator.New(emulator.Config{StateDir: filepath.Join(work, "emu"), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:443", Logger: testLogger(t), DPSPollAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		if !ci && errors.Is(err, syscall.EACCES) {
			t.Skipf("cannot listen on port 443 (%v); run as root", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	info := e.Info()
	emuDir := filepath.Join(work, "emu")

	run(t, ctx, work, nil, ctl, "pki", "init-ca", "--out", "ca")
	run(t, ctx, work, nil, ctl, "group", "create", "--emulator", emuDir, "--id", "fleet", "--ca", "ca")
	run(t, ctx, work, nil, ctl, "pki", "issue", "--ca", "ca", "--count", "3", "--prefix", "view-", "--width", "3", "--out", "devices")
	ids := []string{"view-001", "view-002", "view-003"}

	caPEM, err := os.ReadFile(info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	register := func(id string) {
		t.Helper()
		dev, err := pki.LoadDevice(filepath.Join(work, "devices", id))
		if err != nil {
			t.Fatal(err)
		}
		res, err := dps.Register(ctx, dps.Config{Endpoint: info.DPSHost, IDScope: info.IDScope, RegistrationID: id,
			Certificate: dev.TLSCertificate(), RootCAs: roots})
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		if res.DeviceID != id {
			t.Fatalf("register %s: assigned device id %q", id, res.DeviceID)
		}
	}

	compare := func(step string, want map[string]deviceView) {
		t.Helper()
		nodeView := nodeFleetView(t, ctx, conf, node, info)
		ctlView := ctlFleetView(t, ctx, work, ctl, emuDir)
		for _, id := range ids {
			n, c := nodeView[id], ctlView[id]
			if n != c {
				t.Errorf("%s: %s: Node SDKs see %+v, trackerctl device list %+v", step, id, n, c)
			}
			if w, ok := want[id]; ok && n != w {
				t.Errorf("%s: %s is %+v, want %+v", step, id, n, w)
			}
		}
	}

	for _, id := range ids {
		register(id)
	}
	loaded := deviceView{Enrollment: "group", Registration: "assigned", Hub: "enabled"}
	compare("loaded", map[string]deviceView{ids[0]: loaded, ids[1]: loaded, ids[2]: loaded})

	run(t, ctx, work, nil, ctl, "device", "disenroll", "--emulator", emuDir, "--id", ids[0], "--devices", "devices")
	run(t, ctx, work, nil, ctl, "device", "deregister", "--emulator", emuDir, "--id", ids[0])
	delivered := deviceView{Enrollment: "disenrolled"}
	compare("one delivered", map[string]deviceView{ids[0]: delivered, ids[1]: loaded})

	run(t, ctx, work, nil, ctl, "device", "reenroll", "--emulator", emuDir, "--id", ids[0])
	register(ids[0])
	compare("reused", map[string]deviceView{ids[0]: loaded, ids[1]: loaded, ids[2]: loaded})
}

func nodeFleetView(t *testing.T, ctx context.Context, conf, node string, info emulator.Info) map[string]deviceView {
	t.Helper()
	cfg, _ := json.Marshal(map[string]string{"dpsConnectionString": info.DPSConnectionString, "hubConnectionString": info.HubConnectionString, "groupId": "fleet"})
	out := run(t, ctx, conf, []string{"NODE_EXTRA_CA_CERTS=" + info.ServerCAFile, "FLEETVIEW_CONFIG=" + string(cfg)}, node, "fleetview.js")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var v struct {
		OK            bool
		Error         string
		Enrollments   []struct{ ID, Status string }
		Registrations []struct{ ID, Status string }
		Devices       []struct{ ID, Status string }
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &v); err != nil || !v.OK {
		t.Fatalf("fleetview.js: %v %s\n%s", err, v.Error, out)
	}
	view := map[string]deviceView{}
	get := func(id string) deviceView {
		d, ok := view[strings.ToLower(id)]
		if !ok {
			d.Enrollment = "group"
		}
		return d
	}
	for _, e := range v.Enrollments {
		d := get(e.ID)
		if e.Status == "disabled" {
			d.Enrollment = "disenrolled"
		} else {
			d.Enrollment = "individual"
		}
		view[strings.ToLower(e.ID)] = d
	}
	for _, r := range v.Registrations {
		d := get(r.ID)
		d.Registration = r.Status
		view[strings.ToLower(r.ID)] = d
	}
	for _, h := range v.Devices {
		d := get(h.ID)
		d.Hub = h.Status
		view[strings.ToLower(h.ID)] = d
	}
	return view
}

func ctlFleetView(t *testing.T, ctx context.Context, work, ctl, emuDir string) map[string]deviceView {
	t.Helper()
	out := run(t, ctx, work, nil, ctl, "device", "list", "--emulator", emuDir, "--json")
	var rows []struct {
		ID           string `json:"id"`
		Enrollment   string `json:"enrollment"`
		Registration *struct {
			Status string `json:"status"`
		} `json:"registration"`
		Hub *struct {
			Status string `json:"status"`
		} `json:"hub"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("device list --json: %v\n%s", err, out)
	}
	view := map[string]deviceView{}
	for _, r := range rows {
		d := deviceView{Enrollment: r.Enrollment}
		if r.Registration != nil {
			d.Registration = r.Registration.Status
		}
		if r.Hub != nil {
			d.Hub = r.Hub.Status
		}
		view[strings.ToLower(r.ID)] = d
	}
	keys := make([]string, 0, len(view))
	for k := range view {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return view
}
