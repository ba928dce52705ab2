package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/drivers/gps/nmea"
)

var gpsCommands = []cmdline.Command{
	{Name: "decode", Summary: "decode raw receiver output into one JSON fix per epoch", Run: cmdGPSDecode},
}

func cmdGPS(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerd gps", gpsCommands, args)
}

func cmdGPSDecode(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd gps decode", "[-stats] [FILE|-]", `
Decode raw GNSS receiver output (NMEA 0183, possibly mixed with binary
protocol frames) from FILE, or from standard input when FILE is "-" or
missing, and print one JSON object per fix epoch (a distinct UTC fix time)
with gpsd's TPV names: time, mode (1 no fix, 2 2D, 3 3D), lat, lon, altMSL,
speed (m/s), track (degrees true), hdop and sats. Epochs before the receiver
has sent a date are skipped.`)
	stats := fs.Bool("stats", false, "print sentence and error counters to standard error at the end")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return cmdline.Usagef("gps decode takes one FILE (or - for standard input), got %d", fs.NArg())
	}
	var in io.Reader = env.Stdin
	name := "standard input"
	if p := fs.Arg(0); p != "" && p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		defer f.Close()
		in, name = f, p
	}
	if in == nil {
		return cmdline.Usagef("no standard input; name a FILE")
	}
	out := bufio.NewWriter(env.Stdout)
	enc := json.NewEncoder(out)
	d := nmea.NewDecoder(in)
	var last nmea.Fix
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("decode: read %s: %w", name, err)
		}
		if f.Has&nmea.HasTime == 0 || (n > 0 && f.Time.Equal(last.Time)) {
			continue
		}
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		last = f
		n++
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("decode: write: %w", err)
	}
	if *stats {
		fmt.Fprintf(env.Stderr, "%d epochs printed; %s\n", n, formatStats(d.Stats()))
	}
	return nil
}

// formatStats is the one-line counter summary shared with diag gps.
func formatStats(s nmea.Stats) string {
	return fmt.Sprintf("%d bytes, %d sentences, %d checksum errors, %d parse errors, %d ignored, %d noise bytes, %d cut lines, %d overlong, %d epochs (%d without fix)",
		s.Bytes, s.Sentences, s.ChecksumErrors, s.ParseErrors, s.Ignored, s.NoiseBytes, s.Partial, s.Overlong, s.Epochs, s.NoFix)
}
