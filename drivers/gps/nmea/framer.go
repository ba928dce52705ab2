package nmea

import (
	"errors"
	"fmt"
	"io"
)

// DefaultMaxLine is the longest sentence, in bytes without the line ending,
// that a [Framer] accepts by default. NMEA 0183 allows 82 characters, but
// proprietary sentences (u-blox PUBX,03, some GSV variants) run longer; 256
// covers every receiver seen so far and still bounds memory.
const DefaultMaxLine = 256

// readSize is how much the framer asks the reader for at a time. A UART
// delivers far less; files and pipes fill it.
const readSize = 4096

// maxEmptyReads is how many (0, nil) reads in a row the framer tolerates
// before it gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// FramerStats counts what a [Framer] saw and threw away.
type FramerStats struct {
	// Bytes is the number of bytes read from the underlying reader.
	Bytes int64
	// Lines is the number of sentence lines returned.
	Lines int64
	// NoiseBytes counts bytes outside any sentence (binary frames, line
	// noise, bytes of dropped lines).
	NoiseBytes int64
	// Partial counts lines cut short by a new '$' or '!' or by a
	// non-printable byte, such as a receiver reset or a binary frame written
	// in the middle of a sentence.
	Partial int64
	// Overlong counts lines dropped because they exceeded the line limit.
	Overlong int64
}

// Framer splits a byte stream into NMEA sentence lines. It returns each line
// without its line ending, starting at '$' or '!'. It does not check
// checksums; [Tracker] does.
type Framer struct {
	r      io.Reader
	max    int
	buf    []byte
	pos    int
	end    int
	line   []byte
	inLine bool
	err    error
	stats  FramerStats
}

// NewFramer returns a framer reading from r that accepts lines of up to
// maxLine bytes; maxLine <= 0 means [DefaultMaxLine].
func NewFramer(r io.Reader, maxLine int) *Framer {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &Framer{
		r:    r,
		max:  maxLine,
		buf:  make([]byte, readSize),
		line: make([]byte, 0, maxLine),
	}
}

// Stats returns the framer's counters.
func (f *Framer) Stats() FramerStats { return f.stats }

// Next returns the next sentence line. The slice is only valid until the
// next call. At the end of the stream Next returns any final unterminated
// line, then the reader's error (io.EOF for a clean end).
func (f *Framer) Next() ([]byte, error) {
	empty := 0
	for {
		for f.pos < f.end {
			c := f.buf[f.pos]
			f.pos++
			if line, ok := f.step(c); ok {
				return line, nil
			}
		}
		if f.err != nil {
			if f.inLine && len(f.line) > 1 {
				// The stream ended without a line ending. Hand the line on:
				// the checksum decides whether it is whole.
				f.inLine = false
				f.stats.Lines++
				return f.line, nil
			}
			if f.inLine {
				f.stats.NoiseBytes += int64(len(f.line))
				f.inLine = false
			}
			return nil, f.err
		}
		n, err := f.r.Read(f.buf)
		if n < 0 || n > len(f.buf) {
			err = fmt.Errorf("nmea: reader returned invalid count %d", n)
			n = 0
		}
		f.pos, f.end = 0, n
		f.stats.Bytes += int64(n)
		if err != nil {
			f.err = err
			continue
		}
		if n == 0 {
			empty++
			if empty >= maxEmptyReads {
				f.err = io.ErrNoProgress
			}
			continue
		}
		empty = 0
	}
}

// step feeds one byte to the line state machine and reports a finished line.
func (f *Framer) step(c byte) ([]byte, bool) {
	switch {
	case c == '$' || c == '!':
		if f.inLine {
			// A new sentence starts before the old one ended: the old one
			// was cut (receiver reset, dropped bytes).
			f.stats.Partial++
			f.stats.NoiseBytes += int64(len(f.line))
		}
		f.inLine = true
		f.line = append(f.line[:0], c)
		return nil, false
	case c == '\r' || c == '\n':
		if !f.inLine {
			return nil, false
		}
		f.inLine = false
		f.stats.Lines++
		return f.line, true
	case !f.inLine:
		f.stats.NoiseBytes++
		return nil, false
	case c < 0x20 || c > 0x7e:
		// Binary bytes inside a sentence: a binary frame overwrote the
		// rest of the line.
		f.stats.Partial++
		f.stats.NoiseBytes += int64(len(f.line)) + 1
		f.inLine = false
		return nil, false
	case len(f.line) >= f.max:
		f.stats.Overlong++
		f.stats.NoiseBytes += int64(len(f.line)) + 1
		f.inLine = false
		return nil, false
	default:
		f.line = append(f.line, c)
		return nil, false
	}
}

// ErrChecksum reports a sentence whose checksum is missing or wrong.
var ErrChecksum = errors.New("nmea: bad checksum")

// checkLine verifies the "*hh" checksum of a sentence line and returns the
// line without it.
func checkLine(line []byte) ([]byte, error) {
	n := len(line)
	if n < 4 || line[n-3] != '*' {
		return nil, ErrChecksum
	}
	want, ok1 := unhex(line[n-2])
	lo, ok2 := unhex(line[n-1])
	if !ok1 || !ok2 {
		return nil, ErrChecksum
	}
	want = want<<4 | lo
	var sum byte
	for _, c := range line[1 : n-3] {
		sum ^= c
	}
	if sum != want {
		return nil, ErrChecksum
	}
	return line[:n-3], nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
