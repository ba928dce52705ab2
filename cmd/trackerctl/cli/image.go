package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/sdimage"
)

const imageSummary = "SD card images: stamp a device bundle into the boot partition, inspect, clear"

// imageCommands returns the "trackerctl image" subcommands.
func imageCommands() []cmdline.Command {
	return []cmdline.Command{
		{Name: "stamp", Summary: "write a device bundle into an image's boot partition", Run: cmdImageStamp},
		{Name: "inspect", Summary: "show and check the bundle in an image", Run: cmdImageInspect},
		{Name: "clear", Summary: "wipe the bundle from an image", Run: cmdImageClear},
		{Name: "new-test-image", Summary: "create a small Raspberry Pi OS shaped image for tests and demos", Run: cmdImageNewTest},
	}
}

func cmdImage(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerctl image", imageCommands(), args)
}

// imageError drops the package prefix from sdimage errors for the command
// line; errors.Is still sees the original.
func imageError(err error) error {
	if err == nil {
		return nil
	}
	return &imageCLIError{msg: strings.TrimPrefix(err.Error(), "sdimage: "), err: err}
}

// imageCLIError is an error with a message rewritten for the command line.
type imageCLIError struct {
	msg string
	err error
}

func (e *imageCLIError) Error() string { return e.msg }
func (e *imageCLIError) Unwrap() error { return e.err }

func cmdImageStamp(_ context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl image stamp", "--image FILE.img --device-dir DIR [--force]", `
Write every file of a device bundle ('trackerctl device bundle --out DIR') and a
manifest (device ID, SHA-256 of each file, time, tool version) into /tracker on
the FAT32 boot partition of a Raspberry Pi OS style image (MBR, partition 1
FAT32). The image file is changed in place; nothing is mounted and no root is
needed. Flash it afterwards. At first boot trackerd imports the bundle into
/var/lib/trackerd and deletes the private key from the card.

Unpack a compressed image first (xz -dk FILE.img.xz).`)
	image := fs.String("image", "", "the disk image to stamp (required)")
	dir := fs.String("device-dir", "", "the device bundle directory (required)")
	force := fs.Bool("force", false, "replace a bundle already in the image")
	if err := parseFlagsOnly(env, fs, args, "image", "device-dir"); err != nil {
		return err
	}
	m, err := sdimage.Stamp(*image, *dir, sdimage.Options{Force: *force})
	if err != nil {
		return imageError(err)
	}
	id := m.DeviceID
	if id == "" {
		id = "(no device certificate)"
	}
	fmt.Fprintf(env.Stdout, "stamped %s into %s:/%s, checked by reading it back\n", id, *image, bootstrap.BundleDir)
	for _, f := range m.Files {
		note := ""
		if f.Secret {
			note = "  private key: deleted from the card when the board imports it"
		}
		fmt.Fprintf(env.Stdout, "  %-24s %7d B  sha256 %s%s\n", f.Name, f.Size, f.SHA256[:16], note)
	}
	fmt.Fprintf(env.Stdout, "  %s\nThe image holds a private key now: keep it as safe as the key itself until flashed.\n", bootstrap.ManifestName)
	return nil
}

func cmdImageInspect(_ context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl image inspect", "--image FILE.img [--json]", `
Show the device bundle in an image's boot partition: the manifest, every file
with its certificates' subjects and expiry, and whether each file matches the
manifest. Exits with status 1 when something does not match. Never prints key
material.`)
	image := fs.String("image", "", "the disk image (required)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlagsOnly(env, fs, args, "image"); err != nil {
		return err
	}
	r, err := sdimage.Inspect(*image)
	if err != nil {
		return imageError(err)
	}
	if *asJSON {
		if err := writeJSON(env.Stdout, r); err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
	} else {
		imagePrintReport(env.Stdout, r)
	}
	if !r.OK() {
		return &cmdline.ExitError{Code: 1, Err: fmt.Errorf("the bundle in %s does not match its manifest (%d problems); stamp it again with --force", *image, len(r.Problems))}
	}
	return nil
}

func imagePrintReport(w io.Writer, r *sdimage.Report) {
	fmt.Fprintf(w, "image:      %s\npartition:  %d (label %q)\n", r.Image, r.Partition, r.Label)
	if m := r.Manifest; m != nil {
		fmt.Fprintf(w, "device:     %s\nstamped:    %s by %s\n", imageOrNone(m.DeviceID), m.StampedAt.UTC().Format(time.RFC3339), m.Tool)
	}
	fmt.Fprintf(w, "files in /%s:\n", bootstrap.BundleDir)
	for _, f := range r.Files {
		state := "ok"
		switch {
		case !f.Listed:
			state = "not in manifest"
		case !f.Match:
			state = "MISMATCH"
		}
		fmt.Fprintf(w, "  %-24s %7d B  %s", f.Name, f.Size, state)
		if f.Secret {
			fmt.Fprint(w, "  (private key)")
		}
		fmt.Fprintln(w)
		for _, c := range f.Certs {
			ca := ""
			if c.IsCA {
				ca = " CA"
			}
			fmt.Fprintf(w, "      %s%s, issuer %s, expires %s\n", c.Subject, ca, c.Issuer, c.NotAfter.Format(time.DateOnly))
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem:    %s\n", p)
	}
}

func imageOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func cmdImageClear(_ context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl image clear", "--image FILE.img", `
Overwrite every file of the device bundle in an image's boot partition with
zeros and delete them and the /tracker folder, so the image can be reused or
handed on.`)
	image := fs.String("image", "", "the disk image (required)")
	if err := parseFlagsOnly(env, fs, args, "image"); err != nil {
		return err
	}
	if err := sdimage.Clear(*image); err != nil {
		if errors.Is(err, sdimage.ErrNotStamped) {
			fmt.Fprintf(env.Stdout, "%s carries no device bundle; nothing to clear\n", *image)
			return nil
		}
		return imageError(err)
	}
	fmt.Fprintf(env.Stdout, "cleared the device bundle from %s\n", *image)
	return nil
}

func cmdImageNewTest(_ context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl image new-test-image", "--out FILE.img [--boot-mib N] [--root-mib N]", `
Create a small disk image laid out like Raspberry Pi OS, for trying 'image
stamp' without a real OS image: an MBR, partition 1 FAT32 (label bootfs, with
a config.txt and cmdline.txt), partition 2 a placeholder for the root file
system. It does not boot.`)
	out := fs.String("out", "", "the image file to create (required; must not exist)")
	boot := fs.Int("boot-mib", 64, "size of the FAT32 boot partition in MiB (40 to 2048)")
	root := fs.Int("root-mib", 8, "size of partition 2 in MiB (1 to 2048)")
	if err := parseFlagsOnly(env, fs, args, "out"); err != nil {
		return err
	}
	if *boot < 40 || *boot > 2048 {
		return cmdline.Usagef("-boot-mib %d: choose 40 to 2048 (FAT32 needs at least 65525 clusters)", *boot)
	}
	if *root < 1 || *root > 2048 {
		return cmdline.Usagef("-root-mib %d: choose 1 to 2048", *root)
	}
	if err := sdimage.CreateTestImage(*out, sdimage.TestImageOptions{BootMiB: *boot, RootMiB: *root}); err != nil {
		return imageError(err)
	}
	fmt.Fprintf(env.Stdout, "created %s: partition 1 FAT32 %d MiB at 4 MiB (mtools: -i %s@@4M), partition 2 %d MiB\n", *out, *boot, *out, *root)
	return nil
}
