package nmea

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// feed runs lines (without checksums; feed adds them) through a tracker and
// returns every fix, flushing at the end.
func feed(t *testing.T, lines ...string) []Fix {
	t.Helper()
	tr := NewTracker()
	var out []Fix
	for _, l := range lines {
		s := strings.TrimSpace(sentence(l))
		f, ok, err := tr.Add([]byte(s), time.Time{})
		if err != nil {
			t.Fatalf("Add(%q): %v", s, err)
		}
		if ok {
			out = append(out, f)
		}
	}
	if f, ok := tr.Flush(time.Time{}); ok {
		out = append(out, f)
	}
	return out
}

func TestNoFixSentencesGiveNoPosition(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
	}{
		{"gga quality 0", []string{"GPGGA,120000.00,,,,,0,00,99.99,,,,,,", "GPRMC,120000.00,V,,,,,,,010124,,,N"}},
		{"gga quality 0 with stale position", []string{"GPGGA,120000.00,4807.038,N,01131.000,E,0,00,,,M,,M,,", "GPRMC,120000.00,V,,,,,,,010124,,,N"}},
		{"rmc void with stale position", []string{"GPRMC,120000.000,V,4807.038,N,01131.000,E,0.0,0.0,010124,,,N"}},
		{"rmc A but FAA mode N", []string{"GNRMC,120000.00,A,4807.038,N,01131.000,E,0.0,0.0,010124,,,N"}},
		{"gll void", []string{"GPRMC,120000.00,V,,,,,,,010124,,,N", "GPGLL,4807.038,N,01131.000,E,120000.00,V,N"}},
		{"gns NN", []string{"GNGNS,120000.00,4807.038,N,01131.000,E,NN,00,,,,,", "GNZDA,120000.00,01,01,2024,00,00"}},
		{"gsa says no fix", []string{"GPRMC,120000.00,A,4807.038,N,01131.000,E,0.0,0.0,010124,,,A", "GPGSA,A,1,,,,,,,,,,,,,,,"}},
		{"gga fix but rmc void in the same epoch", []string{"GPGGA,120000.00,4807.038,N,01131.000,E,1,05,1.0,500.0,M,,M,,", "GPRMC,120000.00,V,4807.038,N,01131.000,E,0.0,0.0,010124,,,N"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := feed(t, tt.lines...)
			if len(got) != 1 {
				t.Fatalf("got %d fixes, want 1: %v", len(got), got)
			}
			f := got[0]
			if f.Mode != ModeNoFix || f.Valid() || f.Has&HasPosition != 0 || f.Lat != 0 || f.Lon != 0 {
				t.Errorf("fix = %+v, want mode 1 without a position", f)
			}
			want := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
			if f.Has&HasTime == 0 || !f.Time.Equal(want) {
				t.Errorf("time = %v (has %v), want %v", f.Time, f.Has&HasTime != 0, want)
			}
		})
	}
}

func TestTrackerEpochs(t *testing.T) {
	got := feed(t,
		// GN talker, then GP: the talker must not matter.
		"GNRMC,235959.00,A,4807.03800,N,01131.00000,E,1.944,90.0,311224,,,A",
		"GNGGA,235959.00,4807.03800,N,01131.00000,E,1,07,1.1,545.4,M,46.9,M,,",
		"GNGSA,A,3,01,02,03,04,,,,,,,,,2.0,1.1,1.7,1",
		"GNGSA,A,3,65,66,67,,,,,,,,,,2.0,1.1,1.7,2",
		// Midnight: GGA of the new day comes before any RMC with the date.
		"GPGGA,000000.00,4807.03900,N,01131.00100,E,1,07,1.1,545.5,M,46.9,M,,",
		"GPVTG,91.0,T,,M,,N,7.2,K,A",
		"GPGGA,000001.00,4807.04000,N,01131.00200,E,1,,,545.6,M,46.9,M,,",
		"GPGSA,A,2,01,02,03,,,,,,,,,,2.0,1.4,1.7",
	)
	want := []Fix{{
		Time: time.Date(2024, 12, 31, 23, 59, 59, 0, time.UTC), Mode: Mode3D,
		Lat: 48 + 7.038/60, Lon: 11 + 31.0/60, AltMSL: 545.4, Speed: 1.944 * knotsToMPS, Track: 90,
		HDOP: 1.1, Sats: 7, Has: HasTime | HasPosition | HasAltitude | HasSpeed | HasTrack | HasHDOP | HasSats,
	}, {
		Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Mode: Mode3D,
		Lat: 48 + 7.039/60, Lon: 11 + 31.001/60, AltMSL: 545.5, Speed: 2, Track: 91,
		HDOP: 1.1, Sats: 7, Has: HasTime | HasPosition | HasAltitude | HasSpeed | HasTrack | HasHDOP | HasSats,
	}, {
		// GSA says 2D: no altitude. No sats or HDOP in GGA: from GSA.
		Time: time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC), Mode: Mode2D,
		Lat: 48 + 7.040/60, Lon: 11 + 31.002/60, HDOP: 1.4, Sats: 3,
		Has: HasTime | HasPosition | HasHDOP | HasSats,
	}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
		t.Errorf("fixes (-want +got):\n%s", diff)
	}
}

func TestTrackerNoDate(t *testing.T) {
	got := feed(t, "GPGGA,101010.00,4807.038,N,01131.000,E,1,05,1.0,10.0,M,,M,,")
	if len(got) != 1 || got[0].Has&HasTime != 0 || !got[0].Valid() {
		t.Fatalf("fixes = %+v, want one valid fix without a time (no date heard)", got)
	}
}

func TestTrackerErrors(t *testing.T) {
	tr := NewTracker()
	if _, _, err := tr.Add([]byte("$GPGGA,1*00"), time.Time{}); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad checksum: err = %v, want ErrChecksum", err)
	}
	if _, _, err := tr.Add([]byte("$GPGGA,101010.00,4807.038,N"), time.Time{}); !errors.Is(err, ErrChecksum) {
		t.Errorf("cut line: err = %v, want ErrChecksum", err)
	}
	bad := strings.TrimSpace(sentence("GPGGA,101010.00,4807.038,N,01131.000,E,1,xx,1.0,10.0,M,,M,,"))
	if _, _, err := tr.Add([]byte(bad), time.Time{}); !errors.Is(err, ErrSyntax) {
		t.Errorf("bad field: err = %v, want ErrSyntax", err)
	}
	gsv := strings.TrimSpace(sentence("GPGSV,1,1,01,08,63,065,50"))
	if _, _, err := tr.Add([]byte(gsv), time.Time{}); err != nil {
		t.Errorf("GSV: err = %v, want nil (ignored)", err)
	}
	want := TrackerStats{Sentences: 2, ChecksumErrors: 2, ParseErrors: 1, Ignored: 1}
	if diff := cmp.Diff(want, tr.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if _, ok := tr.Flush(time.Time{}); ok {
		t.Error("Flush after only bad sentences returned a fix")
	}
}

// TestDecoderBinaryInsideSentence cuts an RMC with a binary frame: the rest
// of the epoch still decodes and nothing from the cut sentence leaks out.
func TestDecoderBinaryInsideSentence(t *testing.T) {
	rmc := sentence("GPRMC,120000.00,A,4807.038,N,01131.000,E,5.0,10.0,010124,,,A")
	in := rmc[:30] + "\xb5\x62\x01\x07\x04\x00$\x2a\x0a\x0d\x55\xaa" + rmc[30:] +
		sentence("GPGGA,120000.00,4807.038,N,01131.000,E,1,05,1.0,10.0,M,,M,,") +
		sentence("GPRMC,120001.00,A,4807.039,N,01131.000,E,5.0,10.0,010124,,,A")
	d := NewDecoder(strings.NewReader(in))
	f, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	// The cut RMC is lost: no speed, no track, no date (so no time).
	if !f.Valid() || f.Has&(HasSpeed|HasTrack|HasTime) != 0 || math.Abs(f.Lat-(48+7.038/60)) > 1e-9 {
		t.Errorf("first fix = %+v, want the GGA position only", f)
	}
	st := d.Stats()
	if st.Partial != 1 || st.ChecksumErrors < 1 {
		t.Errorf("stats = %+v, want one partial line and a checksum error", st)
	}
}

func TestFixJSON(t *testing.T) {
	f := Fix{
		Time: time.Date(2024, 2, 29, 0, 0, 1, 500e6, time.UTC), Mode: Mode3D,
		Lat: -33.8688, Lon: 151.2093, AltMSL: 12.5, Speed: 5.144444444, Track: 45, HDOP: 0.9, Sats: 9,
		Has: HasTime | HasPosition | HasAltitude | HasSpeed | HasTrack | HasHDOP | HasSats,
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"time":"2024-02-29T00:00:01.500Z","mode":3,"lat":-33.8688,"lon":151.2093,"altMSL":12.5,"speed":5.144,"track":45,"hdop":0.9,"sats":9}`
	if string(b) != want {
		t.Errorf("Marshal = %s\nwant      %s", b, want)
	}
	var back Fix
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	f.Speed = 5.144
	if diff := cmp.Diff(f, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	nofix, _ := json.Marshal(Fix{Mode: ModeNoFix, Lat: 0, Lon: 0, Has: HasTime, Time: f.Time})
	if bytes.Contains(nofix, []byte("lat")) {
		t.Errorf("no-fix JSON %s carries a position", nofix)
	}
	if err := json.Unmarshal([]byte(`{"mode":3,"time":"yesterday"}`), &back); err == nil {
		t.Error("Unmarshal accepted a bad time")
	}
}

func TestFixAt(t *testing.T) {
	recv := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	f := Fix{Mode: Mode3D, Received: recv}
	if g := f.At(recv.Add(4*time.Second), 5*time.Second); g.Stale || g.Age != 4*time.Second {
		t.Errorf("At(+4s) = stale %v age %v, want fresh, 4s", g.Stale, g.Age)
	}
	g := f.At(recv.Add(6*time.Second), 5*time.Second)
	if !g.Stale || g.Age != 6*time.Second {
		t.Errorf("At(+6s) = stale %v age %v, want stale, 6s", g.Stale, g.Age)
	}
	b, _ := json.Marshal(g)
	if !bytes.Contains(b, []byte(`"stale":true,"age":6`)) {
		t.Errorf("stale JSON = %s, want stale and age", b)
	}
}
