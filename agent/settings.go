package agent

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/coldchain/tracker/agent/config"
)

// Settings are the values the cloud may change at run time through the
// twin's desired properties. They start from the config file.
type Settings struct {
	Interval       time.Duration `json:"telemetryInterval"`
	TempMinC       float64       `json:"tempMinC"`
	TempMaxC       float64       `json:"tempMaxC"`
	PressureMinHPa float64       `json:"pressureMinHPa"`
	PressureMaxHPa float64       `json:"pressureMaxHPa"`
	ShipmentID     string        `json:"shipmentId"`
}

func settingsFromConfig(c *config.Config) Settings {
	return Settings{
		Interval:       c.Telemetry.Interval.D(),
		TempMinC:       c.Telemetry.TempMinC,
		TempMaxC:       c.Telemetry.TempMaxC,
		PressureMinHPa: c.Telemetry.PressureMinHPa,
		PressureMaxHPa: c.Telemetry.PressureMaxHPa,
		ShipmentID:     c.Telemetry.ShipmentID,
	}
}

// desiredDoc is the shape of the twin's desired properties. Every field is
// optional; telemetryInterval is in seconds (a number) or a Go duration
// string. Thresholds may also come nested as {"thresholds": {...}}.
type desiredDoc struct {
	TelemetryInterval json.RawMessage `json:"telemetryInterval"`
	TempMinC          *float64        `json:"tempMinC"`
	TempMaxC          *float64        `json:"tempMaxC"`
	PressureMinHPa    *float64        `json:"pressureMinHPa"`
	PressureMaxHPa    *float64        `json:"pressureMaxHPa"`
	ShipmentID        *string         `json:"shipmentId"`
	Thresholds        *struct {
		TempMinC       *float64 `json:"tempMinC"`
		TempMaxC       *float64 `json:"tempMaxC"`
		PressureMinHPa *float64 `json:"pressureMinHPa"`
		PressureMaxHPa *float64 `json:"pressureMaxHPa"`
	} `json:"thresholds"`
}

// applyDesired returns s with the desired patch applied. An invalid value
// is rejected with an error naming it, and nothing of the patch applies.
func applyDesired(s Settings, patch []byte) (Settings, error) {
	var d desiredDoc
	if err := json.Unmarshal(patch, &d); err != nil {
		return s, fmt.Errorf("desired properties are not a JSON object: %w", err)
	}
	n := s
	if len(d.TelemetryInterval) > 0 && string(d.TelemetryInterval) != "null" {
		iv, err := parseInterval(d.TelemetryInterval)
		if err != nil {
			return s, err
		}
		n.Interval = iv
	}
	set := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&n.TempMinC, d.TempMinC)
	set(&n.TempMaxC, d.TempMaxC)
	set(&n.PressureMinHPa, d.PressureMinHPa)
	set(&n.PressureMaxHPa, d.PressureMaxHPa)
	if t := d.Thresholds; t != nil {
		set(&n.TempMinC, t.TempMinC)
		set(&n.TempMaxC, t.TempMaxC)
		set(&n.PressureMinHPa, t.PressureMinHPa)
		set(&n.PressureMaxHPa, t.PressureMaxHPa)
	}
	if d.ShipmentID != nil {
		if len(*d.ShipmentID) > 128 {
			return s, fmt.Errorf("shipmentId is longer than 128 characters")
		}
		n.ShipmentID = *d.ShipmentID
	}
	if n.TempMinC >= n.TempMaxC || n.PressureMinHPa >= n.PressureMaxHPa {
		return s, fmt.Errorf("thresholds: need min < max (temperature %v..%v, pressure %v..%v)", n.TempMinC, n.TempMaxC, n.PressureMinHPa, n.PressureMaxHPa)
	}
	for _, v := range []float64{n.TempMinC, n.TempMaxC, n.PressureMinHPa, n.PressureMaxHPa} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return s, fmt.Errorf("thresholds must be finite numbers")
		}
	}
	return n, nil
}

func parseInterval(raw json.RawMessage) (time.Duration, error) {
	var secs float64
	if err := json.Unmarshal(raw, &secs); err == nil {
		d := time.Duration(secs * float64(time.Second))
		return checkInterval(d)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("telemetryInterval %q is not a duration (use seconds or a string like \"30s\")", s)
		}
		return checkInterval(d)
	}
	return 0, fmt.Errorf("telemetryInterval must be a number of seconds or a duration string")
}

func checkInterval(d time.Duration) (time.Duration, error) {
	if d < 100*time.Millisecond || d > 24*time.Hour {
		return 0, fmt.Errorf("telemetryInterval %v is outside 100ms..24h", d)
	}
	return d, nil
}

// alerts returns the thresholds env is outside of.
func (s Settings) alerts(tempC, pressureHPa float64) []string {
	var a []string
	if tempC > s.TempMaxC {
		a = append(a, "temp_high")
	}
	if tempC < s.TempMinC {
		a = append(a, "temp_low")
	}
	if pressureHPa > s.PressureMaxHPa {
		a = append(a, "pressure_high")
	}
	if pressureHPa < s.PressureMinHPa {
		a = append(a, "pressure_low")
	}
	return a
}
