package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	envdrv "github.com/coldchain/tracker/drivers/env"
	"github.com/coldchain/tracker/drivers/env/bmx280"
	"github.com/coldchain/tracker/drivers/gps"
	"github.com/coldchain/tracker/drivers/i2cbus"
)

var diagCommands = []cmdline.Command{
	{Name: "gps", Summary: "show live fixes and sentence/checksum counters from a serial receiver", Run: cmdDiagGPS},
	{Name: "i2c", Summary: "scan an I2C bus and read the environment sensor once", Run: cmdDiagI2C},
}

func cmdDiag(ctx context.Context, env *cmdline.Env, args []string) error {
	return cmdline.Sub(ctx, env, "trackerd diag", diagCommands, args)
}

// openI2CBus opens the bus for diag i2c; tests replace it with a fake bus.
var openI2CBus bmx280.BusOpener = i2cbus.Open

func cmdDiagGPS(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd diag gps", "--port DEV [--baud N] [--every D] [--duration D]", `
Open the receiver's serial port and print every fix as it arrives, with the
sentence, checksum and framing counters every few seconds. The port is
reopened if it disappears. Stop with Ctrl-C, or set --duration. Stop the
trackerd service first: the port can only be opened once.`)
	port := fs.String("port", "", "serial device of the receiver, e.g. /dev/ttyS0 or /dev/ttyACM0 (required)")
	baud := fs.Int("baud", 9600, fmt.Sprintf("serial speed, one of %v", gps.Bauds))
	every := fs.Duration("every", 5*time.Second, "how often to print the counters")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if err := cmdline.Require(fs, "port"); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *every <= 0 {
		return cmdline.Usagef("--every must be positive, got %v", *every)
	}
	src, err := gps.NewSerial(gps.SerialOpts{Port: *port, Baud: *baud})
	if err != nil {
		return cmdline.Usagef("%v", err)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(env.Stdout, "reading %s at %d baud; Ctrl-C to stop\n", *port, *baud)
	var mu sync.Mutex // env.Stdout is shared by the fix and counter printers
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(f gps.Fix) {
			mu.Lock()
			fmt.Fprintf(env.Stdout, "fix %s\n", f)
			mu.Unlock()
		})
	}()
	tk := time.NewTicker(*every)
	defer tk.Stop()
	report := func() {
		st := src.Stats()
		state := "open"
		if !st.Connected {
			state = "NOT OPEN"
			if st.LastError != "" {
				state += " (" + st.LastError + ")"
			}
		}
		mu.Lock()
		fmt.Fprintf(env.Stdout, "port %s, %d opens, %d drops; %s\n", state, st.Opens, st.Drops, formatStats(st.Stats))
		mu.Unlock()
	}
	for {
		select {
		case err := <-done:
			report()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return err
			}
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-tk.C:
			report()
		}
	}
}

func cmdDiagI2C(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd diag i2c", "[--bus N] [--addr 0x76]", `
Scan an I2C bus for devices (a one-byte read at each address, like
"i2cdetect -r"), then probe the BMP280/BME280 and read it once. Stop the
trackerd service first if it reads the same sensor.`)
	bus := fs.String("bus", "", `I2C bus number or /dev/i2c-N path ("" for the lowest-numbered bus)`)
	addr := fs.Uint("addr", 0, "sensor address, 0x76 or 0x77 (0 tries both)")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *addr != 0 && *addr != 0x76 && *addr != 0x77 {
		return cmdline.Usagef("--addr must be 0x76 or 0x77, got %#x", *addr)
	}
	b, err := openI2CBus(*bus)
	if err != nil {
		return fmt.Errorf("%w; check the bus number (ls /dev/i2c-*) and that trackerd's user is in the i2c group", err)
	}
	found, err := i2cbus.Scan(ctx, b)
	cerr := b.Close()
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("close bus: %w", cerr)
	}
	fmt.Fprintf(env.Stdout, "bus %s: ", b)
	if len(found) == 0 {
		fmt.Fprintln(env.Stdout, "no device answered (check wiring and power)")
	} else {
		var s []string
		for _, a := range found {
			s = append(s, fmt.Sprintf("%#02x", a))
		}
		fmt.Fprintf(env.Stdout, "%d device(s) at %s\n", len(found), strings.Join(s, " "))
	}
	dev, err := bmx280.Open(openI2CBus, *bus, uint16(*addr), nil)(ctx)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	defer dev.Close()
	r, err := dev.Read(ctx)
	if err != nil {
		return fmt.Errorf("read sensor: %w", err)
	}
	name := "sensor"
	if s, ok := dev.(interface {
		Model() string
		Addr() uint16
	}); ok {
		name = fmt.Sprintf("%s at %#02x", s.Model(), s.Addr())
	}
	fmt.Fprintf(env.Stdout, "%s: %s\n", name, r)
	if err := r.Check(envdrv.BoschLimits); err != nil {
		return fmt.Errorf("sensor fault: %w", err)
	}
	fmt.Fprintln(env.Stdout, "reading is plausible")
	return nil
}
