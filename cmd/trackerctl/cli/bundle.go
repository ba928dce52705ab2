package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/identity"
	"github.com/coldchain/tracker/provisioning/pki"
)

// Bundle file names: what a board needs and nothing more.
const (
	bundleConfig = "config.toml"
	bundleChain  = "device.chain.pem"
	bundleKey    = "device.key.pem"
	bundleTrust  = "trust.pem"
)

func cmdDeviceBundle(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device bundle",
		"--ca DIR --id ID --out DIR (--emulator DIR | --id-scope SCOPE [--dps-host HOST]) [flags]",
		`Write the directory one board needs: its certificate chain and key (issued now by the
fleet CA), the trust bundle for the DPS and IoT Hub servers, and a config.toml with paths
relative to the directory, so that

    trackerd run --config DIR/config.toml

works as is, and 'trackerctl image stamp' can put it on an SD card. With --simulate the
config selects the simulated sensor and GPS (demos, fleet tests).`)
	caDir := fs.String("ca", "", "fleet CA `directory` (from 'trackerctl pki init-ca')")
	id := fs.String("id", "", "registration `ID` (the certificate CN)")
	out := fs.String("out", "", "output `directory` (created)")
	emu := fs.String("emulator", "", "emulator state `directory`: take the DPS endpoint, ID scope and server CA from its emulator.json")
	scope := fs.String("id-scope", "", "DPS `ID scope` (real Azure)")
	dpsHost := fs.String("dps-host", "global.azure-devices-provisioning.net", "DPS device endpoint `host[:port]` (real Azure)")
	simulate := fs.Bool("simulate", false, "use the simulated sensor and GPS instead of hardware")
	stateDir := fs.String("state-dir", "state", "state_dir in the config (relative to the bundle, or absolute such as /var/lib/trackerd for a board)")
	runtimeDir := fs.String("runtime-dir", "run", "runtime_dir in the config (relative to the bundle, or /run/trackerd for a board)")
	shipment := fs.String("shipment", "", "shipment id the records carry until the twin sets one")
	interval := fs.Duration("interval", 60*time.Second, "telemetry interval")
	sensorInterval := fs.Duration("sensor-interval", 10*time.Second, "sensor read interval")
	days := fs.Int("days", 365*3, "device certificate validity in `days`")
	force := fs.Bool("force", false, "replace an existing bundle")
	if err := parseFlags(env, fs, args, "ca", "id", "out"); err != nil {
		return err
	}
	if (*emu == "") == (*scope == "") {
		return cmdline.Usagef("give either --emulator DIR or --id-scope SCOPE")
	}
	if err := pki.ValidateRegistrationID(*id); err != nil {
		return err
	}
	ca, err := pki.LoadCA(*caDir)
	if err != nil {
		return err
	}
	trust := identity.AzureRootsPEM
	endpoint := *dpsHost
	idScope := *scope
	if *emu != "" {
		info, err := readEmulatorInfo(*emu, emulatorDeviceFields...)
		if err != nil {
			return err
		}
		caPEM, err := os.ReadFile(info.ServerCAFile)
		if err != nil {
			return fmt.Errorf("emulator server CA: %w", err)
		}
		trust = string(caPEM) + trust
		endpoint, idScope = info.DPSHost, info.IDScope
	}
	if _, err := os.Stat(filepath.Join(*out, bundleConfig)); err == nil && !*force {
		return fmt.Errorf("%s already holds a bundle; use --force to replace it", *out)
	}
	dev, err := ca.IssueDevice(*id, pki.DeviceOptions{Days: *days})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	if err := pki.WriteKeyFile(filepath.Join(*out, bundleKey), dev.Key); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(*out, bundleChain), pki.EncodePEM(dev.Chain...), 0o644); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(*out, bundleTrust), []byte(trust), 0o644); err != nil {
		return err
	}
	cfg := bundleConfigText(bundleParams{
		Endpoint: endpoint, IDScope: idScope, Simulate: *simulate, StateDir: *stateDir, RuntimeDir: *runtimeDir,
		Shipment: *shipment, Interval: *interval, SensorInterval: *sensorInterval, ID: *id,
	})
	if err := pki.WriteFileAtomic(filepath.Join(*out, bundleConfig), []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "bundle for %s in %s (certificate expires %s)\n  run it: trackerd run --config %s\n",
		*id, *out, dev.Leaf.NotAfter.UTC().Format(time.DateOnly), filepath.Join(*out, bundleConfig))
	return nil
}

type bundleParams struct {
	Endpoint, IDScope, StateDir, RuntimeDir, Shipment, ID string
	Simulate                                              bool
	Interval, SensorInterval                              time.Duration
}

func bundleConfigText(p bundleParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# trackerd configuration for %s, written by trackerctl device bundle.\n", p.ID)
	fmt.Fprintf(&b, "# Paths are relative to this file. See configs/trackerd.example.toml for every key.\n")
	fmt.Fprintf(&b, "state_dir = %q\nruntime_dir = %q\n\n", p.StateDir, p.RuntimeDir)
	fmt.Fprintf(&b, "[identity]\ncert = %q\nkey = %q\ntrust_bundle = %q\n\n", bundleChain, bundleKey, bundleTrust)
	fmt.Fprintf(&b, "[dps]\nendpoint = %q\nid_scope = %q\n\n", p.Endpoint, p.IDScope)
	if p.Simulate {
		fmt.Fprintf(&b, "[sensor]\ndriver = \"sim\"\ninterval = %q\n\n[gps]\ndriver = \"sim\"\n\n", p.SensorInterval.String())
	} else {
		fmt.Fprintf(&b, "[sensor]\ndriver = \"bmx280\"\ninterval = %q\n\n[gps]\ndriver = \"serial\"\nport = \"/dev/gps0\"\n\n", p.SensorInterval.String())
	}
	fmt.Fprintf(&b, "[telemetry]\ninterval = %q\nshipment_id = %q\n", p.Interval.String(), p.Shipment)
	return b.String()
}
