package cli

import (
	"encoding/json"
	"flag"
	"io"
	"strings"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/pki"
)

// parseFlags parses args into fs and checks that the flags named in
// required were given.
func parseFlags(env *cmdline.Env, fs *flag.FlagSet, args []string, required ...string) error {
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	return cmdline.Require(fs, required...)
}

// noArgs refuses positional arguments left after the flags.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// parseFlagsOnly is parseFlags for a command that takes no positional
// arguments.
func parseFlagsOnly(env *cmdline.Env, fs *flag.FlagSet, args []string, required ...string) error {
	if err := parseFlags(env, fs, args, required...); err != nil {
		return err
	}
	return noArgs(fs)
}

// parseID parses the arguments of a command about one device: --id is
// required and must be a valid registration ID, and nothing may follow
// the flags.
func parseID(env *cmdline.Env, fs *flag.FlagSet, args []string) (string, error) {
	if err := parseFlagsOnly(env, fs, args, "id"); err != nil {
		return "", err
	}
	id := fs.Lookup("id").Value.String()
	if err := pki.ValidateRegistrationID(id); err != nil {
		return "", cmdline.Usagef("--id: %v", strings.TrimPrefix(err.Error(), "pki: "))
	}
	return id, nil
}

// writeJSON writes v to w as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
