package cli

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/fleetsim"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/coldchain/tracker/provisioning/service"
)

func cmdFleet(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerctl fleet", []cmdline.Command{
		{Name: "simulate", Summary: "run N simulated trackers provisioning through DPS and streaming at once", Run: cmdFleetSimulate},
	}, args)
}

func cmdFleetSimulate(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl fleet simulate", "[--devices N] [--emulator DIR | --ca DIR --id-scope SCOPE] [flags]",
		`Run N real tracker agents in this process (simulated sensor and GPS, a state directory
each) that provision through DPS with X.509 attestation and stream telemetry, then print a
report: provisioned and failed, registration latency and time to first telemetry
percentiles, messages delivered, memory per device.

Without --emulator or --ca, a local emulator runs in this process. With --emulator DIR the
fleet uses that running emulator; a fleet CA and enrollment group are created for the run
and deprovisioned afterwards (unless --keep). With --ca DIR --id-scope SCOPE the fleet
targets a real DPS whose enrollment group trusts that CA.`)
	n := fs.Int("devices", 100, "number of simulated trackers")
	prefix := fs.String("prefix", "sim-", "registration ID prefix")
	emuDir := fs.String("emulator", "", "use the running emulator whose state `directory` holds emulator.json")
	caDir := fs.String("ca", "", "fleet CA `directory` of an existing enrollment group (real DPS)")
	scope := fs.String("id-scope", "", "DPS ID scope (with --ca)")
	dpsHost := fs.String("dps-host", "global.azure-devices-provisioning.net", "DPS device endpoint (with --ca)")
	trust := fs.String("trust", "", "extra PEM `file` of server CAs to trust (with --ca; Azure's roots are built in)")
	stagger := fs.Duration("stagger", 10*time.Second, "spread the starts over this long, with jitter")
	interval := fs.Duration("interval", 5*time.Second, "telemetry interval of each tracker")
	stream := fs.Duration("stream", 10*time.Second, "keep streaming this long after all are provisioned")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up waiting for provisioning after this long")
	throttle := fs.String("throttle", "none", "hub throttle profile of the in-process emulator: none or s1 (100 messages/s)")
	keep := fs.Bool("keep", false, "keep the enrollment group and devices after the run")
	work := fs.String("work", "", "`directory` for the trackers' state (default: a temporary directory in /dev/shm when it exists, removed afterwards)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 100000 {
		return cmdline.Usagef("--devices must be between 1 and 100000")
	}
	if *throttle != "none" && *throttle != "s1" {
		return cmdline.Usagef("--throttle must be none or s1")
	}
	if *caDir != "" && *scope == "" {
		return cmdline.Usagef("--ca needs --id-scope")
	}
	dir := *work
	if dir == "" {
		// Every real board has its own flash. A thousand simulated boards
		// sharing one disk's fsync queue would measure that disk, not DPS,
		// so their state goes to memory when the machine has a tmpfs.
		base := ""
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
		d, err := os.MkdirTemp(base, "fleet-sim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}

	o := fleetsim.Options{Devices: *n, Prefix: *prefix, WorkDir: filepath.Join(dir, "devices"), Stagger: *stagger,
		Interval: *interval, SensorInterval: *interval, Stream: *stream, Timeout: *timeout, Logger: quietLogger(env)}
	var fleet *service.Fleet
	group := ""
	switch {
	case *caDir != "":
		ca, err := pki.LoadCA(*caDir)
		if err != nil {
			return err
		}
		roots, err := identity.TrustPool(*trust, true)
		if err != nil && *trust != "" {
			return err
		}
		if *trust == "" {
			roots = x509.NewCertPool()
			for _, c := range identity.AzureRoots() {
				roots.AddCert(c)
			}
		}
		o.CA, o.DPSEndpoint, o.IDScope, o.Roots = ca, *dpsHost, *scope, roots
	default:
		stateDir := *emuDir
		if stateDir == "" {
			stateDir = filepath.Join(dir, "emulator")
			emu, err := emulator.New(emulator.Config{StateDir: stateDir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", Logger: quietLogger(env)})
			if err != nil {
				return err
			}
			ectx, cancel := context.WithCancel(ctx)
			defer cancel()
			if err := emu.Start(ectx); err != nil {
				return err
			}
			defer emu.Close()
			if *throttle == "s1" {
				emu.Faults().ThrottleD2C(100)
			}
			fmt.Fprintf(env.Stderr, "emulator running in-process, state in %s\n", stateDir)
		} else if *throttle != "none" {
			return cmdline.Usagef("--throttle applies to the in-process emulator; for a running one use its fault controls")
		}
		info, err := readEmulatorInfo(stateDir, emulatorDeviceFields...)
		if err != nil {
			return err
		}
		sf := &serviceFlags{emulator: stateDir}
		clients, err := sf.connect(env, true, true)
		if err != nil {
			return err
		}
		ca, err := pki.NewMemoryCA(pki.CAOptions{CN: "Fleet simulation CA " + time.Now().UTC().Format("20060102-150405")})
		if err != nil {
			return err
		}
		group = strings.TrimSuffix(*prefix, "-") + "-fleet-sim"
		if _, err := clients.dps.PutGroup(ctx, &service.EnrollmentGroup{
			EnrollmentGroupID: group, Attestation: service.X509GroupAttestation(ca.Issuer), ProvisioningStatus: "enabled",
		}); err != nil {
			return clients.dpsErr(err)
		}
		caPEM, err := os.ReadFile(info.ServerCAFile)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		o.CA, o.DPSEndpoint, o.IDScope, o.Roots = ca, info.DPSHost, info.IDScope, roots
		fleet = &service.Fleet{DPS: clients.dps, Hub: clients.hub}
	}

	bar := newProgressLine(env, "provisioned")
	o.Progress = func(p fleetsim.Progress) {
		bar.update(p.Provisioned, p.Devices, fmt.Sprintf("started %d, streaming %d, failing %d, %s",
			p.Started, p.Streaming, p.Failing, p.Elapsed.Round(time.Second)))
	}
	fmt.Fprintf(env.Stderr, "simulating %d trackers (%s...), starts spread over %v\n", *n, *prefix, *stagger)
	rep, runErr := fleetsim.Run(ctx, o)
	bar.done()
	if rep == nil {
		return runErr
	}
	if fleet != nil && !*keep {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		gr, err := fleet.DeprovisionGroup(cctx, group, service.GroupDeprovisionOptions{Parallel: 16})
		if err != nil {
			fmt.Fprintf(env.Stderr, "cleanup: deprovisioning group %s failed: %v (rerun 'trackerctl group deprovision --id %s')\n", group, err, group)
		} else {
			fmt.Fprintf(env.Stderr, "cleanup: group %s deprovisioned (%d registrations, %d hub devices removed)\n", group, gr.RegistrationsDeleted, gr.DevicesDeleted)
		}
	}
	if *asJSON {
		if err := writeJSON(env.Stdout, rep); err != nil {
			return err
		}
	} else {
		printFleetReport(env, rep)
	}
	if runErr != nil {
		return runErr
	}
	if rep.Failed > 0 {
		return &cmdline.ExitError{Code: 1, Err: fmt.Errorf("%d of %d trackers did not provision", rep.Failed, rep.Devices)}
	}
	return nil
}

func printFleetReport(env *cmdline.Env, r *fleetsim.Report) {
	w := env.Stdout
	fmt.Fprintf(w, "trackers        %d: %d provisioned, %d streaming, %d failed\n", r.Devices, r.Provisioned, r.Streaming, r.Failed)
	fmt.Fprintf(w, "all streaming   after %v\n", r.TimeToAll.Round(10*time.Millisecond))
	p := func(name string, q fleetsim.Percentiles) {
		fmt.Fprintf(w, "%-15s p50 %v  p95 %v  p99 %v  max %v\n", name, q.P50.Round(time.Millisecond), q.P95.Round(time.Millisecond), q.P99.Round(time.Millisecond), q.Max.Round(time.Millisecond))
	}
	p("registration", r.Registration)
	p("first message", r.FirstTelemetry)
	fmt.Fprintf(w, "delivered       %d records in %d messages\n", r.Records, r.Messages)
	fmt.Fprintf(w, "memory/tracker  heap %.1f KiB, RSS %.1f KiB\n", float64(r.HeapPerDevice)/1024, float64(r.RSSPerDevice)/1024)
	for msg, n := range r.Errors {
		fmt.Fprintf(w, "failure x%d      %s\n", n, msg)
	}
}

// quietLogger passes only errors of the many simulated agents through.
func quietLogger(env *cmdline.Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// progressLine draws a one-line progress bar on a terminal and prints
// nothing otherwise.
type progressLine struct {
	env   *cmdline.Env
	what  string
	drawn bool
}

func newProgressLine(env *cmdline.Env, what string) *progressLine {
	return &progressLine{env: env, what: what}
}

func (p *progressLine) update(done, total int, detail string) {
	if !p.env.Terminal || total == 0 {
		return
	}
	const width = 30
	fill := done * width / total
	fmt.Fprintf(p.env.Stderr, "\r[%s%s] %d/%d %s %s\033[K", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, total, p.what, detail)
	p.drawn = true
}

func (p *progressLine) done() {
	if p.drawn {
		fmt.Fprintln(p.env.Stderr)
	}
}
