package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/emulator"
)

const emulatorSummary = "run the local Azure DPS + IoT Hub emulator; inject faults into a running one"

const emulatorAbout = `Runs a local Azure IoT Hub Device Provisioning Service and IoT Hub until
SIGINT or SIGTERM: devices use MQTT over mutual TLS (--mqtt-addr), service
clients the DPS and IoT Hub REST APIs over HTTPS (--https-addr). The state
directory keeps enrollments, registrations and devices across restarts;
DIR/emulator.json lists the endpoints, the ID scope, both service connection
strings and the server CA, and DIR/telemetry.jsonl receives every
device-to-cloud message. A web console on the HTTPS address (/console/)
shows enrollments, registrations, devices and live telemetry with charts
and routes, and offers flush, disenroll and deprovision; log in with the
token printed at start (consoleToken in emulator.json) or the hub
connection string.

Subcommands for a running emulator (they read DIR/emulator.json):
  trackerctl emulator fault --state DIR [fault flags]   inject or clear faults
  trackerctl emulator status --state DIR                connected devices, counters, faults`

// faultFlags are the fault-injection flags shared by the run and fault
// commands.
type faultFlags struct {
	refuseFor     time.Duration
	dpsStatus     int
	dpsRetryAfter time.Duration
	dpsCount      int
	latency       time.Duration
	throttle      float64
}

func (f *faultFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.refuseFor, "refuse-for", 0, "answer every CONNECT with 'server unavailable' for this long")
	fs.IntVar(&f.dpsStatus, "dps-status", 0, "answer the next --dps-count DPS requests with this HTTP status (429, 500, 503...)")
	fs.DurationVar(&f.dpsRetryAfter, "dps-retry-after", 0, "retry-after sent with --dps-status (rounded up to seconds)")
	fs.IntVar(&f.dpsCount, "dps-count", 1, "how many DPS requests get --dps-status")
	fs.DurationVar(&f.latency, "latency", 0, "delay the handling (and PUBACK) of every device publish")
	fs.Float64Var(&f.throttle, "throttle-d2c", 0, "limit device-to-cloud messages per second across the hub (S1: 100)")
}

func (f *faultFlags) spec() emulator.FaultSpec {
	s := emulator.FaultSpec{
		RefuseConnections: emulator.Duration(f.refuseFor),
		Latency:           emulator.Duration(f.latency),
		ThrottleD2C:       f.throttle,
	}
	if f.dpsStatus != 0 {
		s.DPSStatus, s.DPSRetryAfter, s.DPSCount = f.dpsStatus, emulator.Duration(f.dpsRetryAfter), f.dpsCount
	}
	return s
}

func (f *faultFlags) check() error {
	if f.dpsStatus != 0 && (f.dpsStatus < 400 || f.dpsStatus > 599) {
		return cmdline.Usagef("-dps-status %d: use an HTTP error status such as 429 or 503", f.dpsStatus)
	}
	if f.dpsCount <= 0 {
		return cmdline.Usagef("-dps-count %d: use a positive count", f.dpsCount)
	}
	for name, d := range map[string]time.Duration{"refuse-for": f.refuseFor, "dps-retry-after": f.dpsRetryAfter} {
		if d < 0 {
			return cmdline.Usagef("-%s %s: use a positive duration", name, d)
		}
	}
	if f.throttle < 0 {
		return cmdline.Usagef("-throttle-d2c %v: use a positive rate, or 0 for none", f.throttle)
	}
	return nil
}

func cmdEmulator(ctx context.Context, env *cmdline.Env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "fault":
			return cmdEmulatorFault(ctx, env, args[1:])
		case "status":
			return cmdEmulatorStatus(ctx, env, args[1:])
		case "run":
			args = args[1:]
		}
	}
	fs := cmdline.FlagSet(env, "trackerctl emulator", "--state DIR [flags] | fault|status --state DIR [flags]", emulatorAbout)
	state := fs.String("state", "", "the `DIR` holding the emulator's state (created if missing)")
	mqttAddr := fs.String("mqtt-addr", emulator.DefaultMQTTAddr, "MQTT over TLS listen address (DPS and IoT Hub devices)")
	httpsAddr := fs.String("https-addr", emulator.DefaultHTTPSAddr, "HTTPS listen address (service REST APIs and the control API)")
	host := fs.String("host", emulator.DefaultHostName, "host name clients use; put in the server certificate")
	printTelemetry := fs.Bool("print-telemetry", false, "print every device-to-cloud message (one JSON line) on stdout")
	pollAfter := fs.Duration("poll-after", time.Second, "retry-after DPS sends with 'assigning' (0 for at once)")
	assigningPolls := fs.Int("assigning-polls", 0, "polls DPS answers 'assigning' before the final status")
	disabledReply := fs.String("disabled-reply", "status", "DPS answer for a disabled enrollment: 'status' (200, status disabled) or an HTTP error status such as 403")
	var faults faultFlags
	faults.register(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if err := cmdline.Require(fs, "state"); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := faults.check(); err != nil {
		return err
	}
	if *pollAfter < 0 || *assigningPolls < 0 {
		return cmdline.Usagef("-poll-after and -assigning-polls cannot be negative")
	}
	cfg := emulator.Config{
		StateDir:          *state,
		MQTTAddr:          *mqttAddr,
		HTTPSAddr:         *httpsAddr,
		HostName:          *host,
		Logger:            env.Log().With("component", "emulator"),
		DPSPollAfter:      *pollAfter,
		DPSAssigningPolls: *assigningPolls,
		DisabledReply:     *disabledReply,
		Faults:            faults.spec(),
	}
	if *pollAfter == 0 {
		cfg.DPSPollAfter = -1
	}
	if *printTelemetry {
		cfg.LiveOut = env.Stdout
	}
	e, err := emulator.New(cfg)
	if err != nil {
		return emulatorError(err)
	}
	if err := e.Start(ctx); err != nil {
		e.Close()
		return emulatorError(err)
	}
	info := e.Info()
	fmt.Fprintf(env.Stdout, "emulator: ID scope %s\n", info.IDScope)
	fmt.Fprintf(env.Stdout, "emulator: endpoints and connection strings in %s\n", filepath.Join(info.StateDir, emulator.InfoFile))
	fmt.Fprintf(env.Stdout, "emulator: MQTT (DPS %s, hub %s) on %s, HTTPS %s on %s; server CA %s\n",
		info.DPSHost, info.HubHost, info.MQTTAddr, info.HTTPSURL, info.HTTPSAddr, info.ServerCAFile)
	fmt.Fprintf(env.Stdout, "emulator: web console %s (log in with the token %s)\n", info.ConsoleURL, info.ConsoleToken)
	fmt.Fprintf(env.Stdout, "emulator: telemetry appended to %s; stop with Ctrl-C\n", info.TelemetryFile)
	<-ctx.Done()
	if err := e.Close(); err != nil {
		return emulatorError(err)
	}
	fmt.Fprintln(env.Stdout, "emulator: stopped")
	return nil
}

func cmdEmulatorFault(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl emulator fault", "--state DIR [flags]",
		"Injects faults into the running emulator whose state directory is DIR, through its control API, and prints the active faults.")
	state := fs.String("state", "", "the state `DIR` of the running emulator")
	drop := fs.String("drop", "", "close the connections of this device `ID`")
	withhold := fs.String("withhold", "", "withhold PUBACKs from this device `ID` (with -withhold-count or -withhold-for)")
	withholdCount := fs.Int("withhold-count", 0, "how many PUBACKs to withhold")
	withholdFor := fs.Duration("withhold-for", 0, "withhold every PUBACK for this long")
	clear := fs.Bool("clear", false, "remove every fault first")
	var faults faultFlags
	faults.register(fs)
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if err := cmdline.Require(fs, "state"); err != nil {
		return err
	}
	if err := faults.check(); err != nil {
		return err
	}
	if *withhold != "" && *withholdCount <= 0 && *withholdFor <= 0 {
		return cmdline.Usagef("-withhold needs -withhold-count N or -withhold-for DURATION")
	}
	if *withhold == "" && (*withholdCount != 0 || *withholdFor != 0) {
		return cmdline.Usagef("-withhold-count and -withhold-for need -withhold ID")
	}
	spec := faults.spec()
	spec.Clear, spec.DropDevice = *clear, *drop
	spec.WithholdDevice, spec.WithholdCount, spec.WithholdFor = *withhold, *withholdCount, emulator.Duration(*withholdFor)
	cc, err := emulatorControl(*state)
	if err != nil {
		return err
	}
	st, err := cc.ApplyFaults(ctx, spec)
	if err != nil {
		return emulatorError(err)
	}
	return emulatorPrintJSON(env, st)
}

func cmdEmulatorStatus(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl emulator status", "--state DIR",
		"Prints the running emulator's status: connected devices, message and registration counters, active faults.")
	state := fs.String("state", "", "the state `DIR` of the running emulator")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if err := cmdline.Require(fs, "state"); err != nil {
		return err
	}
	cc, err := emulatorControl(*state)
	if err != nil {
		return err
	}
	st, err := cc.Status(ctx)
	if err != nil {
		return emulatorError(err)
	}
	return emulatorPrintJSON(env, st)
}

func emulatorControl(state string) (*emulator.ControlClient, error) {
	info, err := emulator.LoadInfo(state)
	if err != nil {
		return nil, emulatorError(err)
	}
	cc, err := emulator.NewControlClient(info)
	if err != nil {
		return nil, emulatorError(err)
	}
	return cc, nil
}

func emulatorPrintJSON(env *cmdline.Env, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, string(raw))
	return nil
}

// emulatorError drops the package prefix for the one-line CLI message.
func emulatorError(err error) error {
	return &emulatorCLIError{msg: strings.TrimPrefix(err.Error(), "emulator: "), err: err}
}

type emulatorCLIError struct {
	msg string
	err error
}

func (e *emulatorCLIError) Error() string { return e.msg }
func (e *emulatorCLIError) Unwrap() error { return e.err }
