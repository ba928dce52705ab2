package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// This file builds testdata/shipment.jsonl, the recorded shipment the
// golden tests read: tracker trk-0042 carrying refrigerated medicine from
// Lodi (near Milan) over the Brenner pass to Garching (near Munich) on
// 2026-03-11, then a second shipment to Stuttgart the next day, with
// another tracker's messages interleaved, as the emulator's
// telemetry.jsonl would hold them.
//
// What happens on the way:
//   - 05:20 the board boots in the depot's cold room without network or
//     GPS: its first readings are unsynced, and retimed when sent;
//   - 07:15 a PUBACK is lost and the message is resent with the same id;
//   - 07:40 one message never reaches the hub (a missing seq, unexplained);
//   - 09:40-11:00 no coverage in the Alps; the small buffer thins four
//     routine records and reports it in a gap event;
//   - ~10:06-10:52 over the Brenner pass (1370 m) pressure is below
//     870 hPa, and at the border stop the doors are opened for an
//     inspection: temperature climbs to 9.7 °C;
//   - 11:17-11:52 the power is cut at a rest stop: the record not yet
//     committed is lost (an unclean-shutdown gap event), acknowledgements
//     are lost too so three records are sent again under a new message id,
//     and the first reading after the reboot goes out before the clock is
//     trusted (untimed);
//   - 12:44-12:53 sensor bus errors;
//   - 13:05-13:35 the reefer over-cools to 1.1 °C near Rosenheim;
//   - 14:32 the operator seals the shipment at delivery.

const (
	recDevice    = "trk-0042"
	recShipment  = "SHP-2026-0311-LOD-MUC"
	recShipment2 = "SHP-2026-0312-MUC-STR"
	recOther     = "trk-0107"
	recOtherShip = "SHP-2026-0311-LIN-BLQ"
)

// waypoint is a point of the route with the time the truck is there.
type waypoint struct {
	at            string // HH:MM on the day
	lat, lon, alt float64
}

var day1 = time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)

func hm(day time.Time, s string) time.Time {
	t, err := time.Parse("15:04:05", s)
	if err != nil {
		t, err = time.Parse("15:04", s)
	}
	if err != nil {
		panic(err)
	}
	return day.Add(time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second)
}

var route1 = []waypoint{
	{"05:20", 45.3140, 9.5030, 80}, // Lodi, depot
	{"05:34", 45.3140, 9.5030, 80}, // departs
	{"06:30", 45.5416, 10.2118, 150},
	{"07:25", 45.4384, 10.9916, 60}, // Verona
	{"08:05", 45.8904, 11.0340, 170},
	{"08:25", 46.0748, 11.1217, 190}, // Trento
	{"09:05", 46.4983, 11.3548, 260}, // Bolzano
	{"09:30", 46.7150, 11.6560, 560},
	{"09:52", 46.8966, 11.4330, 950},
	{"10:10", 47.0022, 11.5055, 1370}, // Brennero, border stop
	{"10:48", 47.0022, 11.5055, 1370},
	{"11:02", 47.1880, 11.4060, 1000},
	{"11:12", 47.2600, 11.4300, 580}, // rest stop near Innsbruck
	{"12:02", 47.2600, 11.4300, 580},
	{"12:32", 47.4890, 12.0620, 510},
	{"12:42", 47.5830, 12.1700, 500}, // Kufstein
	{"13:02", 47.8571, 12.1181, 450}, // Rosenheim
	{"13:20", 47.8600, 11.8000, 680},
	{"13:45", 48.1200, 11.7000, 520},
	{"14:02", 48.2500, 11.6500, 480}, // Garching
	{"15:00", 48.2500, 11.6500, 480},
}

var route2 = []waypoint{
	{"06:40", 48.2500, 11.6500, 480},
	{"06:50", 48.2500, 11.6500, 480},
	{"07:40", 48.3700, 10.8900, 490}, // Augsburg
	{"08:25", 48.4011, 9.9876, 480},  // Ulm
	{"09:10", 48.7758, 9.1829, 250},  // Stuttgart
	{"09:30", 48.7758, 9.1829, 250},
}

// tempPoints is the cargo temperature over the first day (°C), linearly
// interpolated; noise is added on top.
var tempPoints = []struct {
	at string
	c  float64
}{
	{"05:20", 6.9}, {"05:45", 5.6}, {"06:05", 5.0}, {"10:16", 5.1},
	{"10:22", 7.9}, {"10:30", 9.3}, {"10:36", 9.7}, {"10:42", 8.6}, {"10:48", 6.4}, {"10:58", 5.2},
	{"11:17", 5.2}, {"11:52", 7.1}, {"12:10", 5.4}, {"12:20", 5.0},
	{"13:02", 4.9}, {"13:08", 2.3}, {"13:16", 1.3}, {"13:22", 1.1}, {"13:28", 1.9}, {"13:36", 3.6}, {"13:50", 4.8},
	{"14:20", 5.0}, {"14:28", 6.6}, {"14:45", 7.2},
}

// noise is a small deterministic pseudo-random sequence in [-1, 1]
// (xorshift; independent of math/rand's algorithms).
type noise uint64

func (n *noise) next() float64 {
	x := uint64(*n)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*n = noise(x)
	return float64(x>>11)/float64(1<<53)*2 - 1
}

func interp(ws []waypoint, day, t time.Time) (lat, lon, alt, speed, track float64) {
	if t.Before(hm(day, ws[0].at)) {
		w := ws[0]
		return w.lat, w.lon, w.alt, 0, 0
	}
	for i := 1; i < len(ws); i++ {
		a, b := ws[i-1], ws[i]
		ta, tb := hm(day, a.at), hm(day, b.at)
		if t.After(tb) {
			continue
		}
		f := t.Sub(ta).Seconds() / tb.Sub(ta).Seconds()
		lat, lon, alt = a.lat+f*(b.lat-a.lat), a.lon+f*(b.lon-a.lon), a.alt+f*(b.alt-a.alt)
		km := haversineKm(a.lat, a.lon, b.lat, b.lon)
		speed = km * 1000 / tb.Sub(ta).Seconds()
		if km > 0 {
			y := math.Sin((b.lon-a.lon)*math.Pi/180) * math.Cos(b.lat*math.Pi/180)
			x := math.Cos(a.lat*math.Pi/180)*math.Sin(b.lat*math.Pi/180) - math.Sin(a.lat*math.Pi/180)*math.Cos(b.lat*math.Pi/180)*math.Cos((b.lon-a.lon)*math.Pi/180)
			track = math.Mod(math.Atan2(y, x)*180/math.Pi+360, 360)
		}
		return
	}
	w := ws[len(ws)-1]
	return w.lat, w.lon, w.alt, 0, 0
}

func tempAt(t time.Time) float64 {
	for i := 1; i < len(tempPoints); i++ {
		a, b := tempPoints[i-1], tempPoints[i]
		ta, tb := hm(day1, a.at), hm(day1, b.at)
		if t.After(tb) {
			continue
		}
		if t.Before(ta) {
			return a.c
		}
		f := t.Sub(ta).Seconds() / tb.Sub(ta).Seconds()
		return a.c + f*(b.c-a.c)
	}
	return tempPoints[len(tempPoints)-1].c
}

// pressureAt is the standard atmosphere at alt plus the day's weather.
func pressureAt(alt float64, weather float64) float64 {
	return 1013.25*math.Pow(1-2.25577e-5*alt, 5.25588) + weather
}

func round(v float64, dec int) float64 {
	p := math.Pow(10, float64(dec))
	return math.Round(v*p) / p
}

func fp(v float64) *float64 { return &v }

// sim collects the records of a device and the messages that carried
// them.
type sim struct {
	device string
	seq    uint64
	lines  []simLine
}

type simLine struct {
	at   time.Time
	mid  string
	lane string
	recs []telemetry.Record
}

// send adds a message carrying recs, enqueued at at.
func (s *sim) send(at time.Time, lane string, recs ...telemetry.Record) simLine {
	seqs := make([]uint64, len(recs))
	for i := range recs {
		seqs[i] = recs[i].Seq
	}
	l := simLine{at: at, mid: telemetry.MessageID(s.device, seqs), lane: lane, recs: recs}
	s.lines = append(s.lines, l)
	return l
}

// backlog sends recs oldest first, up to 10 per message, half a second
// apart.
func (s *sim) backlog(at time.Time, recs []telemetry.Record) {
	for len(recs) > 0 {
		n := min(10, len(recs))
		s.send(at, "backlog", recs[:n]...)
		recs = recs[n:]
		at = at.Add(500 * time.Millisecond)
	}
}

// recordedShipment builds the content of testdata/shipment.jsonl.
func recordedShipment() []byte {
	n := noise(0x9e3779b97f4a7c15)
	s := &sim{device: recDevice, seq: 1200}
	const interval = 5 * time.Minute
	devTempMin, devTempMax := 1.5, 8.0 // the tracker's own (twin) thresholds
	var (
		queued      []telemetry.Record // waiting for coverage
		lastRecord  time.Time
		activeAlert = map[string]bool{}
		boot        = "b7f3"
		bootAt      = hm(day1, "05:20")
		floor       = time.Date(2026, 3, 10, 17, 48, 12, 0, time.UTC) // last known good time
		fixFrom     = hm(day1, "05:29")
		preCut      []telemetry.Record // delivered, but the acknowledgements die in the power cut
		weather     = 3.5
		dropped     bool
		thinnedDone bool
	)
	offline := func(t time.Time) bool {
		return t.Before(hm(day1, "05:31")) || (!t.Before(hm(day1, "09:40")) && t.Before(hm(day1, "11:00"))) ||
			(!t.Before(hm(day1, "11:13")) && t.Before(hm(day1, "11:54")))
	}
	flush := func(t time.Time) {
		if offline(t) || len(queued) == 0 {
			return
		}
		sort.SliceStable(queued, func(i, j int) bool { return queued[i].Seq < queued[j].Seq })
		for i := range queued {
			q := &queued[i]
			if q.Clock == "unsynced" && q.Boot == boot && !t.Before(fixFrom) {
				q.Time = bootAt.Add(time.Duration(q.Mono * float64(time.Second)))
				q.Clock, q.Retimed = "gps", true
			}
		}
		s.backlog(t, queued)
		queued = nil
	}
	// One sensor read a minute, 30 s past; a record every interval, and at
	// once on a new alert.
	for t := hm(day1, "05:20:30"); t.Before(hm(day1, "14:32")); t = t.Add(time.Minute) {
		if !t.Before(hm(day1, "11:17")) && t.Before(hm(day1, "11:52")) {
			continue // no power
		}
		if t.Equal(hm(day1, "11:52:30")) {
			// Reboot: a new run of the agent, clock unsynced until the
			// GPS fix. The records appended since the modem dropped were
			// not committed yet: lost. Numbering resumes above the
			// reservation (40 ahead).
			boot, bootAt, floor, fixFrom = "c41a", hm(day1, "11:52"), hm(day1, "11:16"), hm(day1, "11:55:40")
			lastRecord = time.Time{}
			activeAlert = map[string]bool{}
			lost := s.seq
			if len(queued) > 0 {
				lost = queued[0].Seq
			}
			queued = nil
			s.seq = lost + 40
			queued = append(queued, telemetry.Record{Seq: s.seq, Kind: telemetry.KindGap, Time: hm(day1, "11:16:05"), Clock: "system",
				Gap: &telemetry.Gap{FirstSeq: lost, LastSeq: lost + 39, Reason: "unclean-shutdown"}})
			s.seq++
			queued = append(queued, preCut...)
		}
		flush(t)
		weather += 0.02 * n.next()
		lat, lon, alt, speed, track := interp(route1, day1, t)
		temp := round(tempAt(t)+0.12*n.next(), 2)
		pres := round(pressureAt(alt, weather)+0.15*n.next(), 1)
		env := &telemetry.Env{TempC: temp, PressureHPa: pres}
		fault := ""
		if !t.Before(hm(day1, "12:44")) && t.Before(hm(day1, "12:53")) {
			env, fault = nil, "bmx280: i2c read: bus error"
		}
		var alerts []string
		if env != nil {
			if temp > devTempMax {
				alerts = append(alerts, telemetry.AlertTempHigh)
			}
			if temp < devTempMin {
				alerts = append(alerts, telemetry.AlertTempLow)
			}
			if pres < 870 {
				alerts = append(alerts, telemetry.AlertPressureLow)
			}
		}
		newAlert := false
		now := map[string]bool{}
		for _, a := range alerts {
			now[a] = true
			newAlert = newAlert || !activeAlert[a]
		}
		activeAlert = now
		if !lastRecord.IsZero() && t.Sub(lastRecord) < interval-interval/20 && !newAlert {
			continue
		}
		lastRecord = t
		r := telemetry.Record{Seq: s.seq, Kind: telemetry.KindReading, Time: t, Clock: "gps", Shipment: recShipment, Env: env, EnvFault: fault, Alerts: alerts}
		s.seq++
		if t.Before(fixFrom) {
			mono := round(t.Sub(bootAt).Seconds(), 3)
			r.Clock, r.Boot, r.Mono = "unsynced", boot, mono
			r.Time = floor.Add(time.Duration(mono * float64(time.Second)))
		} else {
			r.Fix = &telemetry.Fix{Time: t.Add(-400 * time.Millisecond), Mode: 3, Lat: round(lat, 6), Lon: round(lon, 6),
				AltMSL: fp(round(alt+4*n.next(), 1)), Speed: fp(round(speed*(1+0.05*n.next()), 2)), Track: fp(round(track, 1)),
				HDOP: fp(round(1.0+0.3*n.next(), 2)), Sats: 9 + int(3*(n.next()+1)/2)}
		}
		if !thinnedDone && !t.Before(hm(day1, "10:45")) {
			thinnedDone = true
			// The small buffer hit its cap while offline: every other
			// routine record of the oldest region is thinned, and the
			// commit that did it writes a gap event.
			var routine []uint64
			for _, q := range queued {
				if q.Kind == telemetry.KindReading && len(q.Alerts) == 0 {
					routine = append(routine, q.Seq)
				}
			}
			var thinned []uint64
			for i := 1; i < len(routine) && len(thinned) < 4; i += 2 {
				thinned = append(thinned, routine[i])
			}
			queued = slices.DeleteFunc(queued, func(q telemetry.Record) bool { return slices.Contains(thinned, q.Seq) })
			queued = append(queued, r, telemetry.Record{Seq: s.seq, Kind: telemetry.KindGap, Time: t.Add(200 * time.Millisecond), Clock: "system",
				Gap: &telemetry.Gap{FirstSeq: thinned[0], LastSeq: thinned[len(thinned)-1], Count: uint64(len(thinned)), Reason: "thinned"}})
			s.seq++
			continue
		}
		switch {
		case !dropped && !t.Before(hm(day1, "07:38")):
			dropped = true
			continue // sent, never reached the hub
		case offline(t):
			queued = append(queued, r)
			continue
		}
		l := s.send(t.Add(1200*time.Millisecond), "live", r)
		if t.Equal(hm(day1, "07:15:30")) {
			// PUBACK lost: resent verbatim with the same message id.
			l.at = l.at.Add(31 * time.Second)
			s.lines = append(s.lines, l)
		}
		if !t.Before(hm(day1, "11:00")) && t.Before(hm(day1, "11:13")) {
			preCut = append(preCut, r)
		}
	}
	// Delivery: the operator seals the shipment; the tracker keeps
	// reporting, outside any shipment, until it is switched off.
	seal := telemetry.Record{Seq: s.seq, Kind: telemetry.KindSeal, Time: hm(day1, "14:32:10"), Clock: "gps", Shipment: recShipment}
	s.seq++
	s.send(seal.Time.Add(900*time.Millisecond), "live", seal)
	for _, at := range []string{"14:37:30", "14:42:30"} {
		t := hm(day1, at)
		r := telemetry.Record{Seq: s.seq, Kind: telemetry.KindReading, Time: t, Clock: "gps",
			Env: &telemetry.Env{TempC: round(tempAt(t)+0.12*n.next(), 2), PressureHPa: round(pressureAt(480, weather), 1)},
			Fix: &telemetry.Fix{Time: t, Mode: 3, Lat: 48.25, Lon: 11.65, Sats: 10}}
		s.seq++
		s.send(t.Add(1100*time.Millisecond), "live", r)
	}

	// The next day: Garching to Stuttgart, uneventful.
	day2 := day1.AddDate(0, 0, 1)
	s.seq += 3 // a clean restart leaves no hole; the agent logged events
	for t := hm(day2, "06:40:30"); t.Before(hm(day2, "09:14")); t = t.Add(interval) {
		lat, lon, alt, speed, track := interp(route2, day2, t)
		clock := "gps"
		if t.Before(hm(day2, "06:42")) {
			clock = "system"
		}
		r := telemetry.Record{Seq: s.seq, Kind: telemetry.KindReading, Time: t, Clock: clock, Shipment: recShipment2,
			Env: &telemetry.Env{TempC: round(5+0.3*n.next(), 2), PressureHPa: round(pressureAt(alt, 1.2)+0.15*n.next(), 1)}}
		if clock == "gps" {
			r.Fix = &telemetry.Fix{Time: t.Add(-300 * time.Millisecond), Mode: 3, Lat: round(lat, 6), Lon: round(lon, 6),
				Speed: fp(round(speed, 2)), Track: fp(round(track, 1)), Sats: 10}
		}
		s.seq++
		s.send(t.Add(1300*time.Millisecond), "live", r)
	}
	seal2 := telemetry.Record{Seq: s.seq, Kind: telemetry.KindSeal, Time: hm(day2, "09:14:40"), Clock: "gps", Shipment: recShipment2}
	s.send(seal2.Time.Add(800*time.Millisecond), "live", seal2)

	// Another tracker on the same hub, at the same time.
	o := &sim{device: recOther, seq: 76}
	for i := range 6 {
		t := hm(day1, "08:00:10").Add(time.Duration(i) * interval)
		r := telemetry.Record{Seq: o.seq, Kind: telemetry.KindReading, Time: t, Clock: "gps", Shipment: recOtherShip,
			Env: &telemetry.Env{TempC: round(4+0.2*n.next(), 2), PressureHPa: round(1012+0.2*n.next(), 1)},
			Fix: &telemetry.Fix{Time: t, Mode: 3, Lat: round(45.45+0.01*float64(i), 6), Lon: round(9.28+0.02*float64(i), 6), Sats: 8}}
		o.seq++
		o.send(t.Add(900*time.Millisecond), "live", r)
	}
	return encodeLines(append(s.lines, o.lines...))
}

// The emulator's telemetry.jsonl shape (see emulator/telemetry.go).
type recEvent struct {
	Event recBody `json:"event"`
}

type recBody struct {
	Origin      string          `json:"origin"`
	Module      string          `json:"module"`
	Interface   string          `json:"interface"`
	Component   string          `json:"component"`
	Properties  recProperties   `json:"properties"`
	Annotations recAnnotations  `json:"annotations"`
	Payload     json.RawMessage `json:"payload"`
}

type recProperties struct {
	System      map[string]string `json:"system"`
	Application map[string]string `json:"application"`
}

type recAnnotations struct {
	DeviceID         string `json:"iothub-connection-device-id"`
	AuthMethod       string `json:"iothub-connection-auth-method"`
	AuthGenerationID string `json:"iothub-connection-auth-generation-id"`
	EnqueuedTime     int64  `json:"iothub-enqueuedtime"`
	MessageSource    string `json:"iothub-message-source"`
	SequenceNumber   int64  `json:"x-opt-sequence-number"`
	Offset           string `json:"x-opt-offset"`
	XEnqueuedTime    int64  `json:"x-opt-enqueued-time"`
}

// encodeLines writes the messages in the order the hub enqueued them.
func encodeLines(lines []simLine) []byte {
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var out bytes.Buffer
	for i, l := range lines {
		dev := l.mid[:len(recDevice)]
		body, err := json.Marshal(telemetry.Batch{V: telemetry.SchemaVersion, Device: dev, Records: l.recs})
		if err != nil {
			panic(err)
		}
		app := map[string]string{"lane": l.lane, "records": fmt.Sprint(len(l.recs))}
		for _, r := range l.recs {
			if len(r.Alerts) > 0 {
				app["alert"] = "true"
			}
		}
		ms := l.at.UnixMilli()
		ev := recEvent{Event: recBody{
			Origin: dev,
			Properties: recProperties{
				System:      map[string]string{"content_encoding": "utf-8", "content_type": "application/json", "message_id": l.mid},
				Application: app,
			},
			Annotations: recAnnotations{
				DeviceID: dev, AuthMethod: `{"scope":"device","type":"x509Certificate","issuer":"external","acceptingIpFilterRule":null}`,
				AuthGenerationID: "638771" + fmt.Sprintf("%012d", len(dev)*7919), EnqueuedTime: ms, MessageSource: "Telemetry",
				SequenceNumber: int64(i + 1), Offset: fmt.Sprint(out.Len()), XEnqueuedTime: ms,
			},
			Payload: body,
		}}
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ev); err != nil {
			panic(err)
		}
	}
	return out.Bytes()
}
