package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/emulator"
)

// TestConformanceNodeSDK runs the official Azure IoT Node.js SDKs (pinned in
// conformance/package.json) against the emulator: enrollment group through
// azure-iot-provisioning-service, X.509 provisioning with a certificate from
// trackerctl pki, telemetry, twin and a direct method through
// azure-iot-device-mqtt and azure-iothub, a disabled individual enrollment
// and a registry delete.
//
// The Node service SDKs cannot put a port in a REST host name, so the HTTPS
// listener runs on 127.0.0.1:443 (CI runs as root).
func TestConformanceNodeSDK(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	conf, err := filepath.Abs("conformance")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, "node_modules", "azure-iothub")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("conformance/node_modules is missing and npm is not installed")
		}
		run(t, ctx, conf, nil, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	}

	// Device certificates from the real CLI.
	work := t.TempDir()
	ctl := filepath.Join(work, "trackerctl")
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go command is not on PATH")
	}
	run(t, ctx, "..", nil, gocmd, "build", "-o", ctl, "./cmd/trackerctl")
	run(t, ctx, work, nil, ctl, "pki", "init-ca", "--out", "ca", "--intermediate")
	run(t, ctx, work, nil, ctl, "pki", "issue", "--ca", "ca", "--id", "node-dev-1", "--out", "devices")

	e, err := emulator.New(emulator.Config{
		StateDir: filepath.Join(work, "emu"), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:443",
		Logger: testLogger(t), DPSPollAfter: -1,
	})
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
	if !strings.HasSuffix(info.DPSConnectionString, "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="+strings.SplitN(info.DPSConnectionString, "SharedAccessKey=", 2)[1]) {
		t.Fatalf("DPS connection string %q should name localhost without a port", info.DPSConnectionString)
	}

	devDir := filepath.Join(work, "devices", "node-dev-1")
	cfg, _ := json.Marshal(map[string]any{
		"dpsConnectionString": info.DPSConnectionString,
		"hubConnectionString": info.HubConnectionString,
		"provisioningHost":    info.DPSHost,
		"idScope":             info.IDScope,
		"groupId":             "conformance",
		"caCert":              filepath.Join(work, "ca", "root.pem"),
		"device": map[string]string{
			"id": "node-dev-1", "chain": filepath.Join(devDir, "chain.pem"),
			"cert": filepath.Join(devDir, "cert.pem"), "key": filepath.Join(devDir, "key.pem"),
		},
	})
	stdout := run(t, ctx, conf, []string{"NODE_EXTRA_CA_CERTS=" + info.ServerCAFile, "CONFORMANCE_CONFIG=" + string(cfg)}, node, "conformance.js")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var res struct {
		OK           bool
		Failed       string
		Error        string
		Group        struct{ Etag, Status string }
		Registration struct{ AssignedHub, DeviceID, Status, Substatus string }
		Telemetry    struct{ MessageID string }
		Twin         struct {
			DesiredInterval  float64
			DesiredVersion   float64
			ReportedFirmware string
			ReportedVersion  float64
		}
		Method struct {
			Status  int
			Payload struct {
				OK   bool
				Echo struct{ Ping float64 }
			}
		}
		Disabled struct {
			Error              *struct{ Name, Message string }
			RegistrationStatus string
		}
		Deleted struct {
			AuthType       string
			Disconnected   bool
			ReconnectError *struct{ Name, Message string }
			GetError       *struct{ Name, Message string }
		}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("node output is not JSON: %v\n%s", err, stdout)
	}
	t.Logf("node result: %s", lines[len(lines)-1])
	if !res.OK {
		t.Fatalf("node SDK run failed at step %q: %s", res.Failed, res.Error)
	}
	if res.Group.Etag == "" || res.Group.Status != "enabled" {
		t.Errorf("group %+v", res.Group)
	}
	if r := res.Registration; r.Status != "assigned" || r.AssignedHub != info.HubHost || r.DeviceID != "node-dev-1" || r.Substatus != "initialAssignment" {
		t.Errorf("registration %+v, want assigned to %s", r, info.HubHost)
	}
	if tw := res.Twin; tw.DesiredInterval != 15 || tw.DesiredVersion != 2 || tw.ReportedFirmware != "1.0.0" || tw.ReportedVersion != 2 {
		t.Errorf("twin %+v", tw)
	}
	if m := res.Method; m.Status != 200 || !m.Payload.OK || m.Payload.Echo.Ping != 1 {
		t.Errorf("method %+v", m)
	}
	if d := res.Disabled; d.Error == nil || d.RegistrationStatus != "disabled" {
		t.Errorf("disabled enrollment: %+v, want a registration error and status disabled", d)
	}
	if d := res.Deleted; d.AuthType != "certificateAuthority" || !d.Disconnected || d.ReconnectError == nil || d.GetError == nil || d.GetError.Name != "DeviceNotFoundError" {
		t.Errorf("registry delete: %+v", d)
	}

	// The SDK's message is in telemetry.jsonl with its properties.
	raw, err := os.ReadFile(info.TelemetryFile)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		ev := decode(t, line)
		if jsonPath(ev, "event", "properties", "system", "message_id") != res.Telemetry.MessageID {
			continue
		}
		found = true
		for path, want := range map[string]any{
			"origin":                                  "node-dev-1",
			"properties/system/content_type":          "application/json",
			"properties/system/content_encoding":      "utf-8",
			"properties/application/shipment":         "S 42",
			"properties/application/alert&level":      "a=b",
			"payload/temp":                            4.2,
			"annotations/iothub-connection-device-id": "node-dev-1",
		} {
			if got := jsonPath(ev, append([]string{"event"}, strings.Split(path, "/")...)...); got != want {
				t.Errorf("telemetry %s = %v, want %v", path, got, want)
			}
		}
	}
	if !found {
		t.Errorf("message %q not in telemetry.jsonl:\n%s", res.Telemetry.MessageID, raw)
	}
	if st, err := e.Registration("node-dev-1"); err != nil || st.Status != emulator.RegDisabled {
		t.Errorf("registration record after the disabled enrollment: %+v %v", st, err)
	}
}

// run executes a command with a bounded context and returns its stdout.
func run(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}
