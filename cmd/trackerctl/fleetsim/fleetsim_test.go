package fleetsim_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/coldchain/tracker/cmd/trackerctl/fleetsim"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

// startFleet runs an emulator with an enrollment group for a new CA.
func startFleet(t *testing.T) (*emulator.Emulator, *pki.CA, *x509.CertPool) {
	t.Helper()
	emu, err := emulator.New(emulator.Config{StateDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := emu.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); emu.Close() })
	info := emu.Info()
	caPEM, err := os.ReadFile(info.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = roots
	cs, err := service.ParseConnectionString(info.DPSConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	dps, err := service.NewDPS(cs, service.Options{HTTPClient: &http.Client{Transport: tr}, BaseURL: info.HTTPSURL})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewMemoryCA(pki.CAOptions{CN: "sim test CA"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dps.PutGroup(context.Background(), &service.EnrollmentGroup{EnrollmentGroupID: "sim", Attestation: service.X509GroupAttestation(ca.Issuer), ProvisioningStatus: "enabled"}); err != nil {
		t.Fatal(err)
	}
	return emu, ca, roots
}

func TestFleetProvisionsAndStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	emu, ca, roots := startFleet(t)
	info := emu.Info()
	var progress []fleetsim.Progress
	rep, err := fleetsim.Run(context.Background(), fleetsim.Options{
		Devices: 8, Prefix: "t-", CA: ca, DPSEndpoint: info.DPSHost, IDScope: info.IDScope, Roots: roots,
		WorkDir: t.TempDir(), Stagger: 500 * time.Millisecond, Interval: 500 * time.Millisecond,
		Stream: time.Second, Timeout: time.Minute,
		Progress: func(p fleetsim.Progress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Provisioned != 8 || rep.Streaming != 8 || rep.Failed != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Registration.P50 <= 0 || rep.Registration.P99 < rep.Registration.P50 || rep.FirstTelemetry.P50 < rep.Registration.P50 {
		t.Errorf("latencies inconsistent: %+v %+v", rep.Registration, rep.FirstTelemetry)
	}
	// What the devices say they delivered, the hub received.
	got := map[string]bool{}
	for _, m := range emu.Telemetry() {
		got[m.DeviceID] = true
	}
	if len(got) != 8 {
		t.Errorf("the hub got telemetry from %d devices, want 8", len(got))
	}
	if rep.Messages == 0 || uint64(len(emu.Telemetry())) < rep.Messages {
		t.Errorf("report says %d messages, the hub has %d", rep.Messages, len(emu.Telemetry()))
	}
	if len(progress) == 0 || progress[len(progress)-1].Provisioned != 8 {
		t.Errorf("progress never reached 8 provisioned: %+v", progress)
	}
}

func TestFleetReportsDevicesThatCannotProvision(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	emu, _, roots := startFleet(t)
	stranger, err := pki.NewMemoryCA(pki.CAOptions{CN: "not enrolled"})
	if err != nil {
		t.Fatal(err)
	}
	info := emu.Info()
	rep, err := fleetsim.Run(context.Background(), fleetsim.Options{
		Devices: 2, Prefix: "x-", CA: stranger, DPSEndpoint: info.DPSHost, IDScope: info.IDScope, Roots: roots,
		WorkDir: t.TempDir(), Interval: time.Second, Timeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 2 || rep.Provisioned != 0 || len(rep.Errors) == 0 {
		t.Fatalf("report %+v, want 2 failures with reasons", rep)
	}
}
