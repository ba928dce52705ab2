package gps

import (
	"context"
	"time"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

// Fix is one position epoch; see [nmea.Fix].
type Fix = nmea.Fix

// Source produces fixes. Run blocks until ctx ends, calling emit from the
// goroutine that called Run, and returns nil then; it returns an error only
// for a configuration it can never satisfy.
type Source interface {
	Run(ctx context.Context, emit func(Fix)) error
}

// sleep waits for d or until ctx ends, reporting whether the wait was
// completed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
