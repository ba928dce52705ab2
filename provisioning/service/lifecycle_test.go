package service

import (
	"encoding/json"
	"testing"
)

func TestSameHost(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"hub1.azure-devices.net", "HUB1.azure-devices.net", true},
		{"localhost:18883", "localhost:8443", true},
		{"localhost", "localhost:8443", true},
		{"hub1.azure-devices.net", "hub2.azure-devices.net", false},
		{"[::1]:8883", "::1", true},
	}
	for _, tt := range tests {
		if got := SameHost(tt.a, tt.b); got != tt.want {
			t.Errorf("SameHost(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestReportedUnsent(t *testing.T) {
	tests := []struct {
		json   string
		want   int
		wantOK bool
	}{
		{`{"unsent":12}`, 12, true},
		{`{"buffer":{"unsent":3,"depth":9}}`, 3, true},
		{`{"buffer":{"depth":9}}`, 9, true},
		{`{"buffer":"full"}`, 0, false},
		{`{"unsent":-1}`, 0, false},
		{`{}`, 0, false},
	}
	for _, tt := range tests {
		var m map[string]any
		if err := json.Unmarshal([]byte(tt.json), &m); err != nil {
			t.Fatal(err)
		}
		got, ok := ReportedUnsent(m)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ReportedUnsent(%s) = %d, %v, want %d, %v", tt.json, got, ok, tt.want, tt.wantOK)
		}
	}
}
