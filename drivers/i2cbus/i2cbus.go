// Package i2cbus opens Linux I2C buses (/dev/i2c-N) through periph.io's
// sysfs driver and scans them for devices.
//
// Only the sysfs I2C driver is registered (a blank import of
// periph.io/x/host/v3/sysfs), never host.Init, which on ARM would also load
// every board driver (bcm283x, allwinner, …). The package starts no
// goroutines; a bus returned by [Open] belongs to the caller, who closes it.
package i2cbus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	_ "periph.io/x/host/v3/sysfs" // registers /dev/i2c-* buses
)

// ErrNoBus reports that the bus does not exist (no /dev/i2c-N, or the
// i2c-dev kernel module is not loaded).
var ErrNoBus = errors.New("i2cbus: no such bus")

var (
	initOnce sync.Once
	initErr  error
)

// initDrivers registers the sysfs drivers once. driverreg.Init also reports
// drivers it skipped (sysfs-gpio needs ioctl-gpio, which is not linked in);
// that is expected, so only a failure of the I2C driver itself counts.
func initDrivers() error {
	initOnce.Do(func() {
		st, err := driverreg.Init()
		if st == nil {
			initErr = fmt.Errorf("i2cbus: init periph: %w", err)
			return
		}
		for _, f := range st.Failed {
			if f.D != nil && f.D.String() == "sysfs-i2c" {
				initErr = fmt.Errorf("i2cbus: init periph: %w", f.Err)
			}
		}
	})
	return initErr
}

// Open opens bus name: a number ("1"), a path ("/dev/i2c-1"), or "" for the
// lowest-numbered bus.
func Open(name string) (i2c.BusCloser, error) {
	if err := initDrivers(); err != nil {
		return nil, err
	}
	if len(i2creg.All()) == 0 {
		return nil, fmt.Errorf("%w: no /dev/i2c-* device (is the i2c-dev module loaded and I2C enabled?)", ErrNoBus)
	}
	b, err := i2creg.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrNoBus, name, err)
	}
	return b, nil
}

// Names lists the buses present, as "/dev/i2c-N".
func Names() []string {
	if initDrivers() != nil {
		return nil
	}
	var out []string
	for _, r := range i2creg.All() {
		out = append(out, r.Name)
	}
	return out
}

// Scan probes every 7-bit address from 0x08 to 0x77 with a one-byte read
// (like "i2cdetect -r") and returns those that acknowledged. Reserved
// addresses are skipped. A device that answers a read is left as it was.
func Scan(ctx context.Context, bus i2c.Bus) ([]uint16, error) {
	var found []uint16
	var b [1]byte
	for addr := uint16(0x08); addr <= 0x77; addr++ {
		if err := ctx.Err(); err != nil {
			return found, err
		}
		if bus.Tx(addr, nil, b[:]) == nil {
			found = append(found, addr)
		}
	}
	return found, nil
}
