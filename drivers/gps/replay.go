package gps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

// ErrNoFixes reports a capture without a single dated epoch with a
// position, which cannot be replayed.
var ErrNoFixes = errors.New("gps: capture has no dated fix")

// ReplayOpts configures a [Replay].
type ReplayOpts struct {
	// Speed multiplies the capture's pace: 1 is real time, 10 plays ten
	// epochs a second from a 1 Hz capture. 0 means 1.
	Speed float64
	// Loop starts the capture again after its end, so a short track can
	// feed a long demo.
	Loop bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Replay plays a recorded NMEA capture as a live receiver would: one fix
// per epoch at the capture's pace (scaled by Speed), each stamped with the
// time it is emitted, so the replayed track moves through the present.
type Replay struct {
	fixes []Fix
	span  time.Duration
	o     ReplayOpts
}

var _ Source = (*Replay)(nil)

// OpenReplay reads the capture at path.
func OpenReplay(path string, opts ReplayOpts) (*Replay, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gps: replay: %w", err)
	}
	r, err := NewReplay(bytes.NewReader(b), opts)
	if err != nil {
		return nil, fmt.Errorf("gps: replay %s: %w", path, err)
	}
	return r, nil
}

// NewReplay decodes a capture (NMEA, possibly mixed with binary frames).
// Epochs without a date are dropped, as are epochs that go back in time
// (a capture spliced from two sessions).
func NewReplay(in io.Reader, opts ReplayOpts) (*Replay, error) {
	if opts.Speed < 0 {
		return nil, fmt.Errorf("gps: replay speed %v must be positive", opts.Speed)
	}
	if opts.Speed == 0 {
		opts.Speed = 1
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := nmea.NewDecoder(in)
	r := &Replay{o: opts}
	valid := false
	step := time.Duration(0)
	for {
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if f.Has&nmea.HasTime == 0 {
			continue
		}
		if n := len(r.fixes); n > 0 {
			gap := f.Time.Sub(r.fixes[n-1].Time)
			if gap <= 0 {
				continue
			}
			if step == 0 || gap < step {
				step = gap
			}
		}
		valid = valid || f.Valid()
		r.fixes = append(r.fixes, f)
	}
	if !valid {
		return nil, ErrNoFixes
	}
	if step == 0 {
		step = time.Second
	}
	r.span = r.fixes[len(r.fixes)-1].Time.Sub(r.fixes[0].Time) + step
	return r, nil
}

// Len returns the number of epochs in one pass of the capture.
func (r *Replay) Len() int { return len(r.fixes) }

// Duration returns the length of one pass at speed 1.
func (r *Replay) Duration() time.Duration { return r.span }

// Run emits the capture's fixes at its pace until ctx ends. Without Loop it
// waits for ctx after the last fix.
func (r *Replay) Run(ctx context.Context, emit func(Fix)) error {
	start := r.o.Now()
	t0 := r.fixes[0].Time
	for lap := 0; ; lap++ {
		for _, f := range r.fixes {
			off := time.Duration(lap)*r.span + f.Time.Sub(t0)
			due := start.Add(time.Duration(float64(off) / r.o.Speed))
			if !sleep(ctx, due.Sub(r.o.Now())) {
				return nil
			}
			f.Time = due.UTC()
			f.Received = due
			emit(f)
		}
		if !r.o.Loop {
			<-ctx.Done()
			return nil
		}
	}
}
