package buffer

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// capRun appends n readings, one a minute of simulated time, every
// alertEvery-th an alert, to a buffer with the given file budget, and
// checks the cap after every commit.
type capRun struct {
	b        *Buffer
	routine  []uint64
	alerts   []uint64
	maxLive  int64
	maxFile  int64
	maxBytes int64
	// thinnedAtFirstDrop is Stats.Thinned when a range was first dropped
	// (-1 if none was).
	thinnedAtFirstDrop int64
}

func runCap(t *testing.T, maxBytes int64, n, alertEvery int) capRun {
	t.Helper()
	now := t0
	clock := func() time.Time { return now }
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{
		Sync: SyncBatch, BatchRecords: 20, BatchInterval: time.Hour, MaxBytes: maxBytes, Now: clock,
	})
	r := capRun{b: b, maxBytes: maxBytes, thinnedAtFirstDrop: -1}
	temp := 4.0
	for i := range n {
		now = now.Add(time.Minute)
		rec := telemetry.Record{
			Kind: telemetry.KindReading, Time: now, Clock: "gps", Shipment: "SHP-2026-0042",
			Env: &telemetry.Env{TempC: temp, PressureHPa: 1013.2},
			Fix: &telemetry.Fix{Time: now, Mode: 3, Lat: 53.5461, Lon: 9.9661, Sats: 9},
		}
		c := Routine
		if i%alertEvery == alertEvery-1 {
			c = Alert
			rec.Env.TempC = 11.5
			rec.Alerts = []string{telemetry.AlertTempHigh}
		}
		data, err := json.Marshal(&rec)
		if err != nil {
			t.Fatal(err)
		}
		s := mustAppend(t, b, c, now, string(data))
		if c == Alert {
			r.alerts = append(r.alerts, s)
		} else {
			r.routine = append(r.routine, s)
		}
		if st := b.Stats(); st.Pending == 0 {
			r.maxLive = max(r.maxLive, st.Bytes)
			r.maxFile = max(r.maxFile, st.FileBytes)
			if st.Dropped > 0 && r.thinnedAtFirstDrop < 0 {
				r.thinnedAtFirstDrop = int64(st.Thinned)
			}
			if st.Bytes > st.LiveLimit {
				t.Fatalf("after commit %d: live bytes %d over the cap %d", st.Commits, st.Bytes, st.LiveLimit)
			}
		}
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	return r
}

// gaps decodes the gap events among es and sums their counts by reason.
func gaps(t *testing.T, es []Entry) (order []string, counts map[string]uint64) {
	t.Helper()
	counts = map[string]uint64{}
	for _, e := range es {
		if e.Class != Event {
			continue
		}
		rec, err := telemetry.UnmarshalRecord(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind != telemetry.KindGap || rec.Gap == nil || rec.Seq != e.Seq {
			t.Fatalf("event %d is not a gap record with its own seq: %s", e.Seq, e.Data)
		}
		if rec.Gap.FirstSeq > rec.Gap.LastSeq || rec.Gap.LastSeq >= e.Seq {
			t.Errorf("gap event %d: range %d-%d", e.Seq, rec.Gap.FirstSeq, rec.Gap.LastSeq)
		}
		order = append(order, rec.Gap.Reason)
		counts[rec.Gap.Reason] += rec.Gap.Count
	}
	return order, counts
}

func TestCapWeekOffline(t *testing.T) {
	const week = 7 * 24 * 60
	r := runCap(t, 512<<10, week, 150)
	es := mustPeek(t, r.b)
	present := map[uint64]Class{}
	for _, e := range es {
		present[e.Seq] = e.Class
	}
	for _, s := range r.alerts {
		if present[s] != Alert {
			t.Fatalf("alert %d was evicted", s)
		}
	}
	kept := 0
	for _, s := range r.routine {
		if _, ok := present[s]; ok {
			kept++
		}
	}
	order, counts := gaps(t, es)
	st := r.b.Stats()
	if counts[GapThinned] != st.Thinned || counts[GapDropped] != st.Dropped {
		t.Errorf("gap events report %d thinned, %d dropped; Stats says %d, %d", counts[GapThinned], counts[GapDropped], st.Thinned, st.Dropped)
	}
	if got := uint64(kept) + st.Thinned + st.Dropped; got != uint64(len(r.routine)) {
		t.Errorf("kept %d + thinned %d + dropped %d = %d, want the %d routine readings appended", kept, st.Thinned, st.Dropped, got, len(r.routine))
	}
	if len(order) == 0 || len(order) > mergeGapsAt+2 {
		t.Errorf("%d gap events: want at least one, and at most %d after folding", len(order), mergeGapsAt+2)
	}
	if st.Dropped > 0 && r.thinnedAtFirstDrop < int64(len(r.routine))/4 {
		t.Errorf("the first range was dropped after only %d readings were thinned: thinning must come first", r.thinnedAtFirstDrop)
	}
	// The newest readings keep full resolution.
	for _, s := range r.routine[len(r.routine)-100:] {
		if _, ok := present[s]; !ok {
			t.Errorf("routine reading %d, among the newest 100, was evicted", s)
			break
		}
	}
	if r.maxFile > r.maxBytes {
		t.Errorf("file grew to %d bytes, over the %d budget", r.maxFile, r.maxBytes)
	}
	if st.FullRetries != 0 {
		t.Errorf("%d commits hit the file budget; live data should leave room", st.FullRetries)
	}
	t.Logf("a week at 1/min (%d readings, %d alerts) into a %d KiB budget: kept %d routine, thinned %d (%d before the first drop), dropped %d, reported in %d gap events; live max %d of %d, file max %d",
		len(r.routine), len(r.alerts), r.maxBytes>>10, kept, st.Thinned, r.thinnedAtFirstDrop, st.Dropped, len(order), r.maxLive, st.LiveLimit, r.maxFile)
}

func TestCapThinsBeforeDropping(t *testing.T) {
	// About 1.6 times what the cap holds: thinning alone must do.
	r := runCap(t, 256<<10, 450, 50)
	es := mustPeek(t, r.b)
	st := r.b.Stats()
	if st.Thinned == 0 || st.Dropped != 0 {
		t.Fatalf("thinned %d, dropped %d; want thinning only", st.Thinned, st.Dropped)
	}
	present := map[uint64]bool{}
	for _, e := range es {
		present[e.Seq] = true
	}
	if !present[r.routine[0]] {
		t.Errorf("the oldest reading %d is gone: thinning keeps the first of each pair", r.routine[0])
	}
	for _, s := range r.alerts {
		if !present[s] {
			t.Errorf("alert %d was evicted", s)
		}
	}
	t.Logf("thinned %d of %d routine readings, no range dropped", st.Thinned, len(r.routine))
}

func TestFullOfAlerts(t *testing.T) {
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{MaxBytes: MinMaxBytes})
	data := make([]byte, 1000)
	var stored []uint64
	var err error
	for range 1000 {
		var s uint64
		if s, err = b.Append(Alert, t0, data); err != nil {
			break
		}
		stored = append(stored, s)
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("appending alerts to a %d-byte budget ended with %v after %d, want ErrFull", MinMaxBytes, err, len(stored))
	}
	st := b.Stats()
	if st.FullRetries == 0 || st.FileBytes > MinMaxBytes {
		t.Errorf("FullRetries %d, file %d bytes; want retries and a file within %d", st.FullRetries, st.FileBytes, MinMaxBytes)
	}
	// Every alert Append accepted is still there.
	es := mustPeek(t, b)
	if len(es) != len(stored) {
		t.Fatalf("%d alerts stored, %d accepted", len(es), len(stored))
	}
	t.Logf("%d 1000-byte alerts filled a %d-byte budget (live %d, cap %d)", len(stored), MinMaxBytes, st.Bytes, st.LiveLimit)
	// Delivering them makes room again.
	if err := b.Ack(seqs(es[:len(es)/2])...); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(Alert, t0, data); err != nil {
		t.Errorf("Append after acknowledging half = %v", err)
	}
}

func TestBudgetLoweredBetweenSessions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	b, _ := mustOpen(t, path, Options{Sync: SyncBatch, MaxBytes: 1 << 20})
	data := make([]byte, 300)
	var alerts []uint64
	for i := range 1000 {
		c := Routine
		if i%200 == 0 {
			c = Alert
		}
		s := mustAppend(t, b, c, t0, string(data))
		if c == Alert {
			alerts = append(alerts, s)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, _ := mustOpen(t, path, Options{MaxBytes: 256 << 10})
	st := b2.Stats()
	if st.Bytes > st.LiveLimit || st.Thinned+st.Dropped == 0 {
		t.Errorf("after reopening with a quarter of the budget: live %d (cap %d), evicted %d; want eviction down to the cap", st.Bytes, st.LiveLimit, st.Thinned+st.Dropped)
	}
	urgent, err := b2.PeekUrgent(100, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for _, e := range urgent {
		got[e.Seq] = true
	}
	for _, s := range alerts {
		if !got[s] {
			t.Errorf("alert %d lost when the budget was lowered", s)
		}
	}
	if _, err := b2.Append(Routine, t0, data); err != nil {
		t.Errorf("Append after lowering the budget = %v", err)
	}
}
