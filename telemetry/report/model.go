package report

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// Errors [Analyze] returns; the typed errors below wrap them.
var (
	// ErrUnknownShipment: no record in the input belongs to the shipment.
	ErrUnknownShipment = errors.New("report: unknown shipment")
	// ErrAmbiguousShipment: several devices carried the shipment and no
	// device was chosen.
	ErrAmbiguousShipment = errors.New("report: shipment carried by several devices")
	// ErrNoTrustedTime: none of the shipment's records has a trusted
	// timestamp, so nothing can be placed on a time axis.
	ErrNoTrustedTime = errors.New("report: no record of the shipment has a trusted time")
)

// ShipmentError is returned when the shipment asked for is not found, or
// is ambiguous; Found lists the shipments that are in the input (for an
// ambiguous one, the devices that carried it).
type ShipmentError struct {
	// Shipment and Device are what was asked for (Device may be "").
	Shipment string
	Device   string
	// Found lists the candidates.
	Found []ShipmentInfo
	// Err is ErrUnknownShipment or ErrAmbiguousShipment.
	Err error
}

// Error lists the shipments found, one a line.
func (e *ShipmentError) Error() string {
	var b strings.Builder
	if errors.Is(e.Err, ErrAmbiguousShipment) {
		fmt.Fprintf(&b, "report: shipment %q was carried by %d devices; choose one with a device filter:", e.Shipment, len(e.Found))
	} else {
		who := ""
		if e.Device != "" {
			who = " of device " + strconv.Quote(e.Device)
		}
		fmt.Fprintf(&b, "report: no records of shipment %q%s", e.Shipment, who)
		if len(e.Found) == 0 {
			b.WriteString("; the input holds no shipment at all")
			return b.String()
		}
		b.WriteString("; shipments found:")
	}
	for _, s := range e.Found {
		fmt.Fprintf(&b, "\n  %s (device %s, %d records", s.Shipment, s.Device, s.Records)
		if !s.First.IsZero() {
			fmt.Fprintf(&b, ", %s to %s", s.First.Format(time.RFC3339), s.Last.Format(time.RFC3339))
		}
		if s.Sealed {
			b.WriteString(", sealed")
		}
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns ErrUnknownShipment or ErrAmbiguousShipment.
func (e *ShipmentError) Unwrap() error { return e.Err }

// Thresholds is the acceptable band for the shipment. A reading is out
// of band when strictly below the minimum or strictly above the maximum.
type Thresholds struct {
	// TempMinC and TempMaxC bound the temperature (°C), PressureMinHPa
	// and PressureMaxHPa the air pressure (hPa).
	TempMinC       float64 `json:"tempMinC"`
	TempMaxC       float64 `json:"tempMaxC"`
	PressureMinHPa float64 `json:"pressureMinHPa"`
	PressureMaxHPa float64 `json:"pressureMaxHPa"`
}

// DefaultThresholds is 2–8 °C (refrigerated pharmaceuticals) and
// 870–1085 hPa (air pressure from sea level up to road passes of about
// 1200 m, with weather margin).
var DefaultThresholds = Thresholds{TempMinC: 2, TempMaxC: 8, PressureMinHPa: 870, PressureMaxHPa: 1085}

// Validate reports a band whose minimum is not below its maximum.
func (t Thresholds) Validate() error {
	var errs []error
	if !(t.TempMinC < t.TempMaxC) {
		errs = append(errs, fmt.Errorf("report: temperature minimum %g °C must be below the maximum %g °C", t.TempMinC, t.TempMaxC))
	}
	if !(t.PressureMinHPa < t.PressureMaxHPa) {
		errs = append(errs, fmt.Errorf("report: pressure minimum %g hPa must be below the maximum %g hPa", t.PressureMinHPa, t.PressureMaxHPa))
	}
	return errors.Join(errs...)
}

// Options selects the shipment and sets the analysis parameters.
type Options struct {
	// Shipment is the shipment ID (required).
	Shipment string
	// Device restricts the shipment to one device; "" accepts the only
	// device that carried it.
	Device string
	// Thresholds is the band; the zero value means [DefaultThresholds].
	Thresholds Thresholds
	// MaxHold is the longest interval one reading stands for; longer
	// intervals between readings are unobserved time. Zero means three
	// times the median interval between readings (at least a minute;
	// 15 minutes when there are fewer than two readings).
	MaxHold time.Duration
}

// Duration is a time.Duration that marshals to JSON as seconds.
type Duration time.Duration

// MarshalJSON writes the duration in seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

// UnmarshalJSON reads a duration in seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("report: duration %s is not a number of seconds", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Quantities and directions of an [Excursion].
const (
	Temperature = "temperature"
	Pressure    = "pressure"
	High        = "high"
	Low         = "low"
)

// Report is the analysis of one shipment.
type Report struct {
	// Shipment and Device identify the shipment and the tracker.
	Shipment string `json:"shipment"`
	Device   string `json:"device"`
	// Thresholds is the band the analysis used.
	Thresholds Thresholds `json:"thresholds"`
	// MaxHold is the longest interval one reading stood for.
	MaxHold Duration `json:"maxHoldSec"`
	// Loading is the time of the shipment's first record.
	Loading time.Time `json:"loading"`
	// Delivery is the seal record's time, or the last record's.
	Delivery time.Time `json:"delivery"`
	// Sealed says Delivery comes from a seal record.
	Sealed bool `json:"sealed"`
	// Duration is Delivery minus Loading.
	Duration Duration `json:"durationSec"`

	// Temperature and Pressure summarise each quantity.
	Temperature Quantity `json:"temperature"`
	Pressure    Quantity `json:"pressure"`
	// Excursions are ordered by start time.
	Excursions []Excursion `json:"excursions"`
	// DeviceAlerts are the runs of alerts the device raised itself.
	DeviceAlerts []AlertRun `json:"deviceAlerts"`

	// Route is the GPS track.
	Route Route `json:"route"`
	// Completeness says how far the data covers the shipment.
	Completeness Completeness `json:"completeness"`
	// Input counts what was read from the whole telemetry file.
	Input InputStats `json:"input"`

	// Readings are the shipment's readings with a trusted time, in time
	// order: what the charts plot.
	Readings []Reading `json:"-"`
}

// Quantity summarises temperature or pressure over the shipment.
type Quantity struct {
	// Unit is "°C" or "hPa".
	Unit string `json:"unit"`
	// Readings counts readings that carry the quantity.
	Readings int `json:"readings"`
	// Min and Max are the extreme values, first reached at MinAt and
	// MaxAt.
	Min   float64   `json:"min"`
	MinAt time.Time `json:"minAt"`
	Max   float64   `json:"max"`
	MaxAt time.Time `json:"maxAt"`
	// Mean is weighted by the time each reading stands for (the
	// arithmetic mean when no reading stands for any time).
	Mean float64 `json:"mean"`
	// MKT is the mean kinetic temperature (temperature only; ΔH/R =
	// 10000 K as USP <1079>), time-weighted like Mean.
	MKT *float64 `json:"mkt,omitempty"`
	// Above and Below are the time spent above the maximum and below the
	// minimum; Observed is the time covered by readings at all.
	Above    Duration `json:"aboveSec"`
	Below    Duration `json:"belowSec"`
	Observed Duration `json:"observedSec"`
	// Excursions counts this quantity's excursions.
	Excursions int `json:"excursions"`
}

// Excursion is a maximal run of consecutive readings outside the band in
// one direction.
type Excursion struct {
	Quantity  string `json:"quantity"`  // temperature or pressure
	Direction string `json:"direction"` // high or low
	// Threshold is the limit that was crossed.
	Threshold float64   `json:"threshold"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	// Duration is End minus Start.
	Duration Duration `json:"durationSec"`
	// Unobserved is the part of Duration no reading covered (gaps longer
	// than MaxHold, sensor faults).
	Unobserved Duration `json:"unobservedSec"`
	// Extreme is the highest (high) or lowest (low) value, at ExtremeAt.
	Extreme   float64   `json:"extreme"`
	ExtremeAt time.Time `json:"extremeAt"`
	// Readings counts the readings outside the band; FirstSeq and
	// LastSeq are the first and last of them.
	Readings int    `json:"readings"`
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
	// OpenEnded is set when the excursion was not ended by a reading back
	// in band (a gap, a sensor fault or the end of the shipment came
	// first): the real end is unknown, End is the end of the last reading.
	OpenEnded bool `json:"openEnded,omitempty"`
	// OpenStart is set when the reading before the first one outside the
	// band was not an adjacent reading inside it (the shipment's start, a
	// gap or a sensor fault came first): it may have begun earlier.
	OpenStart bool `json:"openStart,omitempty"`
	// DeviceAlerted is set when the device raised the matching alert on
	// one of the readings.
	DeviceAlerted bool `json:"deviceAlerted"`
	// Where is the position at the start, if known.
	Where *Position `json:"where,omitempty"`
}

// AlertRun is a run of consecutive readings carrying one device alert.
type AlertRun struct {
	// Alert is the alert name (telemetry.AlertTempHigh, ...).
	Alert string `json:"alert"`
	// Start is the first reading's time, End the end of the last one's
	// interval.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Readings counts the readings; FirstSeq and LastSeq bound them.
	Readings int    `json:"readings"`
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
}

// Position is a point on the route.
type Position struct {
	// Time is the reading's time; Lat and Lon are in degrees.
	Time time.Time `json:"time"`
	Lat  float64   `json:"lat"`
	Lon  float64   `json:"lon"`
}

// Route is where the shipment went.
type Route struct {
	// Fixes counts readings with a current position (2D or 3D fix, not
	// stale).
	Fixes int `json:"fixes"`
	// DistanceKm is the great-circle length of the track.
	DistanceKm float64 `json:"distanceKm"`
	// Start and End are the first and last positions.
	Start *Position `json:"start,omitempty"`
	End   *Position `json:"end,omitempty"`
	// South, West, North and East bound the track (degrees). East may be
	// above 180 when the track crosses the antimeridian.
	South float64 `json:"south"`
	West  float64 `json:"west"`
	North float64 `json:"north"`
	East  float64 `json:"east"`
	// Points is the track, in time order.
	Points []Position `json:"-"`
}

// Completeness says how much of the shipment the data covers, and how
// far its timestamps can be trusted.
type Completeness struct {
	// Records counts the shipment's records (each once); Readings, Seals
	// and Other break it down by kind.
	Records  int `json:"records"`
	Readings int `json:"readings"`
	Seals    int `json:"seals"`
	Other    int `json:"other,omitempty"`
	// Duplicates counts extra copies received of the shipment's records.
	Duplicates int `json:"duplicates"`
	// FirstSeq and LastSeq bound the shipment's sequence numbers.
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
	// MissingSeqs counts sequence numbers between FirstSeq and LastSeq
	// that no record of the device carries; MissingExplained of them lie
	// in the range of a gap event.
	MissingSeqs      uint64     `json:"missingSeqs"`
	MissingExplained uint64     `json:"missingExplained"`
	Missing          []SeqRange `json:"missing"`
	// GapEvents are the buffer's reports of evicted or lost records whose
	// range overlaps the shipment.
	GapEvents []GapEvent `json:"gapEvents"`
	// Evicted sums the exact counts of the gap events (superseded ones
	// excluded); EvictedUnknown counts events that lost an unknown number.
	Evicted        uint64 `json:"evicted"`
	EvictedUnknown int    `json:"evictedUnknown"`
	// TimeGaps are intervals between consecutive records longer than
	// MaxHold.
	TimeGaps []TimeGap `json:"timeGaps"`
	// Unobserved is the shipment's duration not covered by a reading
	// with environment data.
	Unobserved Duration `json:"unobservedSec"`
	// MedianInterval is the median interval between readings.
	MedianInterval Duration `json:"medianIntervalSec"`
	// SensorFaults counts readings without environment data, by reason.
	SensorFaults int           `json:"sensorFaults"`
	FaultReasons []ReasonCount `json:"faultReasons,omitempty"`
	// Clock is the source of the timestamps.
	Clock ClockQuality `json:"clock"`
	// NoFix counts readings without a position; StaleFix those whose
	// position was the last known one.
	NoFix    int `json:"noFix"`
	StaleFix int `json:"staleFix"`
}

// SeqRange is a run of missing sequence numbers.
type SeqRange struct {
	// First, Last and Count describe the run.
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	Count uint64 `json:"count"`
	// Explained counts the numbers in a gap event's range; Reasons are
	// those events' reasons.
	Explained uint64   `json:"explained"`
	Reasons   []string `json:"reasons,omitempty"`
}

// GapEvent is a gap record from the device's buffer.
type GapEvent struct {
	// Seq, Time and Clock are the gap record's own.
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Clock string    `json:"clock"`
	// FirstSeq and LastSeq bound the records lost.
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
	// Count is the number of records lost (0: unknown, see Reason).
	Count  uint64 `json:"count"`
	Reason string `json:"reason"`
	// Superseded is set when a later event of the same reason covers this
	// one's range and count (the buffer folded it), so it is not counted
	// twice.
	Superseded bool `json:"superseded,omitempty"`
	// Beyond is set when the range reaches outside the shipment's
	// sequence numbers, so part of the loss may belong to a neighbour.
	Beyond bool `json:"beyond,omitempty"`
}

// TimeGap is an interval without readings.
type TimeGap struct {
	// From is the last reading before the gap, To the next record.
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Duration Duration  `json:"durationSec"`
}

// ReasonCount is a count per reason.
type ReasonCount struct {
	// Reason is the device's text (a reading's envFault).
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// ClockQuality counts the shipment's records by the source of their time.
type ClockQuality struct {
	// GPS, System, Unsynced and Other count records by clock source.
	GPS      int `json:"gps"`
	System   int `json:"system"`
	Unsynced int `json:"unsynced"`
	Other    int `json:"other,omitempty"`
	// Retimed counts records timestamped after capture, once the clock
	// was trusted (they count under their final source).
	Retimed int `json:"retimed"`
	// Untimed counts unsynced records never retimed: left out of
	// everything on the time axis. UntimedOutOfBand of them had a value
	// outside the band.
	Untimed          int `json:"untimed"`
	UntimedOutOfBand int `json:"untimedOutOfBand"`
}

// Reading is one reading with a trusted time.
type Reading struct {
	// Seq, Time, Clock, Retimed, Alerts and Fix are the record's.
	Seq     uint64
	Time    time.Time
	Clock   string
	Retimed bool
	// TempC and PressureHPa are nil when the sensor failed, and Fault
	// says why.
	TempC       *float64
	PressureHPa *float64
	Fault       string
	Alerts      []string
	Fix         *telemetry.Fix
	// Hold is how long the reading stands for: up to the next record,
	// at most MaxHold.
	Hold time.Duration
	// Gap is set when the interval to the next record exceeded MaxHold.
	Gap bool
}
