package bootstrap

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/coldchain/tracker/agent/cmdline"
)

// Default locations on a Raspberry Pi OS board.
const (
	DefaultBootDir  = "/boot/firmware"
	DefaultStateDir = "/var/lib/trackerd"
)

// ImportCommand returns the "import-boot" command of trackerd, which the
// systemd unit runs as root before the daemon starts:
//
//	trackerd import-boot [-boot /boot/firmware] [-state /var/lib/trackerd]
func ImportCommand() cmdline.Command {
	return cmdline.Command{
		Name:    "import-boot",
		Summary: "import a device bundle stamped into the boot partition",
		Run:     runImport,
	}
}

func runImport(_ context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd import-boot", "[-boot DIR] [-state DIR]", `
Import the device bundle that 'trackerctl image stamp' wrote into the boot
partition (DIR/tracker) into the state directory: check every file against
the manifest, copy them (mode 0600), then delete the private key from the
boot partition. Does nothing when there is no bundle or it was imported
already. The systemd unit runs this as root before trackerd starts.`)
	boot := fs.String("boot", DefaultBootDir, "where the boot partition is mounted")
	state := fs.String("state", DefaultStateDir, "the daemon's state directory")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := cmdline.Require(fs, "boot", "state"); err != nil {
		return err
	}
	imported, err := ImportBundle(*boot, *state)
	if err != nil {
		return err
	}
	src := filepath.Join(*boot, BundleDir)
	if !imported {
		fmt.Fprintf(env.Stdout, "no new device bundle in %s\n", src)
		return nil
	}
	m, err := readManifest(*state)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "imported the device bundle of %q (%d files, stamped %s by %s) from %s into %s; private keys removed from the boot partition\n",
		m.DeviceID, len(m.Files), m.StampedAt.UTC().Format("2006-01-02 15:04:05Z"), m.Tool, src, *state)
	return nil
}
