package nmea

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// frameAll returns every line the framer yields and its final error.
func frameAll(t *testing.T, f *Framer) ([]string, error) {
	t.Helper()
	var out []string
	for range 100000 {
		line, err := f.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(line))
	}
	t.Fatal("framer did not stop")
	return nil, nil
}

func TestFramer(t *testing.T) {
	long := "$GPTXT," + strings.Repeat("x", 300) + "*00"
	tests := []struct {
		name  string
		in    string
		max   int
		want  []string
		stats FramerStats
	}{{
		name:  "crlf",
		in:    "$GPGGA,1*00\r\n$GPRMC,2*00\r\n",
		want:  []string{"$GPGGA,1*00", "$GPRMC,2*00"},
		stats: FramerStats{Bytes: 26, Lines: 2},
	}, {
		name:  "lf and cr alone",
		in:    "$A*00\n$B*00\r$C*00\n\n\r",
		want:  []string{"$A*00", "$B*00", "$C*00"},
		stats: FramerStats{Bytes: 20, Lines: 3},
	}, {
		name:  "noise between lines",
		in:    "\xb5\x62\x01\x07\x00\xff$A*00\r\n\xa0\xa2junk\xb0\xb3!AIVDM*00\n",
		want:  []string{"$A*00", "!AIVDM*00"},
		stats: FramerStats{Bytes: 31, Lines: 2, NoiseBytes: 14},
	}, {
		name:  "restart on dollar",
		in:    "$GPGGA,12$GPRMC,3*00\n",
		want:  []string{"$GPRMC,3*00"},
		stats: FramerStats{Bytes: 21, Lines: 1, NoiseBytes: 9, Partial: 1},
	}, {
		name:  "binary inside a line",
		in:    "$GPGGA,12\xb5\x62$ok*00\n",
		want:  []string{"$ok*00"},
		stats: FramerStats{Bytes: 18, Lines: 1, NoiseBytes: 11, Partial: 1},
	}, {
		name:  "overlong line dropped",
		in:    long + "\r\n$B*00\n",
		want:  []string{"$B*00"},
		stats: FramerStats{Bytes: int64(len(long)) + 8, Lines: 1, NoiseBytes: int64(len(long)), Overlong: 1},
	}, {
		name:  "line at the limit kept",
		in:    "$2345678\n",
		max:   8,
		want:  []string{"$2345678"},
		stats: FramerStats{Bytes: 9, Lines: 1},
	}, {
		name:  "unterminated last line",
		in:    "$A*00\n$B*00",
		want:  []string{"$A*00", "$B*00"},
		stats: FramerStats{Bytes: 11, Lines: 2},
	}, {
		name:  "lone dollar at the end",
		in:    "$A*00\n$",
		want:  []string{"$A*00"},
		stats: FramerStats{Bytes: 7, Lines: 1, NoiseBytes: 1},
	}, {
		name:  "empty",
		in:    "",
		stats: FramerStats{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One byte at a time as well as whole: framing must not
			// depend on how the reader splits the stream.
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				f := NewFramer(r, tt.max)
				got, err := frameAll(t, f)
				if !errors.Is(err, io.EOF) {
					t.Errorf("final error = %v, want io.EOF", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("lines (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tt.stats, f.Stats()); diff != "" {
					t.Errorf("stats (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// emptyReader returns (0, nil) forever, like a serial port with a read
// timeout and nothing to say.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestFramerNoProgress(t *testing.T) {
	f := NewFramer(emptyReader{}, 0)
	if _, err := f.Next(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("Next on a reader that never returns data = %v, want io.ErrNoProgress", err)
	}
}

func TestFramerReadError(t *testing.T) {
	boom := errors.New("port gone")
	r := io.MultiReader(strings.NewReader("$A*00\n$B,par"), iotest.ErrReader(boom))
	f := NewFramer(r, 0)
	got, err := frameAll(t, f)
	if !errors.Is(err, boom) {
		t.Fatalf("final error = %v, want %v", err, boom)
	}
	// The cut line is still handed on; its checksum will reject it.
	if diff := cmp.Diff([]string{"$A*00", "$B,par"}, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

func TestCheckLine(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
	}{
		{"$GPGLL,4916.45,N,12311.12,W,225444,A*31", true},
		{"$GPGLL,4916.45,N,12311.12,W,225444,A*3f", false},
		{"$GPGLL,4916.45,N,12311.12,W,225444,A*31x", false},
		{"$GPGLL,4916.45,N,12311.12,W,225444,A", false},
		{"$GPGLL*zz", false},
		{"$*00", true},
		{"$*", false},
	}
	for _, tt := range tests {
		_, err := checkLine([]byte(tt.line))
		if (err == nil) != tt.ok {
			t.Errorf("checkLine(%q) error = %v, want ok=%v", tt.line, err, tt.ok)
		}
	}
}
