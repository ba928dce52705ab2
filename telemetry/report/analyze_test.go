package report

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/telemetry"
	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)

func at(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }

// rd is a reading of device "d", shipment "S" at t0+min with a
// temperature (NaN: a sensor fault) and a pressure of 1000 hPa.
func rd(seq uint64, min, tempC float64) DeviceRecord {
	r := DeviceRecord{Device: "d", Copies: 1, Record: telemetry.Record{Seq: seq, Kind: telemetry.KindReading, Time: at(min), Clock: ClockGPS, Shipment: "S"}}
	if math.IsNaN(tempC) {
		r.EnvFault = "bus error"
	} else {
		r.Env = &telemetry.Env{TempC: tempC, PressureHPa: 1000}
	}
	return r
}

func seal(seq uint64, min float64) DeviceRecord {
	return DeviceRecord{Device: "d", Copies: 1, Record: telemetry.Record{Seq: seq, Kind: telemetry.KindSeal, Time: at(min), Clock: ClockGPS, Shipment: "S"}}
}

func analyze(t *testing.T, opts Options, recs ...DeviceRecord) *Report {
	t.Helper()
	if opts.Shipment == "" {
		opts.Shipment = "S"
	}
	rep, err := Analyze(&Telemetry{Records: recs}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func min_(m float64) Duration { return Duration(m * float64(time.Minute)) }

// excursionShape is what the hand-computed expectations pin down.
type excursionShape struct {
	Quantity, Direction  string
	Start, End           time.Time
	Duration, Unobserved Duration
	Extreme              float64
	ExtremeAt            time.Time
	Readings             int
	OpenEnded            bool
	OpenStart            bool
}

func shapes(es []Excursion) []excursionShape {
	var out []excursionShape
	for _, e := range es {
		out = append(out, excursionShape{e.Quantity, e.Direction, e.Start, e.End, e.Duration, e.Unobserved, e.Extreme, e.ExtremeAt, e.Readings, e.OpenEnded, e.OpenStart})
	}
	return out
}

func TestExcursionsAndTimeOutside(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name         string
		hold         time.Duration
		recs         []DeviceRecord
		want         []excursionShape
		above, below Duration
		observed     Duration
		unobserved   Duration
		mean         float64
	}{
		{
			// Readings every 5 min, sealed 5 min after the last: each
			// stands for 5 min. 9 and 10 are above 8, 1 and 1.5 below 2.
			name: "regular",
			recs: []DeviceRecord{rd(1, 0, 5), rd(2, 5, 9), rd(3, 10, 10), rd(4, 15, 7), rd(5, 20, 1), rd(6, 25, 1.5), rd(7, 30, 5), seal(8, 35)},
			want: []excursionShape{
				{Temperature, High, at(5), at(15), min_(10), 0, 10, at(10), 2, false, false},
				{Temperature, Low, at(20), at(30), min_(10), 0, 1, at(20), 2, false, false},
			},
			above: min_(10), below: min_(10), observed: min_(35),
			mean: (5 + 9 + 10 + 7 + 1 + 1.5 + 5) / 7.0,
		},
		{
			// A 35 min silence inside an excursion: the reading before it
			// stands for 15 min (the cap), 20 min are unobserved.
			name: "gap inside",
			hold: 15 * time.Minute,
			recs: []DeviceRecord{rd(1, 0, 9), rd(2, 5, 9.5), rd(3, 40, 9.2), rd(4, 45, 5), seal(5, 50)},
			want: []excursionShape{
				{Temperature, High, at(0), at(45), min_(45), min_(20), 9.5, at(5), 3, false, true},
			},
			above: min_(25), observed: min_(30), unobserved: min_(20),
			mean: (9*5 + 9.5*15 + 9.2*5 + 5*5) / 30.0,
		},
		{
			// A sensor fault ends what is known of the excursion.
			name: "fault",
			recs: []DeviceRecord{rd(1, 0, 9), rd(2, 5, nan), rd(3, 10, 5), seal(4, 15)},
			want: []excursionShape{
				{Temperature, High, at(0), at(5), min_(5), 0, 9, at(0), 1, true, true},
			},
			above: min_(5), observed: min_(10), unobserved: min_(5),
			mean: 7,
		},
		{
			// After a fault, an excursion's start is not known either.
			name: "fault before",
			recs: []DeviceRecord{rd(1, 0, 5), rd(2, 5, nan), rd(3, 10, 9), rd(4, 15, 5), seal(5, 20)},
			want: []excursionShape{
				{Temperature, High, at(10), at(15), min_(5), 0, 9, at(10), 1, false, true},
			},
			above: min_(5), observed: min_(15), unobserved: min_(5),
			mean: (5 + 9 + 5) / 3.0,
		},
		{
			// Out of band from the first reading: it may have begun
			// before loading.
			name: "out at loading",
			recs: []DeviceRecord{rd(1, 0, 9), rd(2, 5, 5), seal(3, 10)},
			want: []excursionShape{
				{Temperature, High, at(0), at(5), min_(5), 0, 9, at(0), 1, false, true},
			},
			above: min_(5), observed: min_(10), mean: 7,
		},
		{
			// Straight from above the band to below it: two excursions,
			// the first ended by a reading (not open).
			name: "high to low",
			recs: []DeviceRecord{rd(1, 0, 9), rd(2, 5, 1), rd(3, 10, 5), seal(4, 15)},
			want: []excursionShape{
				{Temperature, High, at(0), at(5), min_(5), 0, 9, at(0), 1, false, true},
				{Temperature, Low, at(5), at(10), min_(5), 0, 1, at(5), 1, false, false},
			},
			above: min_(5), below: min_(5), observed: min_(15),
			mean: 5,
		},
		{
			// On the threshold is inside the band.
			name:     "on the thresholds",
			recs:     []DeviceRecord{rd(1, 0, 8), rd(2, 5, 2), seal(3, 10)},
			observed: min_(10), mean: 5,
		},
		{
			// Unsealed: delivery is the last record, which stands for no
			// time; the excursion it starts has no known end.
			name: "unsealed end",
			recs: []DeviceRecord{rd(1, 0, 5), rd(2, 5, 5), rd(3, 10, 12)},
			want: []excursionShape{
				{Temperature, High, at(10), at(10), 0, 0, 12, at(10), 1, true, false},
			},
			observed: min_(10), mean: 5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := analyze(t, Options{MaxHold: tc.hold}, tc.recs...)
			if diff := cmp.Diff(tc.want, shapes(rep.Excursions)); diff != "" {
				t.Errorf("excursions (-want +got):\n%s", diff)
			}
			q := rep.Temperature
			if q.Above != tc.above || q.Below != tc.below || q.Observed != tc.observed {
				t.Errorf("above, below, observed = %v, %v, %v; want %v, %v, %v", q.Above.Std(), q.Below.Std(), q.Observed.Std(), tc.above.Std(), tc.below.Std(), tc.observed.Std())
			}
			if rep.Completeness.Unobserved != tc.unobserved {
				t.Errorf("unobserved = %v, want %v", rep.Completeness.Unobserved.Std(), tc.unobserved.Std())
			}
			if math.Abs(q.Mean-tc.mean) > 1e-9 {
				t.Errorf("mean = %v, want %v", q.Mean, tc.mean)
			}
			if q.Excursions != len(tc.want) {
				t.Errorf("Excursions = %d, want %d", q.Excursions, len(tc.want))
			}
		})
	}
}

func TestGapInsideIsListed(t *testing.T) {
	rep := analyze(t, Options{MaxHold: 15 * time.Minute}, rd(1, 0, 5), rd(2, 5, 5), rd(3, 40, 5), seal(4, 60))
	want := []TimeGap{{From: at(5), To: at(40), Duration: min_(35)}, {From: at(40), To: at(60), Duration: min_(20)}}
	if diff := cmp.Diff(want, rep.Completeness.TimeGaps); diff != "" {
		t.Errorf("TimeGaps (-want +got):\n%s", diff)
	}
	// 5 + 15 + 15 min observed of 60.
	if got, want := rep.Completeness.Unobserved, min_(25); got != want {
		t.Errorf("Unobserved = %v, want %v", got.Std(), want.Std())
	}
}

func TestLoadingDelivery(t *testing.T) {
	// The first record is untimed: loading is the first trusted time.
	untimed := rd(1, -30, 5)
	untimed.Clock = ClockUnsynced
	rep := analyze(t, Options{}, untimed, rd(2, 0, 5), rd(3, 5, 5), seal(4, 7))
	if !rep.Loading.Equal(at(0)) || !rep.Delivery.Equal(at(7)) || !rep.Sealed || rep.Duration != min_(7) {
		t.Errorf("loading %v, delivery %v, sealed %v, duration %v; want %v, %v, true, 7m", rep.Loading, rep.Delivery, rep.Sealed, rep.Duration.Std(), at(0), at(7))
	}
	rep = analyze(t, Options{}, rd(2, 0, 5), rd(3, 5, 5))
	if !rep.Delivery.Equal(at(5)) || rep.Sealed {
		t.Errorf("unsealed: delivery %v sealed %v, want %v false", rep.Delivery, rep.Sealed, at(5))
	}
}

func TestAutoMaxHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		recs []DeviceRecord
		want time.Duration
	}{
		{"five minutes", []DeviceRecord{rd(1, 0, 5), rd(2, 5, 5), rd(3, 10, 5), rd(4, 17, 5)}, 15 * time.Minute},
		{"floor", []DeviceRecord{rd(1, 0, 5), rd(2, 0.1, 5), rd(3, 0.2, 5)}, time.Minute},
		{"even count", []DeviceRecord{rd(1, 0, 5), rd(2, 2, 5), rd(3, 6, 5)}, 9 * time.Minute},
		{"one reading", []DeviceRecord{rd(1, 0, 5)}, fallbackMaxHold},
	} {
		if got := analyze(t, Options{}, tc.recs...).MaxHold.Std(); got != tc.want {
			t.Errorf("%s: MaxHold = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMKT(t *testing.T) {
	rep := analyze(t, Options{}, rd(1, 0, 5), rd(2, 5, 5), seal(3, 10))
	if got := *rep.Temperature.MKT; math.Abs(got-5) > 1e-9 {
		t.Errorf("MKT of a constant 5 °C = %v", got)
	}
	// 0 °C and 10 °C for equal times: 10000 / -ln((e^(-10000/273.15) +
	// e^(-10000/283.15)) / 2) - 273.15 = 6.4327 °C, above the mean of 5.
	rep = analyze(t, Options{}, rd(1, 0, 0), rd(2, 5, 10), seal(3, 10))
	if got := *rep.Temperature.MKT; math.Abs(got-6.432679690542) > 1e-6 {
		t.Errorf("MKT of 0 and 10 °C = %v, want 6.4327", got)
	}
}

func TestPressureExcursions(t *testing.T) {
	r1, r2, r3 := rd(1, 0, 5), rd(2, 5, 5), rd(3, 10, 5)
	r2.Env.PressureHPa = 860
	r2.Alerts = []string{telemetry.AlertPressureLow}
	r3.Env.PressureHPa = 1090
	rep := analyze(t, Options{}, r1, r2, r3, seal(4, 15))
	want := []excursionShape{
		{Pressure, Low, at(5), at(10), min_(5), 0, 860, at(5), 1, false, false},
		{Pressure, High, at(10), at(15), min_(5), 0, 1090, at(10), 1, true, false}, // ended by delivery, not by a reading
	}
	if diff := cmp.Diff(want, shapes(rep.Excursions)); diff != "" {
		t.Errorf("excursions (-want +got):\n%s", diff)
	}
	if !rep.Excursions[0].DeviceAlerted || rep.Excursions[1].DeviceAlerted {
		t.Errorf("DeviceAlerted = %v, %v; want true, false", rep.Excursions[0].DeviceAlerted, rep.Excursions[1].DeviceAlerted)
	}
	if rep.Pressure.Below != min_(5) || rep.Pressure.Above != min_(5) {
		t.Errorf("pressure below %v above %v, want 5m each", rep.Pressure.Below.Std(), rep.Pressure.Above.Std())
	}
	want2 := []AlertRun{{Alert: telemetry.AlertPressureLow, Start: at(5), End: at(10), Readings: 1, FirstSeq: 2, LastSeq: 2}}
	if diff := cmp.Diff(want2, rep.DeviceAlerts); diff != "" {
		t.Errorf("DeviceAlerts (-want +got):\n%s", diff)
	}
}

func TestCustomThresholds(t *testing.T) {
	rep := analyze(t, Options{Thresholds: Thresholds{TempMinC: 15, TempMaxC: 25, PressureMinHPa: 900, PressureMaxHPa: 1100}},
		rd(1, 0, 20), rd(2, 5, 10), rd(3, 10, 20), seal(4, 15))
	if len(rep.Excursions) != 1 || rep.Excursions[0].Direction != Low || rep.Excursions[0].Threshold != 15 {
		t.Errorf("excursions = %+v, want one below 15", rep.Excursions)
	}
	_, err := Analyze(&Telemetry{Records: []DeviceRecord{rd(1, 0, 5)}}, Options{Shipment: "S", Thresholds: Thresholds{TempMinC: 8, TempMaxC: 2, PressureMinHPa: 1, PressureMaxHPa: 2}})
	if err == nil || !strings.Contains(err.Error(), "temperature minimum 8") {
		t.Errorf("inverted band: err = %v", err)
	}
}

func TestCompleteness(t *testing.T) {
	gap := func(seq uint64, first, last, count uint64) DeviceRecord {
		return DeviceRecord{Device: "d", Copies: 1, Record: telemetry.Record{Seq: seq, Kind: telemetry.KindGap, Time: at(20), Clock: ClockSystem,
			Gap: &telemetry.Gap{FirstSeq: first, LastSeq: last, Count: count, Reason: "thinned"}}}
	}
	other := rd(15, 7, 5)
	other.Shipment = "T"
	untimed := rd(18, 9, 12)
	untimed.Clock = ClockUnsynced
	retimed := rd(19, 9.5, 5)
	retimed.Retimed = true
	dup := rd(20, 10, 5)
	dup.Copies = 3
	dup.Fix = &telemetry.Fix{Mode: 3, Lat: 1, Lon: 1, Stale: true}
	recs := []DeviceRecord{
		rd(10, 0, 5), rd(11, 1, 5), rd(13, 3, 5), other, rd(16, 8, nan()), untimed, retimed, dup, seal(22, 11),
		gap(21, 12, 14, 2), gap(30, 9, 16, 3), // the second folds the first
		gap(31, 40, 50, 0), // another time, not this shipment
	}
	c := analyze(t, Options{}, recs...).Completeness
	wantMissing := []SeqRange{
		{First: 12, Last: 12, Count: 1, Explained: 1, Reasons: []string{"thinned"}},
		{First: 14, Last: 14, Count: 1, Explained: 1, Reasons: []string{"thinned"}},
		{First: 17, Last: 17, Count: 1},
	}
	if diff := cmp.Diff(wantMissing, c.Missing); diff != "" {
		t.Errorf("Missing (-want +got):\n%s", diff)
	}
	if c.MissingSeqs != 3 || c.MissingExplained != 2 {
		t.Errorf("missing %d explained %d, want 3 and 2", c.MissingSeqs, c.MissingExplained)
	}
	if len(c.GapEvents) != 2 || !c.GapEvents[0].Superseded || c.GapEvents[1].Superseded || c.Evicted != 3 || c.EvictedUnknown != 0 {
		t.Errorf("gap events %+v, evicted %d (unknown %d); want the first folded into the second, 3 evicted", c.GapEvents, c.Evicted, c.EvictedUnknown)
	}
	if !c.GapEvents[1].Beyond || c.GapEvents[0].Beyond {
		t.Errorf("Beyond = %v, %v; want false, true", c.GapEvents[0].Beyond, c.GapEvents[1].Beyond)
	}
	wantClock := ClockQuality{GPS: 7, Unsynced: 1, Retimed: 1, Untimed: 1, UntimedOutOfBand: 1}
	if c.Clock != wantClock {
		t.Errorf("Clock = %+v, want %+v", c.Clock, wantClock)
	}
	if c.Records != 8 || c.Readings != 7 || c.Seals != 1 || c.Duplicates != 2 || c.SensorFaults != 1 || c.FirstSeq != 10 || c.LastSeq != 22 {
		t.Errorf("records %d readings %d seals %d duplicates %d faults %d seqs %d-%d; want 8 7 1 2 1 10-22", c.Records, c.Readings, c.Seals, c.Duplicates, c.SensorFaults, c.FirstSeq, c.LastSeq)
	}
	if c.StaleFix != 1 || c.NoFix != 6 {
		t.Errorf("stale %d nofix %d, want 1 and 6", c.StaleFix, c.NoFix)
	}
	if diff := cmp.Diff([]ReasonCount{{"bus error", 1}}, c.FaultReasons); diff != "" {
		t.Errorf("FaultReasons (-want +got):\n%s", diff)
	}
}

func nan() float64 { return math.NaN() }

func TestMarkSuperseded(t *testing.T) {
	evs := []GapEvent{
		{Seq: 5, FirstSeq: 1, LastSeq: 4, Count: 2, Reason: "thinned"},
		{Seq: 6, FirstSeq: 1, LastSeq: 4, Count: 2, Reason: "thinned"}, // the same report twice
		{Seq: 7, FirstSeq: 1, LastSeq: 4, Count: 2, Reason: "dropped"}, // another reason
		{Seq: 8, FirstSeq: 2, LastSeq: 9, Count: 3, Reason: "thinned"}, // overlaps, does not cover
	}
	markSuperseded(evs)
	got := []bool{evs[0].Superseded, evs[1].Superseded, evs[2].Superseded, evs[3].Superseded}
	if diff := cmp.Diff([]bool{true, false, false, false}, got); diff != "" {
		t.Errorf("Superseded (-want +got):\n%s", diff)
	}
}

func TestShipmentSelection(t *testing.T) {
	a := rd(1, 0, 5)
	b := rd(7, 0, 5)
	b.Device = "e"
	c := rd(2, 60, 5)
	c.Shipment = "T"
	tel := &Telemetry{Records: []DeviceRecord{a, c, b}}

	_, err := Analyze(tel, Options{Shipment: "X"})
	var se *ShipmentError
	if !errors.Is(err, ErrUnknownShipment) || !errors.As(err, &se) || len(se.Found) != 3 {
		t.Fatalf("unknown shipment: err = %v", err)
	}
	for _, want := range []string{`"X"`, "S (device d, 1 records", "S (device e", "T (device d"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = Analyze(tel, Options{Shipment: "S"})
	if !errors.Is(err, ErrAmbiguousShipment) || !strings.Contains(err.Error(), "device d") || !strings.Contains(err.Error(), "device e") {
		t.Errorf("ambiguous shipment: err = %v", err)
	}
	rep, err := Analyze(tel, Options{Shipment: "S", Device: "e"})
	if err != nil || rep.Device != "e" || rep.Completeness.Records != 1 || rep.Completeness.FirstSeq != 7 {
		t.Errorf("with device e: %v, %+v", err, rep)
	}
	_, err = Analyze(tel, Options{Shipment: "S", Device: "zz"})
	if !errors.Is(err, ErrUnknownShipment) || !strings.Contains(err.Error(), `of device "zz"`) {
		t.Errorf("wrong device: err = %v", err)
	}
	u := rd(1, 0, 5)
	u.Clock = ClockUnsynced
	if _, err := Analyze(&Telemetry{Records: []DeviceRecord{u}}, Options{Shipment: "S"}); !errors.Is(err, ErrNoTrustedTime) {
		t.Errorf("all untimed: err = %v, want ErrNoTrustedTime", err)
	}
}

func TestRoute(t *testing.T) {
	fix := func(r DeviceRecord, lat, lon float64) DeviceRecord {
		r.Fix = &telemetry.Fix{Mode: 3, Lat: lat, Lon: lon}
		return r
	}
	// One degree of longitude on the equator, across the antimeridian.
	rep := analyze(t, Options{}, fix(rd(1, 0, 5), 0, 179.5), fix(rd(2, 5, 5), 0, -179.5), rd(3, 10, 5))
	rt := rep.Route
	if math.Abs(rt.DistanceKm-earthRadiusKm*math.Pi/180) > 1e-6 {
		t.Errorf("DistanceKm = %v, want %v", rt.DistanceKm, earthRadiusKm*math.Pi/180)
	}
	if rt.West != 179.5 || rt.East != 180.5 || rt.Fixes != 2 {
		t.Errorf("west %v east %v fixes %d, want 179.5 180.5 2", rt.West, rt.East, rt.Fixes)
	}
	// A 2D fix counts, no fix and a stale one do not.
	stale := fix(rd(3, 10, 5), 3, 3)
	stale.Fix.Stale = true
	nofix := fix(rd(4, 15, 5), 4, 4)
	nofix.Fix.Mode = 1
	two := fix(rd(2, 5, 5), 2, 2)
	two.Fix.Mode = 2
	rep = analyze(t, Options{}, fix(rd(1, 0, 5), 1, 1), two, stale, nofix)
	if rep.Route.Fixes != 2 || rep.Route.End.Lat != 2 {
		t.Errorf("fixes %d end %+v, want 2 fixes ending at 2,2", rep.Route.Fixes, rep.Route.End)
	}
}
