package report

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// maxLine bounds one line of telemetry.jsonl. IoT Hub caps a message at
// 256 KiB; the monitor-events envelope and JSON escaping stay well below
// four times that.
const maxLine = 4 << 20

// Telemetry is what [Parse] read: every record once, and counts of what
// was read and dropped.
type Telemetry struct {
	// Records holds each (device, seq) once, ordered by device, then seq.
	Records []DeviceRecord
	// Stats counts lines, messages, duplicates and skipped input.
	Stats InputStats
}

// DeviceRecord is a record with the device that sent it.
type DeviceRecord struct {
	// Device is the sending device: the hub's authenticated origin, or the
	// batch's device field when the line has no origin.
	Device string
	// Enqueued is when the hub accepted the first copy (zero if unknown).
	Enqueued time.Time
	// Copies is how many times the record was received (1 = once).
	Copies int
	telemetry.Record
}

// InputStats counts what [Parse] read.
type InputStats struct {
	// Lines is the number of non-empty lines.
	Lines int `json:"lines"`
	// Messages is the number of telemetry batches read.
	Messages int `json:"messages"`
	// DuplicateMessages counts batches whose message id ($.mid) was
	// already seen: resent after a lost acknowledgement.
	DuplicateMessages int `json:"duplicateMessages"`
	// Records counts records in all batches, duplicates included.
	Records int `json:"records"`
	// DuplicateRecords counts records whose (device, seq) was already seen.
	DuplicateRecords int `json:"duplicateRecords"`
	// Skipped counts messages that are not telemetry batches (a Will
	// message, another schema version, a non-JSON body).
	Skipped int `json:"skipped"`
	// Malformed counts lines that are not JSON, or whose batch does not
	// decode.
	Malformed int `json:"malformed"`
	// FirstMalformedLine is the line number of the first malformed line.
	FirstMalformedLine int `json:"firstMalformedLine,omitempty"`
	// DeviceMismatch counts batches whose device field differs from the
	// hub's origin (the origin is used).
	DeviceMismatch int `json:"deviceMismatch,omitempty"`
}

// monitorLine is one line of telemetry.jsonl: an "az iot hub
// monitor-events --properties all" event, or a bare batch.
type monitorLine struct {
	Event *struct {
		Origin      string          `json:"origin"`
		Payload     json.RawMessage `json:"payload"`
		Annotations struct {
			Enqueued flexTime `json:"iothub-enqueuedtime"`
		} `json:"annotations"`
		Properties struct {
			System map[string]string `json:"system"`
		} `json:"properties"`
	} `json:"event"`
	V       int             `json:"v"`
	Device  string          `json:"device"`
	Records json.RawMessage `json:"records"`
}

// batch is a telemetry.Batch whose records are checked for presence.
type batch struct {
	V       int                 `json:"v"`
	Device  string              `json:"device"`
	Records *[]telemetry.Record `json:"records"`
}

// flexTime is an enqueued time as milliseconds since the epoch (what the
// emulator and the az CLI write) or an RFC 3339 string.
type flexTime time.Time

func (f *flexTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexTime(time.UnixMilli(ms).UTC())
		return nil
	}
	if ms, err := strconv.ParseFloat(s, 64); err == nil {
		*f = flexTime(time.UnixMilli(int64(ms)).UTC())
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("enqueued time %s is neither milliseconds nor RFC 3339", b)
	}
	*f = flexTime(t.UTC())
	return nil
}

// ReadFile parses the telemetry file at path ("-" is not special here).
func ReadFile(path string) (*Telemetry, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("report: telemetry file %s does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("report: %w", err)
	}
	defer f.Close()
	t, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return t, nil
}

type recKey struct {
	device string
	seq    uint64
}

// Parse reads telemetry.jsonl from r. Lines that are not telemetry are
// counted in [InputStats], not fatal; Parse fails on a read error, a line
// longer than 4 MiB, or input that holds malformed lines and no telemetry
// at all (then it is not a telemetry file).
func Parse(r io.Reader) (*Telemetry, error) {
	t := &Telemetry{}
	index := map[recKey]int{}
	mids := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	lineNo := 0
	var firstErr error
	malformed := func(err error) {
		t.Stats.Malformed++
		if t.Stats.FirstMalformedLine == 0 {
			t.Stats.FirstMalformedLine = lineNo
			firstErr = err
		}
	}
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		t.Stats.Lines++
		var ml monitorLine
		if err := json.Unmarshal(line, &ml); err != nil {
			malformed(err)
			continue
		}
		var device, mid string
		var enqueued time.Time
		var payload []byte
		switch {
		case ml.Event != nil:
			device = ml.Event.Origin
			mid = ml.Event.Properties.System["message_id"]
			enqueued = time.Time(ml.Event.Annotations.Enqueued)
			payload = ml.Event.Payload
		case ml.Records != nil:
			payload = line
		default:
			malformed(errors.New("neither an event nor a telemetry batch"))
			continue
		}
		b, ok, err := decodeBatch(payload)
		if err != nil {
			malformed(err)
			continue
		}
		if !ok {
			t.Stats.Skipped++
			continue
		}
		if device == "" {
			device = b.Device
		} else if b.Device != "" && b.Device != device {
			t.Stats.DeviceMismatch++
		}
		if device == "" {
			malformed(errors.New("batch names no device"))
			continue
		}
		t.Stats.Messages++
		if mid != "" {
			if mids[device+"\x00"+mid] {
				t.Stats.DuplicateMessages++
			}
			mids[device+"\x00"+mid] = true
		}
		for _, rec := range *b.Records {
			t.Stats.Records++
			rec.Time = rec.Time.UTC()
			k := recKey{device, rec.Seq}
			if i, seen := index[k]; seen {
				t.Stats.DuplicateRecords++
				old := &t.Records[i]
				old.Copies++
				if !trusted(&old.Record) && trusted(&rec) {
					old.Record = rec
				}
				continue
			}
			index[k] = len(t.Records)
			t.Records = append(t.Records, DeviceRecord{Device: device, Enqueued: enqueued, Copies: 1, Record: rec})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("report: line %d is longer than %d bytes: not a telemetry file", lineNo+1, maxLine)
		}
		return nil, fmt.Errorf("report: read telemetry: %w", err)
	}
	if t.Stats.Messages == 0 && t.Stats.Malformed > 0 {
		return nil, fmt.Errorf("report: line %d: %v: expected telemetry.jsonl lines as 'trackerctl emulator' writes them", t.Stats.FirstMalformedLine, firstErr)
	}
	slices.SortFunc(t.Records, func(a, b DeviceRecord) int {
		return cmp.Or(strings.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq))
	})
	return t, nil
}

// decodeBatch decodes a payload. ok is false for a payload that is not a
// telemetry batch of the supported schema version.
func decodeBatch(payload []byte) (b batch, ok bool, err error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 || string(payload) == "null" {
		return b, false, nil
	}
	if payload[0] == '"' {
		// A body sent without the JSON content type is printed as a
		// string; it may still hold a batch.
		var s string
		if err := json.Unmarshal(payload, &s); err != nil {
			return b, false, err
		}
		payload = []byte(strings.TrimSpace(s))
		if len(payload) == 0 || payload[0] != '{' {
			return b, false, nil
		}
	}
	if payload[0] != '{' {
		return b, false, nil
	}
	var probe struct {
		V       int             `json:"v"`
		Device  string          `json:"device"`
		Records json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return b, false, nil // a JSON body of another shape
	}
	if probe.Records == nil || probe.V != telemetry.SchemaVersion || string(probe.Records) == "null" {
		return b, false, nil
	}
	var recs []telemetry.Record
	if err := json.Unmarshal(probe.Records, &recs); err != nil {
		return b, false, fmt.Errorf("telemetry batch does not decode: %w", err)
	}
	b = batch{V: probe.V, Device: probe.Device, Records: &recs}
	return b, true, nil
}

// trusted reports whether a record's time comes from a trusted clock.
func trusted(r *telemetry.Record) bool { return r.Clock != ClockUnsynced || r.Retimed }

// Clock sources, as in [telemetry.Record.Clock].
const (
	ClockGPS      = "gps"
	ClockSystem   = "system"
	ClockUnsynced = "unsynced"
)

// ShipmentInfo summarises one shipment of one device found in the input.
type ShipmentInfo struct {
	Device   string `json:"device"`
	Shipment string `json:"shipment"`
	// Records counts the shipment's records.
	Records int `json:"records"`
	// First and Last are the earliest and latest trusted record times
	// (zero when no record has one).
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Sealed says a seal record was received.
	Sealed bool `json:"sealed"`
}

// Shipments lists the shipments in t, by device, then first record time.
// Records outside any shipment are not listed.
func (t *Telemetry) Shipments() []ShipmentInfo {
	idx := map[[2]string]int{}
	var out []ShipmentInfo
	for i := range t.Records {
		r := &t.Records[i]
		if r.Shipment == "" {
			continue
		}
		k := [2]string{r.Device, r.Shipment}
		j, ok := idx[k]
		if !ok {
			j = len(out)
			idx[k] = j
			out = append(out, ShipmentInfo{Device: r.Device, Shipment: r.Shipment})
		}
		s := &out[j]
		s.Records++
		if r.Kind == telemetry.KindSeal {
			s.Sealed = true
		}
		if !trusted(&r.Record) {
			continue
		}
		if s.First.IsZero() || r.Time.Before(s.First) {
			s.First = r.Time
		}
		if r.Time.After(s.Last) {
			s.Last = r.Time
		}
	}
	slices.SortFunc(out, func(a, b ShipmentInfo) int {
		if c := strings.Compare(a.Device, b.Device); c != 0 {
			return c
		}
		if c := a.First.Compare(b.First); c != 0 {
			return c
		}
		return strings.Compare(a.Shipment, b.Shipment)
	})
	return out
}
