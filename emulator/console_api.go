package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The console's read side: one state document (enrollments, registrations,
// devices), recent telemetry as chart points, and a server-sent events
// stream of new telemetry and emulator events.

// Defaults for the console's telemetry views.
const (
	consoleDefaultPoints = 2000
	consoleMaxPoints     = 20000
	// consoleStreamBatch bounds what one stream wake-up writes; the rest
	// follows on the next turn of the loop.
	consoleStreamBatch = 256
	// consoleHeartbeat keeps proxies and the browser from timing out an
	// idle stream.
	consoleHeartbeat = 15 * time.Second
	// bucketConsoleLeaves keeps the device certificates the console saw on
	// live connections, so it can disenroll a device that is offline.
	bucketConsoleLeaves = "consoleLeaves"
)

// ConsoleState is the console's view of the emulator: GET
// /console/api/state.
type ConsoleState struct {
	Hub           string                `json:"hub"`
	IDScope       string                `json:"idScope"`
	Now           time.Time             `json:"now"`
	Groups        []ConsoleGroup        `json:"groups"`
	Enrollments   []ConsoleEnrollment   `json:"enrollments"`
	Registrations []ConsoleRegistration `json:"registrations"`
	Devices       []ConsoleDevice       `json:"devices"`
	// Messages is the hub's message count; TelemetrySeq and EventSeq are
	// the newest sequence numbers, where a stream can resume.
	Messages     int64 `json:"messages"`
	TelemetrySeq int64 `json:"telemetrySeq"`
	EventSeq     int64 `json:"eventSeq"`
}

// ConsoleGroup is an enrollment group row.
type ConsoleGroup struct {
	ID            string     `json:"id"`
	Status        string     `json:"status"`
	Signer        string     `json:"signer"`
	SignerExpires *time.Time `json:"signerExpires,omitempty"`
	Registrations int        `json:"registrations"`
	Updated       *time.Time `json:"updated,omitempty"`
}

// ConsoleEnrollment is an individual enrollment row.
type ConsoleEnrollment struct {
	RegistrationID string     `json:"registrationId"`
	DeviceID       string     `json:"deviceId,omitempty"`
	Status         string     `json:"status"`
	Subject        string     `json:"subject"`
	Thumbprint     string     `json:"thumbprint"`
	Updated        *time.Time `json:"updated,omitempty"`
}

// ConsoleRegistration is a DPS registration record row.
type ConsoleRegistration struct {
	RegistrationID string     `json:"registrationId"`
	DeviceID       string     `json:"deviceId,omitempty"`
	Status         string     `json:"status"`
	Substatus      string     `json:"substatus,omitempty"`
	AssignedHub    string     `json:"assignedHub,omitempty"`
	Enrollment     string     `json:"enrollment"`
	Error          string     `json:"error,omitempty"`
	Updated        *time.Time `json:"updated,omitempty"`
}

// ConsoleDevice is a hub device row with what its twin reports.
type ConsoleDevice struct {
	DeviceID        string    `json:"deviceId"`
	Status          string    `json:"status"`
	ConnectionState string    `json:"connectionState"`
	ConnectionSince time.Time `json:"connectionSince"`
	LastActivity    time.Time `json:"lastActivity"`
	AuthType        string    `json:"authType"`
	C2DQueued       int       `json:"c2dQueued"`
	// Messages counts the device's messages in the emulator's memory.
	Messages int `json:"messages"`
	// Thresholds are the device's effective limits as its twin reports
	// them (reported.config), or the default band.
	Thresholds ConsoleThresholds `json:"thresholds"`
	Shipment   string            `json:"shipment,omitempty"`
	Firmware   string            `json:"firmware,omitempty"`
	// BufferDepth is the unsent records the device last reported (-1
	// unknown).
	BufferDepth int `json:"bufferDepth"`
}

// ConsoleThresholds is a temperature and pressure band.
type ConsoleThresholds struct {
	TempMinC       float64  `json:"tempMinC"`
	TempMaxC       float64  `json:"tempMaxC"`
	PressureMinHPa *float64 `json:"pressureMinHPa,omitempty"`
	PressureMaxHPa *float64 `json:"pressureMaxHPa,omitempty"`
	// Source is "twin" when the device reported them, else "default".
	Source string `json:"source"`
}

// Default temperature band of a reefer shipment (the agent's default).
const (
	ConsoleDefaultTempMinC = 2.0
	ConsoleDefaultTempMaxC = 8.0
)

// ConsolePoint is one record of a device's telemetry, reduced to what the
// charts and the route draw.
type ConsolePoint struct {
	// Seq is the device's record sequence number; Time its capture time.
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"t"`
	Kind     string    `json:"kind,omitempty"`
	Shipment string    `json:"ship,omitempty"`
	TempC    *float64  `json:"tempC,omitempty"`
	Pressure *float64  `json:"pHPa,omitempty"`
	Lat      *float64  `json:"lat,omitempty"`
	Lon      *float64  `json:"lon,omitempty"`
	Stale    bool      `json:"stale,omitempty"`
	Alerts   []string  `json:"alerts,omitempty"`
}

// ConsoleMessage is one device-to-cloud message as the live stream sends
// it (SSE event "telemetry").
type ConsoleMessage struct {
	Seq      int64          `json:"seq"`
	DeviceID string         `json:"deviceId"`
	Enqueued time.Time      `json:"enqueued"`
	Points   []ConsolePoint `json:"points"`
}

// ConsoleTelemetry is GET /console/api/telemetry: recent points per device,
// oldest first, and the sequence number to resume the stream after.
type ConsoleTelemetry struct {
	Seq     int64                     `json:"seq"`
	Devices map[string][]ConsolePoint `json:"devices"`
}

// consoleBatch is the part of a telemetry.Batch body the console reads. It
// is decoded here from the documented JSON, not with the device's code.
type consoleBatch struct {
	Records []struct {
		Seq      uint64    `json:"seq"`
		Kind     string    `json:"kind"`
		Time     time.Time `json:"time"`
		Shipment string    `json:"shipment"`
		Env      *struct {
			TempC       *float64 `json:"tempC"`
			PressureHPa *float64 `json:"pressureHPa"`
		} `json:"env"`
		Fix *struct {
			Lat   *float64 `json:"lat"`
			Lon   *float64 `json:"lon"`
			Mode  int      `json:"mode"`
			Stale bool     `json:"stale"`
		} `json:"fix"`
		Alerts []string `json:"alerts"`
	} `json:"records"`
}

// consolePoints extracts chart points from a message body; a body that is
// not a telemetry batch has none.
func consolePoints(payload []byte) []ConsolePoint {
	var b consoleBatch
	if len(payload) == 0 || payload[0] != '{' || json.Unmarshal(payload, &b) != nil {
		return nil
	}
	out := make([]ConsolePoint, 0, len(b.Records))
	for _, r := range b.Records {
		p := ConsolePoint{Seq: r.Seq, Time: r.Time, Shipment: r.Shipment, Alerts: r.Alerts}
		if r.Kind != "" && r.Kind != "reading" {
			p.Kind = r.Kind
		}
		if r.Env != nil {
			p.TempC, p.Pressure = r.Env.TempC, r.Env.PressureHPa
		}
		if f := r.Fix; f != nil && f.Lat != nil && f.Lon != nil && f.Mode != 1 && (*f.Lat != 0 || *f.Lon != 0) {
			p.Lat, p.Lon, p.Stale = f.Lat, f.Lon, f.Stale
		}
		out = append(out, p)
	}
	return out
}

// ConsoleState returns what the console's tables show. On the way it
// stores the certificates of live connections it has not stored yet, so
// that the devices can be disenrolled once they are offline.
func (e *Emulator) ConsoleState() (ConsoleState, error) {
	st := ConsoleState{Hub: e.hubHost(), IDScope: e.meta.IDScope, Now: time.Now().UTC(),
		Groups: []ConsoleGroup{}, Enrollments: []ConsoleEnrollment{}, Registrations: []ConsoleRegistration{}, Devices: []ConsoleDevice{}}
	perGroup := map[string]int{}
	err := e.store.view(func(tx *bolt.Tx) error {
		if err := forEachJSON(tx, bucketGroups, func(_ string, g EnrollmentGroup) error {
			row := ConsoleGroup{ID: g.EnrollmentGroupID, Status: g.ProvisioningStatus, Updated: g.LastUpdatedDateTimeUTC}
			if x := g.Attestation.X509; x != nil && x.SigningCertificates != nil && x.SigningCertificates.Primary != nil {
				if i := x.SigningCertificates.Primary.Info; i != nil {
					row.Signer = i.SubjectName
					na := i.NotAfterUTC
					row.SignerExpires = &na
				}
			}
			st.Groups = append(st.Groups, row)
			return nil
		}); err != nil {
			return err
		}
		if err := forEachJSON(tx, bucketEnrollments, func(_ string, ie IndividualEnrollment) error {
			row := ConsoleEnrollment{RegistrationID: ie.RegistrationID, DeviceID: ie.DeviceID, Status: ie.ProvisioningStatus, Updated: ie.LastUpdatedDateTimeUTC}
			if x := ie.Attestation.X509; x != nil && x.ClientCertificates != nil && x.ClientCertificates.Primary != nil {
				if i := x.ClientCertificates.Primary.Info; i != nil {
					row.Subject, row.Thumbprint = i.SubjectName, i.SHA256Thumbprint
				}
			}
			st.Enrollments = append(st.Enrollments, row)
			return nil
		}); err != nil {
			return err
		}
		if err := forEachJSON(tx, bucketRegistrations, func(_ string, r registration) error {
			row := ConsoleRegistration{RegistrationID: r.State.RegistrationID, DeviceID: r.State.DeviceID, Status: r.State.Status,
				Substatus: r.State.Substatus, AssignedHub: r.State.AssignedHub, Error: r.State.ErrorMessage, Updated: r.State.LastUpdatedDateTimeUTC}
			switch {
			case r.Individual:
				row.Enrollment = "individual"
			case r.EnrollmentGroupID != "":
				row.Enrollment = "group " + r.EnrollmentGroupID
				perGroup[strings.ToLower(r.EnrollmentGroupID)]++
			}
			st.Registrations = append(st.Registrations, row)
			return nil
		}); err != nil {
			return err
		}
		return forEachJSON(tx, bucketDevices, func(_ string, d Device) error {
			row := ConsoleDevice{DeviceID: d.DeviceID, Status: d.Status, AuthType: d.Authentication.Type, BufferDepth: -1,
				Thresholds: ConsoleThresholds{TempMinC: ConsoleDefaultTempMinC, TempMaxC: ConsoleDefaultTempMaxC, Source: "default"}}
			tr, ok, err := getJSON[twinRecord](tx, bucketTwins, d.DeviceID)
			if err != nil {
				return err
			}
			if ok {
				consoleFromTwin(&row, tr.Reported)
			}
			st.Devices = append(st.Devices, row)
			return nil
		})
	})
	if err != nil {
		return st, fmt.Errorf("emulator: console state: %w", err)
	}
	for i := range st.Groups {
		st.Groups[i].Registrations = perGroup[strings.ToLower(st.Groups[i].ID)]
	}
	counts := map[string]int{}
	var last int64
	if e.sink != nil {
		msgs := e.sink.feed.snapshot()
		for _, m := range msgs {
			counts[m.DeviceID]++
		}
		e.sink.mu.Lock()
		st.Messages, last = e.sink.seq, e.sink.seq
		e.sink.mu.Unlock()
	}
	st.TelemetrySeq = last
	e.events.mu.Lock()
	st.EventSeq = e.events.seq
	e.events.mu.Unlock()
	e.mu.Lock()
	for i := range st.Devices {
		d := &st.Devices[i]
		d.ConnectionState = "Disconnected"
		if e.hub[d.DeviceID] != nil {
			d.ConnectionState = "Connected"
		}
		d.ConnectionSince = e.connTimes[d.DeviceID]
		d.LastActivity = e.activity[d.DeviceID]
		d.C2DQueued = len(e.c2d[d.DeviceID])
		d.Messages = counts[d.DeviceID]
	}
	e.mu.Unlock()
	sort.Slice(st.Groups, func(i, j int) bool { return strings.ToLower(st.Groups[i].ID) < strings.ToLower(st.Groups[j].ID) })
	sort.Slice(st.Enrollments, func(i, j int) bool {
		return strings.ToLower(st.Enrollments[i].RegistrationID) < strings.ToLower(st.Enrollments[j].RegistrationID)
	})
	sort.Slice(st.Registrations, func(i, j int) bool {
		return strings.ToLower(st.Registrations[i].RegistrationID) < strings.ToLower(st.Registrations[j].RegistrationID)
	})
	sort.Slice(st.Devices, func(i, j int) bool { return st.Devices[i].DeviceID < st.Devices[j].DeviceID })
	e.consoleRememberLeaves()
	return st, nil
}

// consoleFromTwin reads what trackerd reports: config {tempMinC, tempMaxC,
// pressureMinHPa, pressureMaxHPa, shipmentId}, buffer {depth},
// firmwareVersion.
func consoleFromTwin(d *ConsoleDevice, reported map[string]any) {
	num := func(m map[string]any, k string) (float64, bool) {
		f, ok := m[k].(float64)
		return f, ok
	}
	if cfg, ok := reported["config"].(map[string]any); ok {
		lo, okLo := num(cfg, "tempMinC")
		hi, okHi := num(cfg, "tempMaxC")
		if okLo && okHi && lo < hi {
			d.Thresholds.TempMinC, d.Thresholds.TempMaxC, d.Thresholds.Source = lo, hi, "twin"
		}
		plo, okPLo := num(cfg, "pressureMinHPa")
		phi, okPHi := num(cfg, "pressureMaxHPa")
		if okPLo && okPHi && plo < phi {
			d.Thresholds.PressureMinHPa, d.Thresholds.PressureMaxHPa = &plo, &phi
		}
		if s, ok := cfg["shipmentId"].(string); ok {
			d.Shipment = s
		}
	}
	if b, ok := reported["buffer"].(map[string]any); ok {
		if n, ok := num(b, "depth"); ok && n >= 0 {
			d.BufferDepth = int(n)
		}
	}
	if fw, ok := reported["firmwareVersion"].(string); ok {
		d.Firmware = fw
	}
}

func (e *Emulator) consoleStateAPI(w http.ResponseWriter, _ *http.Request, _ string, _ *consoleSession) {
	st, err := e.ConsoleState()
	if err != nil {
		consoleError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// ConsoleTelemetry returns the recent telemetry of one device (or of all
// when device is ""), at most limit points per device, in capture-time
// order.
func (e *Emulator) ConsoleTelemetry(device string, limit int) ConsoleTelemetry {
	out := ConsoleTelemetry{Devices: map[string][]ConsolePoint{}}
	if e.sink == nil {
		return out
	}
	msgs := e.sink.feed.snapshot()
	e.sink.mu.Lock()
	out.Seq = e.sink.seq
	e.sink.mu.Unlock()
	if n := len(msgs); n > 0 && msgs[n-1].Seq > out.Seq {
		out.Seq = msgs[n-1].Seq
	}
	// Newest first, so that the limit keeps the most recent points.
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if device != "" && m.DeviceID != device {
			continue
		}
		have := out.Devices[m.DeviceID]
		if len(have) >= limit {
			continue
		}
		pts := consolePoints(m.Payload)
		if len(pts) > limit-len(have) {
			pts = pts[len(pts)-(limit-len(have)):]
		}
		out.Devices[m.DeviceID] = append(have, pts...)
	}
	for id, pts := range out.Devices {
		sort.SliceStable(pts, func(i, j int) bool {
			if !pts[i].Time.Equal(pts[j].Time) {
				return pts[i].Time.Before(pts[j].Time)
			}
			return pts[i].Seq < pts[j].Seq
		})
		out.Devices[id] = pts
	}
	return out
}

func (e *Emulator) consoleTelemetryAPI(w http.ResponseWriter, r *http.Request, _ string, _ *consoleSession) {
	limit := consoleDefaultPoints
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > consoleMaxPoints {
			consoleError(w, http.StatusBadRequest, fmt.Sprintf("limit %q must be a number from 1 to %d", s, consoleMaxPoints))
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, e.ConsoleTelemetry(r.URL.Query().Get("device"), limit))
}

// consoleStream is the live view: a text/event-stream of "telemetry"
// events (ConsoleMessage) and "change" events (Event), each with the id
// "{telemetrySeq}.{eventSeq}" so the browser resumes after a reconnect
// (Last-Event-ID). Without a resume point it starts at the present. The
// handler runs on the request's goroutine and returns when the client goes
// away, the session ends or the emulator closes (the request context
// derives from the emulator's); it keeps no goroutine behind.
func (e *Emulator) consoleStream(w http.ResponseWriter, r *http.Request, key string, _ *consoleSession) {
	rc := http.NewResponseController(w)
	if e.sink == nil {
		consoleError(w, http.StatusServiceUnavailable, "emulator not started")
		return
	}
	tSeq, eSeq, err := consoleResume(r)
	if err != nil {
		consoleError(w, http.StatusBadRequest, err.Error())
		return
	}
	msgSeq := func(m Message) int64 { return m.Seq }
	evSeq := func(ev Event) int64 { return ev.Seq }
	if tSeq < 0 {
		tSeq = feedLast(e.sink.feed, msgSeq)
	}
	if eSeq < 0 {
		eSeq = feedLast(e.events, evSeq)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The retry hint and a first comment tell the browser the stream is up.
	fmt.Fprintf(w, "retry: 2000\n: stream from %d.%d\n\n", tSeq, eSeq)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx := r.Context()
	heartbeat := time.NewTicker(consoleHeartbeat)
	defer heartbeat.Stop()
	var buf bytes.Buffer
	for {
		if !e.consoleLive(key) {
			fmt.Fprint(w, "event: logout\ndata: {}\n\n")
			rc.Flush()
			return
		}
		msgs := feedAfter(e.sink.feed, tSeq, msgSeq, consoleStreamBatch)
		evs := feedAfter(e.events, eSeq, evSeq, consoleStreamBatch)
		buf.Reset()
		for _, ev := range evs {
			eSeq = ev.Seq
			raw, _ := json.Marshal(ev)
			fmt.Fprintf(&buf, "event: change\nid: %d.%d\ndata: %s\n\n", tSeq, eSeq, raw)
			if ev.Kind == EventHubConnect || ev.Kind == EventDPSConnect {
				e.consoleRememberLeaves()
			}
		}
		for _, m := range msgs {
			tSeq = m.Seq
			raw, _ := json.Marshal(ConsoleMessage{Seq: m.Seq, DeviceID: m.DeviceID, Enqueued: m.EnqueuedTime, Points: consolePoints(m.Payload)})
			fmt.Fprintf(&buf, "event: telemetry\nid: %d.%d\ndata: %s\n\n", tSeq, eSeq, raw)
		}
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			continue
		}
		tch, tcancel := feedNotify(e.sink.feed, tSeq, msgSeq)
		ech, ecancel := feedNotify(e.events, eSeq, evSeq)
		select {
		case <-tch:
		case <-ech:
		case <-heartbeat.C:
			_, err = fmt.Fprint(w, ": ping\n\n")
			if err == nil {
				err = rc.Flush()
			}
		case <-ctx.Done():
		}
		tcancel()
		ecancel()
		if err != nil || ctx.Err() != nil {
			return
		}
	}
}

// consoleResume reads where a stream resumes: Last-Event-ID
// "{telemetrySeq}.{eventSeq}" (a reconnect) or the query parameters
// after and events. -1 means "from now".
func consoleResume(r *http.Request) (tSeq, eSeq int64, err error) {
	tSeq, eSeq = -1, -1
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		a, b, ok := strings.Cut(id, ".")
		ta, errA := strconv.ParseInt(a, 10, 64)
		tb, errB := strconv.ParseInt(b, 10, 64)
		if ok && errA == nil && errB == nil && ta >= 0 && tb >= 0 {
			return ta, tb, nil
		}
	}
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		v    *int64
	}{{"after", &tSeq}, {"events", &eSeq}} {
		if s := q.Get(p.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return 0, 0, fmt.Errorf("%s %q must be a sequence number (0 or more)", p.name, s)
			}
			*p.v = n
		}
	}
	return tSeq, eSeq, nil
}

// feedLast returns the sequence number of f's newest item (0 if empty).
func feedLast[T any](f *feed[T], seqOf func(T) int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.items) == 0 {
		return 0
	}
	return seqOf(f.items[len(f.items)-1])
}

// feedAfter returns up to max items of f whose sequence number is above
// after, oldest first. Items are in sequence order, so it searches.
func feedAfter[T any](f *feed[T], after int64, seqOf func(T) int64, max int) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := sort.Search(len(f.items), func(i int) bool { return seqOf(f.items[i]) > after })
	j := min(len(f.items), i+max)
	if i >= j {
		return nil
	}
	return append([]T(nil), f.items[i:j]...)
}

// feedNotify returns a channel that receives the first item added to f
// with a sequence number above after (at once, closed, when f already has
// one) and a function that withdraws the request; call it in every case.
func feedNotify[T any](f *feed[T], after int64, seqOf func(T) int64) (<-chan T, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.items); n > 0 && seqOf(f.items[n-1]) > after {
		ch := make(chan T)
		close(ch)
		return ch, func() {}
	}
	w := &feedWaiter[T]{match: func(it T) bool { return seqOf(it) > after }, ch: make(chan T, 1)}
	f.waiters[w] = struct{}{}
	return w.ch, func() {
		f.mu.Lock()
		delete(f.waiters, w)
		f.mu.Unlock()
	}
}

// consoleRememberLeaves stores the leaf certificate of every live DPS and
// hub connection it has not stored yet, keyed by registration ID (the
// certificate's CN), so that a device can be disenrolled after it went
// offline.
func (e *Emulator) consoleRememberLeaves() {
	type leaf struct {
		id    string
		thumb string
		cert  *x509.Certificate
	}
	var fresh []leaf
	e.mu.Lock()
	c := &e.console
	c.mu.Lock()
	if c.leaves == nil {
		c.leaves = map[string]string{}
	}
	for _, s := range e.sessions {
		if len(s.chain) == 0 {
			continue
		}
		id := strings.ToLower(s.chain[0].Subject.CommonName)
		_, s256 := thumbprints(s.chain[0])
		if id == "" || c.leaves[id] == s256 {
			continue
		}
		c.leaves[id] = s256
		fresh = append(fresh, leaf{id, s256, s.chain[0]})
	}
	c.mu.Unlock()
	e.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	err := e.store.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucketConsoleLeaves))
		if err != nil {
			return err
		}
		for _, l := range fresh {
			if err := b.Put([]byte(l.id), l.cert.Raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Not fatal: the next look retries.
		c.mu.Lock()
		for _, l := range fresh {
			delete(c.leaves, l.id)
		}
		c.mu.Unlock()
		e.log.Warn("console: storing device certificates failed", "err", err)
	}
}
