// Package cli implements the trackerd command line: the service itself
// ("trackerd run") and the commands a technician uses on the serial console
// (status, diag, gps decode, check-config, version).
package cli

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/agent/cmdline"
)

const about = `trackerd is the container tracker daemon: it samples temperature, pressure
and position, provisions itself through Azure DPS, and streams to IoT Hub.`

// DefaultConfigPath is where trackerd looks for its configuration.
const DefaultConfigPath = "/etc/trackerd/config.toml"

// Commands returns trackerd's commands.
func Commands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "run", Summary: "run the daemon (the systemd service)", Run: cmdRun},
		bootstrap.ImportCommand(),
		{Name: "version", Summary: "print version, commit and Go version", Run: cmdVersion},
		{Name: "check-config", Summary: "validate the configuration file and exit", Run: cmdCheckConfig},
		{Name: "status", Summary: "show the running daemon's state (identity, link, sensors, buffer)", Run: cmdStatus},
		{Name: "reprovision", Summary: "clear the cached assignment and register with DPS again", Run: cmdReprovision},
		{Name: "flush", Summary: "send every buffered record now and wait for the buffer to drain", Run: cmdFlush},
		{Name: "log-level", Summary: "change the running daemon's log level", Run: cmdLogLevel},
		{Name: "gps", Summary: "GPS tools: decode raw receiver output", Run: cmdGPS},
		{Name: "diag", Summary: "field diagnostics: diag gps (serial receiver), diag i2c (sensor bus)", Run: cmdDiag},
	}
}

// Main runs trackerd with args (without the program name) and returns the
// process exit status.
func Main(ctx context.Context, args []string, env *cmdline.Env) int {
	return MainWithLevel(ctx, args, env, new(slog.LevelVar))
}

// MainWithLevel is Main with the level variable of the root logger's
// handler, so "trackerd run" can change the log level at run time.
func MainWithLevel(ctx context.Context, args []string, env *cmdline.Env, level *slog.LevelVar) int {
	logLevel = level
	return cmdline.Dispatch(ctx, "trackerd", about, Commands(), args, env)
}

// logLevel is the root handler's level, set once by MainWithLevel.
var logLevel = new(slog.LevelVar)

func cmdVersion(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd version", "", "Print the version, source commit and Go version.")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, buildinfo.String("trackerd"))
	return nil
}
