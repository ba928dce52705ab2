// Package cli implements trackerctl, the operator's tool for a fleet of
// container trackers: the X.509 PKI, enrollment management against DPS and
// IoT Hub, deprovisioning, SD image stamping, the local cloud emulator and the
// fleet simulator.
//
// Each subcommand lives in its own file and is listed in [Commands]. Commands
// write only to the streams in their [cmdline.Env], so tests run them
// in-process.
package cli

import (
	"context"
	"fmt"

	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/agent/cmdline"
)

const about = `trackerctl manages a fleet of cold-chain container trackers: certificates,
DPS enrollment, IoT Hub identities, SD images, and a local Azure emulator.`

// Commands returns trackerctl's top-level commands.
func Commands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "version", Summary: "print version, commit and Go version", Run: cmdVersion},
		{Name: "pki", Summary: pkiSummary, Run: cmdPKI},
		{Name: "group", Summary: "DPS enrollment groups: create, show, list, delete, deprovision", Run: cmdGroup},
		{Name: "device", Summary: "devices: list, show, disenroll, reenroll, deregister, deprovision", Run: cmdDevice},
		{Name: "image", Summary: imageSummary, Run: cmdImage},
		{Name: "emulator", Summary: emulatorSummary, Run: cmdEmulator},
		{Name: "fleet", Summary: "simulate a fleet of trackers provisioning and streaming at once", Run: cmdFleet},
		{Name: "report", Summary: reportSummary, Run: cmdReport},
	}
}

// Main runs trackerctl with args (without the program name) and returns the
// process exit status.
func Main(ctx context.Context, args []string, env *cmdline.Env) int {
	return cmdline.Dispatch(ctx, "trackerctl", about, Commands(), args, env)
}

func cmdVersion(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl version", "", "Print the version, source commit and Go version.")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, buildinfo.String("trackerctl"))
	return nil
}
