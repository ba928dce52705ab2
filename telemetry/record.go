package telemetry

import (
	"encoding/json"
	"fmt"
	"time"
)

// SchemaVersion is the version of the [Batch] body format.
const SchemaVersion = 1

// Kind says what a record reports.
type Kind string

// Record kinds.
const (
	// KindReading is a periodic sample: environment and position.
	KindReading Kind = "reading"
	// KindGap reports records evicted from a full buffer.
	KindGap Kind = "gap"
	// KindSeal closes a shipment: no later record belongs to it.
	KindSeal Kind = "seal"
)

// Alert names, in [Record.Alerts].
const (
	AlertTempHigh     = "temp_high"
	AlertTempLow      = "temp_low"
	AlertPressureHigh = "pressure_high"
	AlertPressureLow  = "pressure_low"
)

// Record is one sample, as stored in the buffer and sent in a [Batch].
type Record struct {
	// Seq is the device's sequence number: strictly increasing, never
	// reused, persisted across restarts.
	Seq uint64 `json:"seq"`
	// Kind is reading, gap or seal.
	Kind Kind `json:"kind"`
	// Time is the capture time (UTC).
	Time time.Time `json:"time"`
	// Clock is the source of Time: gps, system or unsynced.
	Clock string `json:"clock"`
	// Retimed is set when Time was corrected after capture, because the
	// clock was not yet trusted when the reading was taken.
	Retimed bool `json:"retimed,omitempty"`
	// Boot and Mono locate an unsynced reading on the monotonic clock of the
	// agent run that took it, so it can be re-timestamped later.
	Boot string  `json:"boot,omitempty"`
	Mono float64 `json:"mono,omitempty"`
	// Shipment is the shipment the record belongs to ("" before loading).
	Shipment string `json:"shipment,omitempty"`

	// Env is the environment reading; nil when the sensor failed.
	Env *Env `json:"env,omitempty"`
	// EnvFault says why there is no reading (sensor missing, implausible
	// values, bus error).
	EnvFault string `json:"envFault,omitempty"`
	// Fix is the latest position; nil when there has never been a fix.
	Fix *Fix `json:"fix,omitempty"`
	// Alerts lists thresholds the reading is outside of.
	Alerts []string `json:"alerts,omitempty"`

	// Gap describes evicted records (Kind gap).
	Gap *Gap `json:"gap,omitempty"`
}

// Env is an environment reading. Units are in the field names.
type Env struct {
	TempC       float64  `json:"tempC"`
	PressureHPa float64  `json:"pressureHPa"`
	HumidityPct *float64 `json:"humidityPct,omitempty"`
}

// Fix is a GPS position, with gpsd's TPV names.
type Fix struct {
	Time   time.Time `json:"time"`
	Mode   int       `json:"mode"` // 1 no fix, 2 2D, 3 3D
	Lat    float64   `json:"lat"`
	Lon    float64   `json:"lon"`
	AltMSL *float64  `json:"altMSL,omitempty"`
	Speed  *float64  `json:"speed,omitempty"` // m/s
	Track  *float64  `json:"track,omitempty"` // degrees true
	HDOP   *float64  `json:"hdop,omitempty"`
	Sats   int       `json:"sats,omitempty"`
	// Stale is set when the receiver has gone quiet or lost the fix; the
	// position is then the last good one.
	Stale bool `json:"stale,omitempty"`
}

// Gap reports evicted records.
type Gap struct {
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
	Count    uint64 `json:"count"`
	Reason   string `json:"reason"`
}

// IsAlert reports whether the record must be sent at once and never be
// evicted.
func (r *Record) IsAlert() bool { return len(r.Alerts) > 0 || r.Kind == KindSeal || r.Kind == KindGap }

// Marshal encodes the record for the buffer.
func (r *Record) Marshal() ([]byte, error) { return json.Marshal(r) }

// UnmarshalRecord decodes a record stored by [Record.Marshal].
func UnmarshalRecord(data []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("telemetry: decode record: %w", err)
	}
	return &r, nil
}

// Batch is the body of one device-to-cloud message.
type Batch struct {
	V       int      `json:"v"`
	Device  string   `json:"device"`
	Records []Record `json:"records"`
}

// MessageID is the stable $.mid of a message carrying the given sequence
// numbers (in order): "{device}-{first}" for one record,
// "{device}-{first}-{last}-{count}" for more.
func MessageID(device string, seqs []uint64) string {
	switch len(seqs) {
	case 0:
		return device + "-empty"
	case 1:
		return fmt.Sprintf("%s-%d", device, seqs[0])
	}
	return fmt.Sprintf("%s-%d-%d-%d", device, seqs[0], seqs[len(seqs)-1], len(seqs))
}
