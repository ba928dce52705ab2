package agent

import "time"

// Status is what "trackerd status" shows, and what the status direct
// method returns. It never contains key material.
type Status struct {
	Version  string    `json:"version"`
	Now      time.Time `json:"now"`
	Started  time.Time `json:"started"`
	Identity struct {
		RegistrationID string    `json:"registrationId"`
		DeviceID       string    `json:"deviceId,omitempty"`
		Hub            string    `json:"hub,omitempty"`
		CertSubject    string    `json:"certSubject"`
		CertIssuer     string    `json:"certIssuer"`
		CertNotAfter   time.Time `json:"certNotAfter"`
		CertSHA1       string    `json:"certSha1"`
	} `json:"identity"`
	Provisioning struct {
		State       string    `json:"state"` // unprovisioned, registering, assigned, disabled, rejected, backoff, deprovisioned
		LastError   string    `json:"lastError,omitempty"`
		NextAttempt time.Time `json:"nextAttempt,omitzero"`
		Attempts    int       `json:"attempts"`
		AssignedAt  time.Time `json:"assignedAt,omitzero"`
	} `json:"provisioning"`
	Connection struct {
		State      string    `json:"state"` // connected, disconnected
		Since      time.Time `json:"since,omitzero"`
		LastError  string    `json:"lastError,omitempty"`
		Reconnects int       `json:"reconnects"`
	} `json:"connection"`
	Clock struct {
		Source string    `json:"source"`
		Floor  time.Time `json:"floor"`
	} `json:"clock"`
	Sensor struct {
		Driver      string    `json:"driver"`
		Healthy     bool      `json:"healthy"`
		TempC       *float64  `json:"tempC,omitempty"`
		PressureHPa *float64  `json:"pressureHPa,omitempty"`
		At          time.Time `json:"at,omitzero"`
		LastError   string    `json:"lastError,omitempty"`
		Errors      int       `json:"errors"`
	} `json:"sensor"`
	GPS struct {
		Driver    string    `json:"driver"`
		Healthy   bool      `json:"healthy"`
		Mode      int       `json:"mode"`
		Lat       *float64  `json:"lat,omitempty"`
		Lon       *float64  `json:"lon,omitempty"`
		Sats      int       `json:"sats"`
		FixTime   time.Time `json:"fixTime,omitzero"`
		LastError string    `json:"lastError,omitempty"`
	} `json:"gps"`
	Buffer struct {
		Sync         string    `json:"sync"`
		Depth        int       `json:"depth"`
		Bytes        int64     `json:"bytes"`
		OldestUnsent time.Time `json:"oldestUnsent,omitzero"`
		NextSeq      uint64    `json:"nextSeq"`
		Evicted      uint64    `json:"evicted"`
	} `json:"buffer"`
	Telemetry struct {
		ShipmentID string    `json:"shipmentId,omitempty"`
		Interval   string    `json:"interval"`
		Sent       uint64    `json:"sent"`
		Messages   uint64    `json:"messages"`
		LastSent   time.Time `json:"lastSent,omitzero"`
		Alerts     uint64    `json:"alerts"`
	} `json:"telemetry"`
	Warnings []Warning `json:"warnings"`
}

// Warning is one of the recent warnings kept for the status.
type Warning struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
}

// maxWarnings is how many recent warnings the status keeps.
const maxWarnings = 10
