package gps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.bug.st/serial"

	"github.com/coldchain/tracker/drivers/gps/nmea"
)

// Bauds are the serial speeds receivers use.
var Bauds = []int{4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800}

// OpenFunc opens a port for reading. [OpenPort] is the real one.
type OpenFunc func(name string, baud int) (io.ReadCloser, error)

// OpenPort opens a serial port at baud, 8N1, with blocking reads (a read
// timeout would return (0, nil), which readers take for a stuck stream; a
// blocked read is ended by Close instead). Modem lines are left as they
// are, so ptys work too.
func OpenPort(name string, baud int) (io.ReadCloser, error) {
	p, err := serial.Open(name, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("gps: open %s at %d baud: %w", name, baud, err)
	}
	if err := p.SetReadTimeout(serial.NoTimeout); err != nil {
		return nil, errors.Join(fmt.Errorf("gps: set read timeout on %s: %w", name, err), p.Close())
	}
	return p, nil
}

// SerialOpts configures a [Serial] source.
type SerialOpts struct {
	// Port is the device path, e.g. /dev/ttyS0 or /dev/ttyACM0.
	Port string
	// Baud is the speed; 0 means 9600, the NMEA 0183 default.
	Baud int
	// MinBackoff and MaxBackoff bound the wait before reopening a port
	// that failed (default 1 s doubling to 1 min).
	MinBackoff, MaxBackoff time.Duration
	// QuietFlush ends an epoch when the receiver has said nothing for this
	// long after a burst (default 300 ms), instead of waiting for the next
	// epoch to begin.
	QuietFlush time.Duration
	// StaleAfter is how long [Serial.Latest] keeps a fix fresh (default
	// 10 s).
	StaleAfter time.Duration
	// Open opens the port (default [OpenPort]); tests substitute it.
	Open OpenFunc
	// Now is the clock for Fix.Received (default time.Now).
	Now func() time.Time
}

// Stats describes a [Serial] source for a technician or a status page.
type Stats struct {
	nmea.Stats
	// Port and Baud are the configured port.
	Port string
	Baud int
	// Connected is true while the port is open.
	Connected bool
	// Opens counts successful opens, OpenFailures failed ones, Drops the
	// times an open port failed (unplugged, I/O error).
	Opens, OpenFailures, Drops int64
	// LastError is the most recent port error.
	LastError string
	// LastSentence is when the last valid sentence arrived.
	LastSentence time.Time
}

// Serial reads a GNSS receiver on a serial port.
type Serial struct {
	o SerialOpts

	mu     sync.Mutex
	stats  Stats
	framer nmea.FramerStats  // of the current port
	track  nmea.TrackerStats // of the current port
	base   nmea.Stats        // accumulated over earlier ports
	latest Fix
}

var _ Source = (*Serial)(nil)

// NewSerial checks opts and returns a source.
func NewSerial(opts SerialOpts) (*Serial, error) {
	o := opts
	if o.Port == "" {
		return nil, errors.New("gps: no serial port given (e.g. /dev/ttyS0)")
	}
	if o.Baud == 0 {
		o.Baud = 9600
	}
	ok := false
	for _, b := range Bauds {
		ok = ok || b == o.Baud
	}
	if !ok {
		return nil, fmt.Errorf("gps: unsupported baud rate %d (use one of %v)", o.Baud, Bauds)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(o.MinBackoff, time.Minute)
	}
	if o.QuietFlush <= 0 {
		o.QuietFlush = 300 * time.Millisecond
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 10 * time.Second
	}
	if o.Open == nil {
		o.Open = OpenPort
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Serial{o: o, stats: Stats{Port: o.Port, Baud: o.Baud}}, nil
}

// Stats returns the counters.
func (s *Serial) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Stats = addStats(s.base, nmea.Stats{FramerStats: s.framer, TrackerStats: s.track})
	return st
}

// Latest returns the last fix, marked stale when no epoch arrived within
// StaleAfter, and false before the first one.
func (s *Serial) Latest() (Fix, bool) {
	s.mu.Lock()
	f := s.latest
	s.mu.Unlock()
	if f.Mode == nmea.ModeUnknown {
		return Fix{}, false
	}
	return f.At(s.o.Now(), s.o.StaleAfter), true
}

// Run opens the port and emits fixes until ctx ends, reopening the port
// with backoff whenever it fails. It returns nil when ctx ends.
func (s *Serial) Run(ctx context.Context, emit func(Fix)) error {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		port, err := s.o.Open(s.o.Port, s.o.Baud)
		if err != nil {
			s.mu.Lock()
			s.stats.OpenFailures++
			s.stats.LastError = err.Error()
			s.mu.Unlock()
		} else {
			s.mu.Lock()
			s.stats.Opens++
			s.stats.Connected = true
			s.mu.Unlock()
			heard, err := s.session(ctx, port, emit)
			s.mu.Lock()
			s.stats.Connected = false
			if err != nil && ctx.Err() == nil {
				s.stats.Drops++
				s.stats.LastError = err.Error()
			}
			s.mu.Unlock()
			if heard {
				backoff = 0
			}
		}
		backoff = min(max(2*backoff, s.o.MinBackoff), s.o.MaxBackoff)
		if !sleep(ctx, backoff) {
			break
		}
	}
	return nil
}

// session reads one open port until it fails or ctx ends, and reports
// whether any valid sentence arrived.
func (s *Serial) session(ctx context.Context, port io.ReadCloser, emit func(Fix)) (heard bool, err error) {
	lines := make(chan []byte, 32)
	readErr := make(chan error, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f := nmea.NewFramer(port, 0)
		for {
			line, err := f.Next()
			s.mu.Lock()
			s.framer = f.Stats()
			s.mu.Unlock()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("gps: %s: end of stream", s.o.Port)
				}
				readErr <- err
				return
			}
			select {
			case lines <- append([]byte(nil), line...):
			case <-done:
				return
			}
		}
	}()
	tr := nmea.NewTracker()
	defer func() {
		// Close first: it is what ends a read blocked in the kernel.
		cerr := port.Close()
		close(done)
		wg.Wait()
		s.mu.Lock()
		s.base = addStats(s.base, nmea.Stats{FramerStats: s.framer, TrackerStats: tr.Stats()})
		s.framer, s.track = nmea.FramerStats{}, nmea.TrackerStats{}
		s.mu.Unlock()
		if err == nil && cerr != nil && ctx.Err() == nil {
			err = fmt.Errorf("gps: close %s: %w", s.o.Port, cerr)
		}
	}()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	deliver := func(f Fix) {
		s.mu.Lock()
		s.latest = f
		s.mu.Unlock()
		emit(f)
	}
	for {
		select {
		case <-ctx.Done():
			return heard, nil
		case err := <-readErr:
			return heard, err
		case line := <-lines:
			now := s.o.Now()
			f, ok, perr := tr.Add(line, now)
			s.mu.Lock()
			s.track = tr.Stats()
			if perr == nil {
				heard = true
				s.stats.LastSentence = now
			}
			s.mu.Unlock()
			if ok {
				deliver(f)
			}
			quiet.Reset(s.o.QuietFlush)
		case <-quiet.C:
			if f, ok := tr.Flush(s.o.Now()); ok {
				s.mu.Lock()
				s.track = tr.Stats()
				s.mu.Unlock()
				deliver(f)
			}
		}
	}
}

func addFramer(a, b nmea.FramerStats) nmea.FramerStats {
	return nmea.FramerStats{
		Bytes: a.Bytes + b.Bytes, Lines: a.Lines + b.Lines, NoiseBytes: a.NoiseBytes + b.NoiseBytes,
		Partial: a.Partial + b.Partial, Overlong: a.Overlong + b.Overlong,
	}
}

func addStats(a, b nmea.Stats) nmea.Stats {
	return nmea.Stats{
		FramerStats: addFramer(a.FramerStats, b.FramerStats),
		TrackerStats: nmea.TrackerStats{
			Sentences: a.Sentences + b.Sentences, ChecksumErrors: a.ChecksumErrors + b.ChecksumErrors,
			ParseErrors: a.ParseErrors + b.ParseErrors, Ignored: a.Ignored + b.Ignored,
			Epochs: a.Epochs + b.Epochs, NoFix: a.NoFix + b.NoFix,
		},
	}
}
