package agent_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/telemetry"
)

// records returns every record the hub received from id, deduplicated by
// sequence number, in sequence order.
func (f *fleet) records(id string) []telemetry.Record {
	f.t.Helper()
	bySeq := map[uint64]telemetry.Record{}
	var maxSeq uint64
	for _, m := range f.emu.Telemetry() {
		if !strings.EqualFold(m.DeviceID, id) {
			continue
		}
		var b telemetry.Batch
		if err := json.Unmarshal(m.Payload, &b); err != nil {
			f.t.Fatalf("message %s from %s is not a telemetry batch: %v", m.MessageID(), id, err)
		}
		for _, r := range b.Records {
			bySeq[r.Seq] = r
			maxSeq = max(maxSeq, r.Seq)
		}
	}
	out := make([]telemetry.Record, 0, len(bySeq))
	for s := uint64(0); s <= maxSeq; s++ {
		if r, ok := bySeq[s]; ok {
			out = append(out, r)
		}
	}
	return out
}

// waitRecord waits until the hub has a record from id that ok accepts.
func (f *fleet) waitRecord(id, what string, timeout time.Duration, ok func(telemetry.Record) bool) telemetry.Record {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range f.records(id) {
			if ok(r) {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("no record from %s %s within %v", id, what, timeout)
	return telemetry.Record{}
}

type deviceListEntry struct {
	ID           string          `json:"id"`
	Registration json.RawMessage `json:"registration"`
	Enrollment   string          `json:"enrollment"`
	Hub          json.RawMessage `json:"hub"`
}

// TestFleetLifecycleTwice loads two trackers, delivers them, and reuses the
// same boards for a second shipment, checking the emulator and the telemetry
// at every step.
func TestFleetLifecycleTwice(t *testing.T) {
	f := newFleet(t)
	ids := []string{"container-0101", "container-0102"}
	dirs := map[string]string{}
	procs := map[string]*proc{}
	for _, id := range ids {
		dirs[id] = f.bundle(id)
		procs[id] = f.start(dirs[id])
	}
	shipments := []string{"SHP-1", "SHP-2"}
	seals := map[string][]uint64{}
	for cycle, shipment := range shipments {
		t.Logf("cycle %d: load %s", cycle+1, shipment)
		for _, id := range ids {
			if cycle > 0 {
				// Next loading: the operator re-admits the board and
				// starts the new shipment; the technician triggers the
				// registration locally.
				f.ctl1("device", "reenroll", "--emulator", f.emuDir, "--id", id)
				out, err := exec.Command(f.trackerd, "reprovision", "--runtime-dir", filepath.Join(dirs[id], "run")).CombinedOutput()
				if err != nil {
					t.Fatalf("trackerd reprovision: %v\n%s", err, out)
				}
				f.waitEvent(emulator.EventDPSAssigned, id, cycle+1, 60*time.Second)
				f.ctl1("device", "shipment", "--emulator", f.emuDir, "--id", id, "--shipment", shipment, "--wait", "30s")
			}
			f.waitRecord(id, "for "+shipment, 60*time.Second, func(r telemetry.Record) bool {
				return r.Shipment == shipment && r.Kind == telemetry.KindReading
			})
		}

		t.Logf("cycle %d: deliver", cycle+1)
		for _, id := range ids {
			out := f.ctl1("device", "deprovision", "--emulator", f.emuDir, "--id", id,
				"--cert", filepath.Join(dirs[id], "device.chain.pem"), "--drain-timeout", "20s", "--json")
			var rep struct {
				Answer *struct {
					Sealed     bool   `json:"sealed"`
					ShipmentID string `json:"shipmentId"`
					Drained    bool   `json:"drained"`
				} `json:"answer"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("deprovision --json: %v\n%s", err, out)
			}
			if rep.Answer == nil || !rep.Answer.Sealed || rep.Answer.ShipmentID != shipment || !rep.Answer.Drained {
				t.Fatalf("deprovision of %s: device answer %s", id, out)
			}
			seal := f.waitRecord(id, "sealing "+shipment, 30*time.Second, func(r telemetry.Record) bool {
				return r.Kind == telemetry.KindSeal && r.Shipment == shipment
			})
			seals[id] = append(seals[id], seal.Seq)
			procs[id].waitStatus("deprovisioned", 30*time.Second, func(s agent.Status) bool {
				return s.Provisioning.State == "deprovisioned" || s.Provisioning.State == "disabled"
			})
		}
		// The emulator: no hub identity, no registration, a disabled
		// individual enrollment per delivered board.
		var list []deviceListEntry
		if err := json.Unmarshal([]byte(f.ctl1("device", "list", "--emulator", f.emuDir, "--json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			found := false
			for _, e := range list {
				if strings.EqualFold(e.ID, id) {
					found = true
					if len(e.Hub) > 0 || len(e.Registration) > 0 || !strings.Contains(e.Enrollment, "disenrolled") {
						t.Errorf("after delivery %d, %s is listed as %+v", cycle+1, id, e)
					}
				}
			}
			if !found {
				t.Errorf("after delivery %d, %s is missing from device list (its disabled enrollment must stay): %+v", cycle+1, id, list)
			}
		}
	}

	// No record of one shipment carries the other's id, and sequence
	// numbers never went back across the reuse.
	for _, id := range ids {
		recs := f.records(id)
		s1, s2 := seals[id][0], seals[id][1]
		for _, r := range recs {
			switch {
			case r.Shipment == "SHP-1" && r.Seq > s1:
				t.Errorf("%s: record %d after the seal of SHP-1 (seq %d) still carries SHP-1", id, r.Seq, s1)
			case r.Shipment == "SHP-2" && (r.Seq < s1 || r.Seq > s2):
				t.Errorf("%s: record %d outside the second shipment (seals %d, %d) carries SHP-2", id, r.Seq, s1, s2)
			}
		}
		if s2 <= s1 {
			t.Errorf("%s: second seal seq %d not after the first %d", id, s2, s1)
		}
		t.Logf("%s: %d records delivered over two shipments (seals at %d and %d)", id, len(recs), s1, s2)
	}
	for _, p := range procs {
		p.stop()
	}
}
