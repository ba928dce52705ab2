package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/agent/config"
)

func cmdCheckConfig(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd check-config", "[--config FILE]",
		"Load and validate the configuration file without touching hardware or the network.\n"+
			"Prints every problem at once, with the line of unknown keys, and exits 1 if there is any.")
	path := fs.String("config", DefaultConfigPath, "configuration `file`")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	c, err := config.Load(*path)
	if err != nil {
		var lines []string
		for _, e := range unjoin(err) {
			lines = append(lines, "  "+strings.TrimPrefix(e.Error(), *path+": "))
		}
		return fmt.Errorf("%s is not valid:\n%s", *path, strings.Join(lines, "\n"))
	}
	fmt.Fprintf(env.Stdout, "%s: OK\n", *path)
	fmt.Fprintf(env.Stdout, "  dps        %s (scope %s)\n", c.DPS.Endpoint, c.DPS.IDScope)
	fmt.Fprintf(env.Stdout, "  identity   %s\n", c.Identity.Cert)
	fmt.Fprintf(env.Stdout, "  state      %s\n", c.StateDir)
	fmt.Fprintf(env.Stdout, "  sensor     %s every %v\n", c.Sensor.Driver, c.Sensor.Interval)
	fmt.Fprintf(env.Stdout, "  gps        %s\n", c.GPS.Driver)
	fmt.Fprintf(env.Stdout, "  telemetry  every %v, %.1f..%.1f °C\n", c.Telemetry.Interval, c.Telemetry.TempMinC, c.Telemetry.TempMaxC)
	fmt.Fprintf(env.Stdout, "  buffer     sync=%s, cap %v\n", c.Buffer.Sync, c.Buffer.MaxBytes)
	return nil
}

// unjoin flattens errors.Join trees (including ones wrapped with a path
// prefix) into one error per problem.
func unjoin(err error) []error {
	type multi interface{ Unwrap() []error }
	if m, ok := err.(multi); ok {
		var out []error
		for _, e := range m.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	if inner := errors.Unwrap(err); inner != nil {
		if _, ok := inner.(multi); ok {
			prefix := strings.TrimSuffix(err.Error(), inner.Error())
			var out []error
			for _, e := range unjoin(inner) {
				out = append(out, fmt.Errorf("%s%w", prefix, e))
			}
			return out
		}
	}
	return []error{err}
}
