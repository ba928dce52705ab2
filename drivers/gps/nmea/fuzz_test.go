package nmea

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"testing"
	"testing/iotest"
	"time"
)

// FuzzFramer checks the framer's promises on any input: lines start with
// '$' or '!', hold only printable ASCII, respect the limit, and every input
// byte is accounted for; and the result does not depend on how reads split
// the stream.
func FuzzFramer(f *testing.F) {
	f.Add([]byte("$GPGGA,1*00\r\n\xb5\x62$GPRMC,2*00\n"), 16)
	f.Add([]byte("$A$B\x00$C*00\r"), 0)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		max = max%300 + 1
		if max < 1 {
			max += 300
		}
		frame := func(r io.Reader) ([]string, FramerStats) {
			fr := NewFramer(r, max)
			var lines []string
			for {
				line, err := fr.Next()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("Next: %v", err)
					}
					return lines, fr.Stats()
				}
				lines = append(lines, string(line))
			}
		}
		lines, st := frame(bytes.NewReader(in))
		total := 0
		for _, l := range lines {
			total += len(l)
			if len(l) == 0 || (l[0] != '$' && l[0] != '!') || len(l) > max {
				t.Fatalf("bad line %q (limit %d)", l, max)
			}
			for i := 0; i < len(l); i++ {
				if l[i] < 0x20 || l[i] > 0x7e || (i > 0 && (l[i] == '$' || l[i] == '!')) {
					t.Fatalf("line %q has byte %#x at %d", l, l[i], i)
				}
			}
		}
		eol := int64(bytes.Count(in, []byte{'\r'}) + bytes.Count(in, []byte{'\n'}))
		if st.Bytes != int64(len(in)) || int64(total)+st.NoiseBytes+eol != st.Bytes || st.Lines != int64(len(lines)) {
			t.Fatalf("stats %+v do not add up: %d line bytes, %d line endings, %d lines, %d input bytes",
				st, total, eol, len(lines), len(in))
		}
		lines1, st1 := frame(iotest.OneByteReader(bytes.NewReader(in)))
		if len(lines1) != len(lines) || st1 != st {
			t.Fatalf("byte-at-a-time framing differs: %d lines %+v vs %d lines %+v", len(lines1), st1, len(lines), st)
		}
		for i := range lines {
			if lines[i] != lines1[i] {
				t.Fatalf("line %d: %q vs %q", i, lines[i], lines1[i])
			}
		}
	})
}

// withChecksum replaces a line's checksum with the right one, so the fuzzer
// reaches the parser and the tracker instead of stopping at the checksum.
func withChecksum(line []byte) []byte {
	if i := bytes.IndexByte(line, '*'); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 || line[0] != '$' {
		return line
	}
	var sum byte
	for _, c := range line[1:] {
		sum ^= c
	}
	const hex = "0123456789ABCDEF"
	return append(line[:len(line):len(line)], '*', hex[sum>>4], hex[sum&15])
}

// FuzzTracker feeds arbitrary sentences with valid checksums and checks
// every fix: a known mode, a position only with a fix and inside the
// globe, finite values, and JSON that encodes and decodes.
func FuzzTracker(f *testing.F) {
	f.Add([]byte("$GNRMC,235959.00,A,4807.038,N,01131.000,E,1.9,90.0,311224,,,A\n$GNGGA,000000.00,4807.039,N,01131.001,E,1,07,1.1,545.5,M,46.9,M,,\n$GNGSA,A,2,01,02,03,,,,,,,,,,2.0,1.4,1.7\n"))
	f.Add([]byte("$GPGGA,120000.00,4807.038,N,01131.000,E,0,00,,,M,,M,,\n$GPRMC,120000.000,V,4807.038,N,01131.000,E,0.0,0.0,010124,,,N\n$GNZDA,120001.00,01,01,2024,00,00\n"))
	f.Add([]byte("$GNGNS,053233.438,3114.8821,N,12135.2428,E,ANNA,07,1.2,167.2,8.3,,0000\n$BDVTG,10,T,,M,NaN,N,Inf,K,A\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tr := NewTracker()
		check := func(fix Fix) {
			if fix.Mode < ModeNoFix || fix.Mode > Mode3D {
				t.Fatalf("mode %d", fix.Mode)
			}
			if fix.Mode == ModeNoFix && fix.Has&HasPosition != 0 {
				t.Fatalf("no-fix epoch with a position: %+v", fix)
			}
			if fix.Valid() && (fix.Lat < -90 || fix.Lat > 90 || fix.Lon < -180 || fix.Lon > 180) {
				t.Fatalf("position off the globe: %+v", fix)
			}
			for _, v := range []float64{fix.Lat, fix.Lon, fix.AltMSL, fix.Speed, fix.Track, fix.HDOP} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("non-finite value: %+v", fix)
				}
			}
			b, err := json.Marshal(fix)
			if err != nil {
				t.Fatalf("Marshal(%+v): %v", fix, err)
			}
			var back Fix
			if err := json.Unmarshal(b, &back); err != nil || back.Mode != fix.Mode || back.Has != fix.Has {
				t.Fatalf("round trip of %s: %+v, %v", b, back, err)
			}
		}
		for _, line := range bytes.Split(in, []byte("\n")) {
			fix, ok, _ := tr.Add(withChecksum(line), time.Time{})
			if ok {
				check(fix)
			}
		}
		if fix, ok := tr.Flush(time.Time{}); ok {
			check(fix)
		}
	})
}
