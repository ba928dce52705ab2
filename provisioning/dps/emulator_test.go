package dps

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/provisioning/pki"
)

// The tests in this file register against the in-process emulator of DPS
// (package emulator) over MQTT with mutual TLS on 127.0.0.1.

type emuEnv struct {
	emu   *emulator.Emulator
	info  emulator.Info
	roots *x509.CertPool
	fleet *pki.CA
}

func startEmulator(t testing.TB, cfg emulator.Config) *emuEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against the emulator")
	}
	cfg.StateDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPSAddr = "127.0.0.1:0"
	if cfg.DPSPollAfter == 0 {
		cfg.DPSPollAfter = -1 // retry-after=0: the client's floor decides
	}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := emu.Start(ctx); err != nil {
		cancel()
		t.Fatalf("emulator Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := emu.Close(); err != nil {
			t.Errorf("emulator Close: %v", err)
		}
	})
	info := emu.Info()
	roots, err := identity.TrustPool(info.ServerCAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := pki.NewMemoryCA(pki.CAOptions{CN: "Emulator Test Fleet", Intermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	return &emuEnv{emu: emu, info: info, roots: roots, fleet: fleet}
}

// enrollGroup creates an enabled enrollment group whose signing
// certificate is the fleet root.
func (env *emuEnv) enrollGroup(t testing.TB, id string) {
	t.Helper()
	_, err := env.emu.PutEnrollmentGroup(emulator.EnrollmentGroup{
		EnrollmentGroupID: id,
		Attestation: emulator.AttestationMechanism{
			Type: "x509",
			X509: &emulator.X509Attestation{SigningCertificates: &emulator.X509Certificates{
				Primary: &emulator.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(env.fleet.Root))},
			}},
		},
		ProvisioningStatus: emulator.StatusEnabled,
	}, "")
	if err != nil {
		t.Fatalf("PutEnrollmentGroup: %v", err)
	}
}

func (env *emuEnv) device(t testing.TB, id string, opts pki.DeviceOptions) *pki.Device {
	t.Helper()
	d, err := env.fleet.IssueDevice(id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (env *emuEnv) config(t testing.TB, d *pki.Device) Config {
	return Config{
		Endpoint:         env.info.DPSHost,
		IDScope:          env.info.IDScope,
		RegistrationID:   d.ID,
		Certificate:      d.TLSCertificate(),
		RootCAs:          env.roots,
		ConnectTimeout:   10 * time.Second,
		OperationTimeout: 10 * time.Second,
		MinPollInterval:  time.Millisecond,
		ClientVersion:    "trackerd-test/0.0.1",
		Logger:           testLogger(t),
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// sleepRecorder replaces the client's waits: it records what was asked
// and waits only briefly, so tests can check the intervals without
// spending them.
type sleepRecorder struct {
	mu     sync.Mutex
	asked  []time.Duration
	before func(n int) // called before the n-th wait (from 1)
}

func (r *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.asked = append(r.asked, d)
	n := len(r.asked)
	r.mu.Unlock()
	if r.before != nil {
		r.before(n)
	}
	return sleepCtx(ctx, time.Millisecond)
}

func (r *sleepRecorder) waits() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.asked...)
}

func registerWith(ctx context.Context, cfg Config, sleep func(context.Context, time.Duration) error) (*Result, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	c := &client{s: s, log: s.Logger, sleep: sleep}
	return c.register(ctx)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEmulatorGroupEnrollment(t *testing.T) {
	env := startEmulator(t, emulator.Config{DPSAssigningPolls: 1})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-0001", pki.DeviceOptions{})
	cfg := env.config(t, dev)
	cfg.Payload = map[string]string{"firmwareVersion": "1.2.3", "hardwareModel": "ct-2"}
	ctx := testContext(t)

	res, err := Register(ctx, cfg)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if res.Status != StatusAssigned || res.AssignedHub != env.info.HubHost || res.DeviceID != dev.ID ||
		res.RegistrationID != dev.ID || res.Substatus != "initialAssignment" || res.OperationID == "" || res.ETag == "" {
		t.Errorf("Result = %+v, want assigned to %s as %s (initialAssignment) with operation and etag", res, env.info.HubHost, dev.ID)
	}
	// One 202 to the register, one "assigning" poll, then the final poll.
	if res.Polls != 2 {
		t.Errorf("Polls = %d, want 2", res.Polls)
	}
	if res.CreatedAt.IsZero() || res.UpdatedAt.IsZero() {
		t.Errorf("CreatedAt %v, UpdatedAt %v: want both set", res.CreatedAt, res.UpdatedAt)
	}
	var rs map[string]any
	if err := json.Unmarshal(res.RegistrationState, &rs); err != nil || rs["assignedHub"] != env.info.HubHost {
		t.Errorf("RegistrationState = %s (%v), want the raw object with assignedHub", res.RegistrationState, err)
	}
	st, err := env.emu.Registration(dev.ID)
	if err != nil || st.Status != emulator.RegAssigned || st.DeviceID != dev.ID {
		t.Errorf("emulator registration = %+v, %v; want assigned", st, err)
	}
	if n := env.emu.RegistrationCount(dev.ID); n != 1 {
		t.Errorf("emulator saw %d register requests, want 1", n)
	}

	// The result caches in the identity store and comes back the same.
	store, err := identity.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := store.SaveAssignment(res.Assignment(at)); err != nil {
		t.Fatalf("SaveAssignment: %v", err)
	}
	a, err := store.Assignment()
	if err != nil || a.AssignedHub != res.AssignedHub || a.DeviceID != res.DeviceID || !a.AssignedAt.Equal(at) || a.OperationID != res.OperationID {
		t.Errorf("cached assignment = %+v, %v", a, err)
	}

	// Registering again re-provisions to the same hub.
	res2, err := Register(ctx, cfg)
	if err != nil {
		t.Fatalf("second Register: %v", err)
	}
	if res2.Substatus != "reprovisionedToInitialAssignment" || res2.AssignedHub != res.AssignedHub {
		t.Errorf("second Register = %+v, want reprovisionedToInitialAssignment to the same hub", res2)
	}
}

// The custom payload reaches DPS as sent. The emulator keeps it in its
// registration record without a public accessor, so the test reads the
// record from the emulator's state database once the emulator is closed.
func TestEmulatorPayload(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-payload", pki.DeviceOptions{})
	cfg := env.config(t, dev)
	cfg.Payload = struct {
		Firmware string `json:"firmwareVersion"`
		Model    string `json:"hardwareModel"`
	}{"1.4.2", "ct-2 rev B"}
	if _, err := Register(testContext(t), cfg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := env.emu.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(env.info.StateDir, emulator.StateFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rec struct {
		Payload map[string]string `json:"payload"`
	}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("registrations"))
		if b == nil {
			return errors.New("no registrations bucket")
		}
		raw := b.Get([]byte(strings.ToLower(dev.ID)))
		if raw == nil {
			return errors.New("no registration record for the device")
		}
		return json.Unmarshal(raw, &rec)
	})
	if err != nil {
		t.Fatalf("read the emulator's registration record: %v", err)
	}
	if rec.Payload["firmwareVersion"] != "1.4.2" || rec.Payload["hardwareModel"] != "ct-2 rev B" {
		t.Errorf("payload the emulator received = %v, want firmwareVersion 1.4.2, hardwareModel \"ct-2 rev B\"", rec.Payload)
	}
}

func TestEmulatorPollIntervals(t *testing.T) {
	for _, tt := range []struct {
		name       string
		pollAfter  time.Duration // the emulator's retry-after
		minPoll    time.Duration
		wantWaitOf time.Duration
	}{
		{"retry-after 0 floored to the DPS limit", -1, 0, 2 * time.Second},
		{"retry-after 1 floored to the DPS limit", time.Second, 0, 2 * time.Second},
		{"retry-after 3 honoured", 3 * time.Second, 0, 3 * time.Second},
		{"configured floor", time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := startEmulator(t, emulator.Config{DPSAssigningPolls: 2, DPSPollAfter: tt.pollAfter})
			env.enrollGroup(t, "fleet")
			dev := env.device(t, "tracker-emu-poll", pki.DeviceOptions{})
			cfg := env.config(t, dev)
			cfg.MinPollInterval = tt.minPoll // 0: the default, 2s
			rec := &sleepRecorder{}
			res, err := registerWith(testContext(t), cfg, rec.sleep)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			waits := rec.waits()
			if len(waits) != 3 || res.Polls != 3 {
				t.Fatalf("waits %v, polls %d; want 3 of each (202 to register, two assigning polls)", waits, res.Polls)
			}
			for i, w := range waits {
				if w != tt.wantWaitOf {
					t.Errorf("wait %d = %v, want %v", i+1, w, tt.wantWaitOf)
				}
			}
		})
	}
}

func TestEmulatorDisabledEnrollment(t *testing.T) {
	for _, reply := range []string{"", "403"} {
		t.Run("reply "+reply, func(t *testing.T) {
			env := startEmulator(t, emulator.Config{DisabledReply: reply})
			env.enrollGroup(t, "fleet")
			dev := env.device(t, "tracker-emu-off", pki.DeviceOptions{})
			// A disabled individual enrollment blocks the device although
			// the group would admit it.
			_, err := env.emu.PutEnrollment(emulator.IndividualEnrollment{
				RegistrationID: dev.ID,
				Attestation: emulator.AttestationMechanism{Type: "x509", X509: &emulator.X509Attestation{
					ClientCertificates: &emulator.X509Certificates{Primary: &emulator.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(dev.Leaf))}},
				}},
				ProvisioningStatus: emulator.StatusDisabled,
			}, "")
			if err != nil {
				t.Fatalf("PutEnrollment: %v", err)
			}
			res, err := Register(testContext(t), env.config(t, dev))
			if !errors.Is(err, ErrDisabled) {
				t.Fatalf("Register = %+v, %v; want ErrDisabled", res, err)
			}
			if errors.Is(err, ErrUnauthorized) {
				t.Errorf("disabled reported as unauthorized: %v", err)
			}
			t.Logf("Register: %v", err)
		})
	}
}

func TestEmulatorUnknownCA(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	other, err := pki.NewMemoryCA(pki.CAOptions{CN: "Unenrolled Root"})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := other.IssueDevice("tracker-emu-stranger", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Register(testContext(t), env.config(t, dev))
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Register = %v, want ErrUnauthorized", err)
	}
	var fe *FailedError
	if errors.As(err, &fe) && (fe.Status != 401 || fe.ErrorCode != 401002 || fe.TrackingID == "") {
		t.Errorf("FailedError = %+v, want status 401, code 401002 and a tracking ID", fe)
	}
	t.Logf("Register: %v", err)
}

func TestEmulatorExpiredDeviceCert(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	now := time.Now()
	dev := env.device(t, "tracker-emu-old", pki.DeviceOptions{NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)})
	_, err := Register(testContext(t), env.config(t, dev))
	if !errors.Is(err, ErrUnauthorized) || !errors.Is(err, ErrDeviceCertExpired) {
		t.Fatalf("Register = %v, want ErrUnauthorized and ErrDeviceCertExpired", err)
	}
	if !strings.Contains(err.Error(), dev.Leaf.NotAfter.UTC().Format(time.RFC3339)) {
		t.Errorf("error %q does not give the certificate's expiry", err)
	}
	t.Logf("Register: %v", err)
}

func TestEmulatorWrongScope(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-scope", pki.DeviceOptions{})
	cfg := env.config(t, dev)
	cfg.IDScope = "0ne00NOTTHIS"
	_, err := Register(testContext(t), cfg)
	var ce *ConnackError
	if !errors.As(err, &ce) || !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrDeviceCertExpired) {
		t.Fatalf("Register = %v, want a ConnackError matching ErrUnauthorized only", err)
	}
}

func TestEmulatorServerUnavailable(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	env.emu.Faults().RefuseConnections(time.Hour)
	dev := env.device(t, "tracker-emu-busy", pki.DeviceOptions{})
	_, err := Register(testContext(t), env.config(t, dev))
	var ce *ConnackError
	if !errors.As(err, &ce) || ce.Code != 3 || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Register = %v, want CONNACK 3, not unauthorized", err)
	}
}

func TestEmulatorThrottled(t *testing.T) {
	t.Run("retried within Register", func(t *testing.T) {
		env := startEmulator(t, emulator.Config{})
		env.enrollGroup(t, "fleet")
		dev := env.device(t, "tracker-emu-429a", pki.DeviceOptions{})
		if err := env.emu.Faults().DPSStatus(429, 3*time.Second, 2); err != nil {
			t.Fatal(err)
		}
		rec := &sleepRecorder{}
		res, err := registerWith(testContext(t), env.config(t, dev), rec.sleep)
		if err != nil {
			t.Fatalf("Register = %v, want success after two throttled answers", err)
		}
		if res.AssignedHub != env.info.HubHost {
			t.Errorf("AssignedHub = %q", res.AssignedHub)
		}
		waits := rec.waits()
		if len(waits) < 2 || waits[0] != 3*time.Second || waits[1] != 3*time.Second {
			t.Errorf("waits = %v, want two of 3s (the retry-after) first", waits)
		}
		if n := env.emu.RegistrationCount(dev.ID); n != 1 {
			t.Errorf("emulator processed %d registrations, want 1 (the throttled ones were not)", n)
		}
	})
	t.Run("returned to the caller", func(t *testing.T) {
		env := startEmulator(t, emulator.Config{})
		env.enrollGroup(t, "fleet")
		dev := env.device(t, "tracker-emu-429b", pki.DeviceOptions{})
		if err := env.emu.Faults().DPSStatus(429, 7*time.Second, 5); err != nil {
			t.Fatal(err)
		}
		cfg := env.config(t, dev)
		cfg.ThrottleRetries = -1
		rec := &sleepRecorder{}
		_, err := registerWith(testContext(t), cfg, rec.sleep)
		var te *ThrottledError
		if !errors.As(err, &te) || te.Status != 429 || te.RetryAfter != 7*time.Second {
			t.Fatalf("Register = %v, want ThrottledError 429 retry-after 7s", err)
		}
		if w := rec.waits(); len(w) != 0 {
			t.Errorf("waited %v before returning, want no wait", w)
		}
	})
	t.Run("5xx on a poll", func(t *testing.T) {
		env := startEmulator(t, emulator.Config{DPSAssigningPolls: 1})
		env.enrollGroup(t, "fleet")
		dev := env.device(t, "tracker-emu-503", pki.DeviceOptions{})
		rec := &sleepRecorder{}
		rec.before = func(n int) {
			if n == 1 { // after the register's 202: the next poll fails
				if err := env.emu.Faults().DPSStatus(503, 0, 1); err != nil {
					t.Error(err)
				}
			}
		}
		res, err := registerWith(testContext(t), env.config(t, dev), rec.sleep)
		if err != nil {
			t.Fatalf("Register = %v, want success after a 503 poll", err)
		}
		if res.Polls != 3 {
			t.Errorf("Polls = %d, want 3 (503, assigning, assigned)", res.Polls)
		}
	})
	t.Run("deadline too close to wait", func(t *testing.T) {
		env := startEmulator(t, emulator.Config{})
		env.enrollGroup(t, "fleet")
		dev := env.device(t, "tracker-emu-429c", pki.DeviceOptions{})
		if err := env.emu.Faults().DPSStatus(429, 60*time.Second, 1); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rec := &sleepRecorder{}
		_, err := registerWith(ctx, env.config(t, dev), rec.sleep)
		var te *ThrottledError
		if !errors.As(err, &te) || te.RetryAfter != 60*time.Second {
			t.Fatalf("Register = %v, want ThrottledError with retry-after 60s", err)
		}
		if w := rec.waits(); len(w) != 0 {
			t.Errorf("waited %v although the deadline comes first", w)
		}
	})
}

func TestEmulatorClockAt1970(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-clock", pki.DeviceOptions{})
	cfg := env.config(t, dev)
	cfg.Time = func() time.Time { return time.Unix(0, 0) }
	_, err := Register(testContext(t), cfg)
	if !errors.Is(err, ErrServerUntrusted) {
		t.Fatalf("Register with a 1970 clock = %v, want ErrServerUntrusted", err)
	}
	// The agent's best-known time (say, from GPS) lets the board provision
	// although its system clock is wrong.
	known := time.Now().Add(time.Hour)
	cfg.Time = func() time.Time { return known }
	if _, err := Register(testContext(t), cfg); err != nil {
		t.Fatalf("Register with a good Time = %v", err)
	}
}

func TestEmulatorPubackWithheld(t *testing.T) {
	env := startEmulator(t, emulator.Config{})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-silent", pki.DeviceOptions{})
	env.emu.Faults().WithholdPubacks(dev.ID, 1)
	cfg := env.config(t, dev)
	cfg.OperationTimeout = 300 * time.Millisecond
	_, err := Register(testContext(t), cfg)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Register = %v, want ErrTimeout", err)
	}
}

func TestEmulatorConnectionDropped(t *testing.T) {
	env := startEmulator(t, emulator.Config{DPSAssigningPolls: 5})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-drop", pki.DeviceOptions{})
	rec := &sleepRecorder{}
	rec.before = func(n int) {
		if n == 2 {
			if !env.emu.Faults().DropDevice(dev.ID) {
				t.Error("DropDevice found no connection")
			}
		}
	}
	_, err := registerWith(testContext(t), env.config(t, dev), rec.sleep)
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("Register = %v, want ErrConnectionLost", err)
	}
}

func TestEmulatorCancel(t *testing.T) {
	env := startEmulator(t, emulator.Config{DPSAssigningPolls: 1000})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-cancel", pki.DeviceOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &sleepRecorder{}
	rec.before = func(n int) {
		if n == 3 {
			cancel()
		}
	}
	_, err := registerWith(ctx, env.config(t, dev), rec.sleep)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Register = %v, want context.Canceled", err)
	}
}

func TestEmulatorMaxPolls(t *testing.T) {
	env := startEmulator(t, emulator.Config{DPSAssigningPolls: 1000})
	env.enrollGroup(t, "fleet")
	dev := env.device(t, "tracker-emu-slow", pki.DeviceOptions{})
	cfg := env.config(t, dev)
	cfg.MaxPolls = 4
	rec := &sleepRecorder{}
	_, err := registerWith(testContext(t), cfg, rec.sleep)
	if !errors.Is(err, ErrStillAssigning) {
		t.Fatalf("Register = %v, want ErrStillAssigning", err)
	}
	if n := len(rec.waits()); n != 4 {
		t.Errorf("waited %d times, want 4 (one per poll)", n)
	}
}

// BenchmarkRegister measures one registration against the emulator, from
// TLS dial to assigned hub (a group enrollment, one poll), with the poll
// wait removed: ns/op is the protocol and crypto cost. On a real board
// add the poll interval (2 s or DPS's retry-after).
func BenchmarkRegister(b *testing.B) {
	env := startEmulator(b, emulator.Config{})
	env.enrollGroup(b, "fleet")
	dev := env.device(b, "tracker-bench-0001", pki.DeviceOptions{})
	cfg := env.config(b, dev)
	cfg.Logger = nil
	ctx := b.Context()
	noWait := func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	b.ResetTimer()
	for b.Loop() {
		if _, err := registerWith(ctx, cfg, noWait); err != nil {
			b.Fatal(err)
		}
	}
}
