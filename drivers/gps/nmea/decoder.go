package nmea

import (
	"errors"
	"io"
	"time"
)

// Stats joins the framer's and the tracker's counters.
type Stats struct {
	FramerStats
	TrackerStats
}

// Decoder reads a whole stream of receiver output and returns one [Fix] per
// epoch. Sentences with bad checksums or fields are counted in [Stats] and
// skipped.
type Decoder struct {
	f *Framer
	t *Tracker
	// Now stamps [Fix.Received]; nil leaves it zero, which suits files.
	Now func() time.Time
	eof bool
}

// NewDecoder returns a decoder reading from r with the default line limit.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{f: NewFramer(r, 0), t: NewTracker()}
}

// Stats returns the counters so far.
func (d *Decoder) Stats() Stats {
	return Stats{FramerStats: d.f.Stats(), TrackerStats: d.t.Stats()}
}

func (d *Decoder) now() time.Time {
	if d.Now == nil {
		return time.Time{}
	}
	return d.Now()
}

// Next returns the next completed epoch. At the end of the stream it
// returns the last epoch, then io.EOF; a read error other than io.EOF is
// returned as it is, after the last epoch.
func (d *Decoder) Next() (Fix, error) {
	for !d.eof {
		line, err := d.f.Next()
		if err != nil {
			d.eof = true
			if fix, ok := d.t.Flush(d.now()); ok {
				return fix, nil
			}
			return Fix{}, err
		}
		if fix, ok, _ := d.t.Add(line, d.now()); ok {
			return fix, nil
		}
	}
	if _, err := d.f.Next(); err != nil && !errors.Is(err, io.EOF) {
		return Fix{}, err
	}
	return Fix{}, io.EOF
}
