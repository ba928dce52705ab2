package agent

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestApplyDesired(t *testing.T) {
	base := Settings{Interval: time.Minute, TempMinC: 2, TempMaxC: 8, PressureMinHPa: 870, PressureMaxHPa: 1085}
	tests := []struct {
		name    string
		patch   string
		want    Settings
		wantErr string
	}{
		{"interval seconds", `{"telemetryInterval": 15, "$version": 3}`, Settings{Interval: 15 * time.Second, TempMinC: 2, TempMaxC: 8, PressureMinHPa: 870, PressureMaxHPa: 1085}, ""},
		{"interval string and shipment", `{"telemetryInterval": "2m", "shipmentId": "SHP-1"}`, Settings{Interval: 2 * time.Minute, TempMinC: 2, TempMaxC: 8, PressureMinHPa: 870, PressureMaxHPa: 1085, ShipmentID: "SHP-1"}, ""},
		{"nested thresholds", `{"thresholds": {"tempMinC": -20, "tempMaxC": -15}}`, Settings{Interval: time.Minute, TempMinC: -20, TempMaxC: -15, PressureMinHPa: 870, PressureMaxHPa: 1085}, ""},
		{"inverted thresholds rejected", `{"tempMinC": 9}`, base, "min < max"},
		{"tiny interval rejected", `{"telemetryInterval": 0.001}`, base, "outside"},
		{"bad interval string", `{"telemetryInterval": "soon"}`, base, "not a duration"},
		{"not an object", `[1,2]`, base, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applyDesired(base, []byte(tt.patch))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("applyDesired(%s) error = %v, want %q", tt.patch, err, tt.wantErr)
				}
				if got != base {
					t.Errorf("a rejected patch changed the settings: %+v", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("applyDesired(%s) = %+v, %v; want %+v", tt.patch, got, err, tt.want)
			}
		})
	}
}

func TestAlerts(t *testing.T) {
	s := Settings{TempMinC: 2, TempMaxC: 8, PressureMinHPa: 870, PressureMaxHPa: 1085}
	if a := s.alerts(5, 1013); len(a) != 0 {
		t.Errorf("alerts(5, 1013) = %v, want none", a)
	}
	if a := s.alerts(9.5, 850); !slices.Equal(a, []string{"temp_high", "pressure_low"}) {
		t.Errorf("alerts(9.5, 850) = %v", a)
	}
}
