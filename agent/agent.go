package agent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/agent/clock"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/agent/localapi"
	"github.com/coldchain/tracker/agent/sdnotify"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/buffer"
	"github.com/coldchain/tracker/telemetry/hub"
	"github.com/coldchain/tracker/telemetry/publisher"
)

// Deps are the parts of an Agent a caller may supply instead of having
// them built from the config: the fleet simulator runs many agents in one
// process with simulated drivers, and tests inject their own.
type Deps struct {
	// Env and GPS replace the drivers named in the config.
	Env EnvSensor
	GPS FixSource
	// Logger is the agent's logger; Level its handler's level (for the
	// log-level command). Both optional.
	Logger *slog.Logger
	Level  *slog.LevelVar
	// Notifier reports readiness and watchdog to systemd; nil disables it.
	Notifier *sdnotify.Notifier
	// NoLocalAPI skips the unix-socket API (many agents in one process).
	NoLocalAPI bool
	// System overrides the system clock (tests of boards at 1970).
	System func() time.Time
	// Identity and Roots replace the identity files and the trust bundle
	// named in the config (simulated devices keep them in memory).
	Identity *identity.Identity
	Roots    *x509.CertPool
}

// Agent is the tracker daemon. Create it with [New] and call [Agent.Run]
// once.
type Agent struct {
	cfg    *config.Config
	log    *slog.Logger
	level  *slog.LevelVar
	deps   Deps
	clock  *clock.Clock
	store  *identity.Store
	id     *identity.Identity
	roots  *x509.CertPool
	buf    *bufferStore
	pub    *publisher.Publisher
	samp   *sampler
	ship   *shipmentState
	boot   string
	start  time.Time
	notify *sdnotify.Notifier
	super  *sdnotify.Supervisor

	reprovision chan struct{} // a request to clear the assignment and register again

	mu       sync.Mutex
	settings Settings
	prov     provState
	client   *hub.Client // the current hub connection's client, nil while unassigned
	warnings []Warning
	gpsErr   string
}

type provState struct {
	state       string
	lastErr     string
	nextAttempt time.Time
	attempts    int
	assignment  *identity.Assignment
}

// New checks the configuration's identity and opens the state directory,
// the clock and the buffer. It fails early, with a message saying what to
// fix, on a missing or unusable identity, trust bundle or state directory.
func New(cfg *config.Config, deps Deps) (*Agent, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	level := deps.Level
	if level == nil {
		level = new(slog.LevelVar)
	}
	a := &Agent{cfg: cfg, log: log, level: level, deps: deps, start: time.Now(),
		reprovision: make(chan struct{}, 1), settings: settingsFromConfig(cfg)}
	a.boot = newBootID()

	store, err := identity.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a.store = store
	a.clock = clock.New(clock.Options{
		FloorFile:   filepath.Join(cfg.StateDir, "clock.json"),
		BuildTime:   buildinfo.BuildTime(),
		TrustSystem: cfg.Clock.TrustSystem,
		UseGPS:      cfg.Clock.UseGPS,
		System:      deps.System,
	})
	if dir := cfg.Identity.BootImportDir; dir != "" {
		imported, err := bootstrap.ImportBundle(dir, cfg.StateDir)
		if err != nil {
			// The identity already in the state directory (if any) still
			// works; say what is wrong with the card.
			log.Error("importing the identity bundle from the boot partition failed", "dir", dir, "err", err)
		} else if imported {
			log.Info("imported the identity bundle from the boot partition; its key was removed from the card", "dir", dir)
		}
	}
	if a.id = deps.Identity; a.id == nil {
		if a.id, err = a.loadIdentity(); err != nil {
			return nil, err
		}
	}
	trust := cfg.Identity.TrustBundle
	if _, err := os.Stat(trust); err != nil {
		// A bundle imported from the boot partition brings its own.
		if alt := filepath.Join(cfg.StateDir, filepath.Base(trust)); fileExists(alt) {
			trust = alt
		}
	}
	if a.roots = deps.Roots; a.roots == nil {
		if a.roots, err = identity.TrustPool(trust, true); err != nil {
			return nil, fmt.Errorf("trust bundle %s: %w", trust, err)
		}
	}
	if a.ship, err = loadShipment(filepath.Join(cfg.StateDir, "shipment.json")); err != nil {
		return nil, err
	}
	if sealed := a.ship.isSealed(a.settings.ShipmentID); sealed {
		log.Info("configured shipment is sealed; records carry no shipment until the next loading", "shipment", a.settings.ShipmentID)
		a.settings.ShipmentID = ""
	}
	var rec *buffer.Recovery
	if a.buf, rec, err = openBuffer(cfg, log); err != nil {
		return nil, err
	}
	if rec != nil {
		// An unclean shutdown or a damaged file: the technician sees it
		// in trackerd status, not only in the journal.
		a.warn(rec.String())
	}
	a.pub = publisher.New(a.buf, senderFunc(a.send), publisher.Options{
		DeviceID:        a.id.RegistrationID,
		MaxRecords:      cfg.Hub.BatchRecords,
		MaxMessageBytes: int(cfg.Hub.MaxMessageBytes),
		DrainRate:       cfg.Hub.DrainRate,
		Retime:          a.retime,
		Now:             func() time.Time { t, _ := a.clock.Now(); return t },
		Logger:          log.With("component", "publisher"),
	})
	a.notify = deps.Notifier
	a.super = sdnotify.NewSupervisor(a.notify, log.With("component", "watchdog"))
	return a, nil
}

// loadIdentity imports a bundle from the boot partition if one is waiting,
// then uses the identity in the state directory, else the configured files.
func (a *Agent) loadIdentity() (*identity.Identity, error) {
	if id, err := a.store.Identity(); err == nil {
		return id, nil
	} else if !errors.Is(err, identity.ErrNoIdentity) {
		return nil, fmt.Errorf("identity in %s: %w", a.store.Dir(), err)
	}
	id, err := identity.LoadFiles(a.cfg.Identity.Cert, a.cfg.Identity.Key)
	if err != nil {
		return nil, fmt.Errorf("device identity: %w", err)
	}
	return id, nil
}

// Run runs the agent until ctx ends. It returns nil on a clean shutdown.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := a.buf.Close(); cerr != nil && err == nil {
			err = cerr
		}
		_ = a.clock.Save(true)
	}()
	log := a.log
	leaf := a.id.Leaf()
	log.Info("trackerd starting", "version", buildinfo.Version, "registration_id", a.id.RegistrationID,
		"cert_expiry", leaf.NotAfter.UTC(), "sha1", a.id.Thumbprint())
	if t := a.clock.TLSTime(); t.After(leaf.NotAfter) {
		a.warn(fmt.Sprintf("device certificate expired on %s: issue a new one with 'trackerctl pki issue'", leaf.NotAfter.UTC().Format(time.DateOnly)))
	}

	g, ctx := errgroup.WithContext(ctx)
	var api *localapi.Server
	if !a.deps.NoLocalAPI {
		var err error
		if api, err = localapi.Listen(a.cfg.RuntimeDir, a); err != nil {
			return err
		}
		g.Go(func() error { return api.Serve(ctx) })
	}

	// A read may take up to its 5 s timeout; beyond that plus three
	// intervals, the sampler is stuck (a hung bus ignoring its deadline).
	sampBeat, _ := a.super.Register("sampler", 3*a.cfg.Sensor.Interval.D()+10*time.Second)
	pubBeat, _ := a.super.Register("publisher", 2*time.Minute)
	provBeat, _ := a.super.Register("provisioner", 2*time.Minute)

	env := a.deps.Env
	gps := a.deps.GPS
	if env == nil || gps == nil {
		henv, hgps, err := openHardware(a.cfg, a.id.RegistrationID, log)
		if err != nil {
			return err
		}
		if env == nil {
			env = henv
		}
		if gps == nil {
			gps = hgps
		}
	}
	samp := &sampler{
		env: env, clock: a.clock, sink: a, log: log.With("component", "sampler"), boot: a.boot,
		interval: func() time.Duration { return min(a.cfg.Sensor.Interval.D(), a.Settings().Interval) },
		settings: a.Settings, beat: sampBeat.Beat, warn: a.warn,
		stale: a.cfg.GPS.StaleAfter.D(),
	}
	a.mu.Lock()
	a.samp = samp
	a.mu.Unlock()
	if gps != nil {
		g.Go(func() error {
			err := gps.Run(ctx, samp.setFix)
			if err != nil && ctx.Err() == nil {
				a.mu.Lock()
				a.gpsErr = err.Error()
				a.mu.Unlock()
				a.warn("gps: " + err.Error())
				log.Error("gps stopped", "err", err)
			}
			return nil // a GPS failure never stops the agent
		})
	}
	g.Go(func() error { return samp.run(ctx) })
	g.Go(func() error { return a.pub.Run(ctx, pubBeat.Beat) })
	g.Go(func() error { return a.provisionLoop(ctx, provBeat.Beat) })
	g.Go(func() error { return a.super.Run(ctx) })
	g.Go(func() error {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := a.clock.Save(false); err != nil {
					log.Warn("persisting the clock floor failed", "err", err)
				}
			}
		}
	})
	if err := a.notify.Ready(); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	err = g.Wait()
	_ = a.notify.Stopping()
	log.Info("trackerd stopped")
	return err
}

// Append implements recordSink: the record goes into the durable buffer,
// then to the live lane.
func (a *Agent) Append(r *telemetry.Record) (uint64, error) {
	seq, err := a.buf.AppendRecord(r)
	if err != nil {
		return 0, err
	}
	a.pub.Live(seq, *r)
	return seq, nil
}

// retime corrects the time of a reading taken before the clock was
// trusted, when it was taken by this run of the agent.
func (a *Agent) retime(r *telemetry.Record) {
	if r.Clock != string(clock.Unsynced) || r.Boot != a.boot {
		return
	}
	if t, ok := a.clock.Retime(time.Duration(r.Mono * float64(time.Second))); ok {
		_, src := a.clock.Now()
		r.Time, r.Clock, r.Retimed = t, string(src), true
	}
}

// Settings returns the current run-time settings.
func (a *Agent) Settings() Settings {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.settings
}

func (a *Agent) warn(msg string) {
	t, _ := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.warnings = append(a.warnings, Warning{Time: t, Msg: msg})
	if len(a.warnings) > maxWarnings {
		a.warnings = a.warnings[len(a.warnings)-maxWarnings:]
	}
}

// SetLogLevel implements localapi.Backend.
func (a *Agent) SetLogLevel(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil || (s != "debug" && s != "info" && s != "warn" && s != "error") {
		return fmt.Errorf("unknown level %q: use debug, info, warn or error", s)
	}
	a.level.Set(l)
	a.log.Info("log level changed", "level", s)
	return nil
}

// Flush implements localapi.Backend.
func (a *Agent) Flush(ctx context.Context) (int, error) { return a.pub.Flush(ctx) }

// Reprovision implements localapi.Backend: the cached assignment is cleared
// and the provisioner registers with DPS again.
func (a *Agent) Reprovision(ctx context.Context) error {
	if err := a.store.ClearAssignment(); err != nil {
		return err
	}
	select {
	case a.reprovision <- struct{}{}:
	default:
	}
	a.log.Info("reprovisioning requested")
	return nil
}

// Status implements localapi.Backend.
func (a *Agent) Status() any { s := a.status(); return &s }

// Snapshot returns the current status.
func (a *Agent) Snapshot() Status { return a.status() }

func (a *Agent) status() Status {
	var st Status
	now, src := a.clock.Now()
	st.Version = buildinfo.Version
	st.Now, st.Started = now, a.start
	leaf := a.id.Leaf()
	st.Identity.RegistrationID = a.id.RegistrationID
	st.Identity.CertSubject = leaf.Subject.String()
	st.Identity.CertIssuer = leaf.Issuer.String()
	st.Identity.CertNotAfter = leaf.NotAfter
	st.Identity.CertSHA1, _ = pki.Thumbprints(leaf)
	st.Clock.Source, st.Clock.Floor = string(src), a.clock.Floor()

	a.mu.Lock()
	p := a.prov
	client := a.client
	set := a.settings
	st.Warnings = append([]Warning{}, a.warnings...)
	gpsErr := a.gpsErr
	samp := a.samp
	a.mu.Unlock()
	st.Provisioning.State = p.state
	st.Provisioning.LastError = p.lastErr
	st.Provisioning.NextAttempt = p.nextAttempt
	st.Provisioning.Attempts = p.attempts
	if p.assignment != nil {
		st.Identity.DeviceID = p.assignment.DeviceID
		st.Identity.Hub = p.assignment.AssignedHub
		st.Provisioning.AssignedAt = p.assignment.AssignedAt
	}
	st.Connection.State = "disconnected"
	if client != nil {
		cs := client.State()
		if cs.Connected {
			st.Connection.State = "connected"
		}
		st.Connection.Since = cs.Since
		st.Connection.LastError = cs.LastError
		st.Connection.Reconnects = cs.Reconnects
	}

	st.Sensor.Driver = a.cfg.Sensor.Driver
	st.GPS.Driver = a.cfg.GPS.Driver
	st.GPS.LastError = gpsErr
	if s := samp; s != nil {
		s.mu.Lock()
		if s.lastEnv != nil {
			t, p := s.lastEnv.TempC, s.lastEnv.PressureHPa
			st.Sensor.TempC, st.Sensor.PressureHPa = &t, &p
		}
		st.Sensor.At = s.envAt
		st.Sensor.LastError = s.envErr
		st.Sensor.Errors = s.envErrs
		st.Sensor.Healthy = s.envErr == "" && s.lastEnv != nil
		s.mu.Unlock()
		if f := s.currentFix(); f != nil {
			st.GPS.Mode, st.GPS.Sats, st.GPS.FixTime = f.Mode, f.Sats, f.Time
			lat, lon := f.Lat, f.Lon
			st.GPS.Lat, st.GPS.Lon = &lat, &lon
			st.GPS.Healthy = !f.Stale
		}
	}

	bs := a.buf.Stats()
	st.Buffer.Sync = a.cfg.Buffer.Sync
	st.Buffer.Depth, st.Buffer.Bytes = bs.Depth, bs.Bytes
	st.Buffer.OldestUnsent, st.Buffer.NextSeq, st.Buffer.Evicted = bs.Oldest, bs.NextSeq, bs.Evicted

	ps := a.pub.Stats()
	st.Telemetry.ShipmentID = set.ShipmentID
	st.Telemetry.Interval = set.Interval.String()
	st.Telemetry.Sent, st.Telemetry.Messages, st.Telemetry.LastSent, st.Telemetry.Alerts = ps.Records, ps.Messages, ps.LastSent, ps.Alerts
	return st
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func newBootID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// senderFunc adapts a function to publisher.Sender.
type senderFunc func(ctx context.Context, m publisher.Message) error

func (f senderFunc) Send(ctx context.Context, m publisher.Message) error { return f(ctx, m) }

// send publishes m on the current hub connection.
func (a *Agent) send(ctx context.Context, m publisher.Message) error {
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: not provisioned", publisher.ErrNotSent)
	}
	err := c.Publish(ctx, hub.Message{
		Body: m.Body, MessageID: m.MessageID, ContentType: "application/json", ContentEncoding: "utf-8",
		CreationTime: m.Created, Properties: m.Properties,
	})
	switch {
	case errors.Is(err, hub.ErrNotConnected):
		return fmt.Errorf("%w: %w", publisher.ErrNotSent, err)
	case errors.Is(err, hub.ErrInvalidMessage):
		return fmt.Errorf("%w: %w", publisher.ErrRejected, err)
	}
	return err
}

var _ localapi.Backend = (*Agent)(nil)
