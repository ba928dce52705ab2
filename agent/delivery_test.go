package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/buffer"
)

// These tests prove trackerd's delivery guarantee with real processes: a
// record the buffer accepted reaches the hub, or its loss is reported, and
// a record delivered twice carries the same $.mid.

// testSeed returns a random seed, logged so a failure can be replayed with
// TRACKER_TEST_SEED.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("TRACKER_TEST_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("TRACKER_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay with TRACKER_TEST_SEED=%d)", seed, seed)
	return seed
}

// powerCutKills is how many times the power-cut tests kill trackerd.
const powerCutKills = 50

// cutKill is what the harness knew at one SIGKILL.
type cutKill struct {
	polled    bool      // the local API answered before the kill
	firstNext uint64    // NextSeq at the first status of the session
	next      uint64    // NextSeq at the last status before the kill
	at        time.Time // when that status was taken
	midCommit bool      // a thread was in a commit's pwrite/fdatasync
}

func TestPowerCutSyncAlways(t *testing.T) {
	powerCut(t, "always", 20, time.Second)
}

func TestPowerCutSyncBatch(t *testing.T) {
	powerCut(t, "batch", 20, time.Second)
}

// powerCut runs trackerd with the hub unreachable and fast simulated
// sensors, kills it with SIGKILL at random moments (during startup, while
// appending, and inside a buffer commit), restarts it, then restores the
// hub, lets the backlog drain and accounts for every sequence number.
func powerCut(t *testing.T, sync string, batchRecords int, batchInterval time.Duration) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(testSeed(t), 6))
	id := "powercut-" + sync
	dir := r.device(id, deviceOpts{interval: 100 * time.Millisecond, sensorInterval: 100 * time.Millisecond, extra: fmt.Sprintf(
		"[hub]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\n[buffer]\nsync = %q\nbatch_records = %d\nbatch_interval = %q\n",
		sync, batchRecords, batchInterval)})

	// The board has been provisioned before (the assignment is cached),
	// then the container leaves coverage.
	d := r.start(dir)
	d.waitStatus("connected", 60*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })
	d.term()
	r.emu.Faults().RefuseConnections(time.Hour)

	var kills []cutKill
	for i := range powerCutKills {
		d := r.start(dir)
		var k cutKill
		if i%5 == 4 {
			// Kill during startup: buffer open, recovery, first commit.
			pause(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
			d.kill()
			kills = append(kills, k)
			continue
		}
		st := d.waitStatus("local API", 60*time.Second, func(agent.Status) bool { return true })
		k.polled, k.firstNext, k.next, k.at = true, st.Buffer.NextSeq, st.Buffer.NextSeq, time.Now()
		if st.Buffer.Sync != sync {
			t.Fatalf("status says buffer sync %q, configured %q", st.Buffer.Sync, sync)
		}
		until := time.Now().Add(50*time.Millisecond + time.Duration(rng.Int64N(int64(350*time.Millisecond))))
		for time.Now().Before(until) {
			if st, err := d.status(); err == nil {
				k.next, k.at = st.Buffer.NextSeq, time.Now()
			}
			pause(20 * time.Millisecond)
		}
		if i%2 == 1 {
			// Aim at a commit: kill while a thread writes or syncs the
			// buffer file (bounded: a commit comes at least every
			// sampling or batch interval).
			deadline := time.Now().Add(batchInterval + 500*time.Millisecond)
			for time.Now().Before(deadline) && !k.midCommit {
				if k.midCommit = d.inCommit(); !k.midCommit {
					pause(200 * time.Microsecond)
				}
			}
			if st, err := d.status(); err == nil && !k.midCommit {
				k.next, k.at = st.Buffer.NextSeq, time.Now()
			}
		}
		d.kill()
		kills = append(kills, k)
	}

	// Coverage again: the backlog drains.
	r.emu.Faults().RefuseConnections(0)
	d = r.start(dir)
	st := d.waitStatus("recovery reported", 30*time.Second, func(agent.Status) bool { return true })
	if !statusHasWarning(st, "buffer recovery") {
		t.Errorf("after a SIGKILL the status shows no buffer recovery warning: %+v", st.Warnings)
	}
	d.waitStatus("backlog drained", 3*time.Minute, func(s agent.Status) bool {
		return s.Connection.State == "connected" && s.Buffer.Depth <= 2 && s.Telemetry.Sent > 0
	})
	d.term()

	got, msgs := r.deliveries(id)
	left, next := leftovers(t, dir)
	// Across a kill (or a stop while a PUBACK was on its way) the resend
	// state is gone: a record whose acknowledgement never reached the
	// buffer goes out again in a new batch, under a new $.mid. Content must
	// match; consumers deduplicate on (device, seq).
	dups := checkDuplicates(t, got, false)
	gaps := gapsOf(got, left)

	var lost []uint64
	for s := uint64(1); s < next; s++ {
		if _, ok := got[s]; ok {
			continue
		}
		if _, ok := left[s]; ok {
			continue
		}
		lost = append(lost, s)
	}
	polled, progressed, mid := 0, 0, 0
	for _, k := range kills {
		if k.polled {
			polled++
			if k.next > k.firstNext {
				progressed++
			}
		}
		if k.midCommit {
			mid++
		}
	}
	t.Logf("%s: %d kills (%d during startup, %d inside a commit), seqs 1..%d: %d delivered in %d messages, %d left in the buffer, %d never delivered, %d delivered more than once (same $.mid), %d gap events",
		sync, len(kills), len(kills)-polled, mid, next-1, len(got), msgs, len(left), len(lost), dups, len(gaps))
	if progressed < polled/2 {
		t.Errorf("only %d of %d sessions appended records before the kill: the test did not exercise the buffer", progressed, polled)
	}
	if mid == 0 {
		t.Errorf("no kill landed inside a buffer commit")
	}
	for s, ds := range got {
		if s == 0 || s >= next {
			t.Errorf("delivered seq %d outside 1..%d (%s)", s, next-1, ds[0].raw)
		}
	}

	// Seqs below the NextSeq seen just before a kill, but the last, were
	// returned by Append in that session (one appender; the last may have
	// been in flight). Such a seq must never reappear on a record taken
	// after the kill: that would mean the record was lost and its seq
	// reused. With sync=always it must have arrived.
	for i, k := range kills {
		for s := k.firstNext; k.polled && s+1 < k.next; s++ {
			var rec *telemetry.Record
			if ds, ok := got[s]; ok {
				rec = &ds[0].rec
			} else if l, ok := left[s]; ok {
				rec = &l
			}
			switch {
			case rec == nil && sync == "always":
				t.Errorf("kill %d: seq %d was returned by Append before the kill and never arrived", i, s)
			case rec != nil && rec.Kind == telemetry.KindReading && rec.Time.After(k.at):
				t.Errorf("kill %d: seq %d was returned by Append before the kill, but the record that arrived under it was taken after the kill (%v > %v): the first was lost and its seq reused",
					i, s, rec.Time.Format(time.RFC3339Nano), k.at.Format(time.RFC3339Nano))
			}
		}
	}

	switch sync {
	case "always":
		// Nothing Append returned may be lost, and a commit cut short
		// leaves no hole: the seq is handed out again.
		if len(lost) > 0 {
			t.Errorf("sync=always lost %d records: seqs %s", len(lost), seqRanges(lost))
		}
		for _, g := range gaps {
			t.Errorf("sync=always reported a gap: %+v", g)
		}
	case "batch":
		checkBatchLosses(t, lost, gaps, kills, got, batchRecords, batchInterval)
	}
}

// checkBatchLosses checks the documented loss window of sync=batch: every
// seq that never arrived lies in a reported unclean-shutdown gap; each kill
// lost at most batch_records records that had been appended, and none
// older than batch_interval.
func checkBatchLosses(t *testing.T, lost []uint64, gaps []telemetry.Gap, kills []cutKill, got map[uint64][]delivery, batchRecords int, batchInterval time.Duration) {
	t.Helper()
	unclean := 0
	for _, s := range lost {
		covered := false
		for _, g := range gaps {
			if g.Reason == buffer.GapUncleanShutdown && g.FirstSeq <= s && s <= g.LastSeq {
				covered = true
				break
			}
		}
		if !covered {
			t.Errorf("seq %d never arrived and no gap event reports it", s)
		}
	}
	for _, g := range gaps {
		switch g.Reason {
		case buffer.GapUncleanShutdown:
			unclean++
			if n := g.LastSeq - g.FirstSeq + 1; n > uint64(2*batchRecords) {
				t.Errorf("unclean-shutdown gap %d-%d spans %d seqs, more than the reservation of 2×batch_records", g.FirstSeq, g.LastSeq, n)
			}
		default:
			t.Errorf("unexpected gap event: %+v", g)
		}
	}
	if unclean == 0 {
		t.Errorf("no unclean-shutdown gap event after %d kills", len(kills))
	}
	// Per kill: seqs from the session's first NextSeq up to the one seen
	// just before the kill were handed out by Append; those that never
	// arrived were lost by the kill (a lower bound: a record appended
	// between that status and the kill is not counted).
	maxLost, worst := 0, time.Duration(0)
	for i, k := range kills {
		if !k.polled {
			continue
		}
		n := 0
		for _, s := range lost {
			if s >= k.firstNext && s < k.next {
				n++
			}
		}
		maxLost = max(maxLost, n)
		if n > batchRecords {
			t.Errorf("kill %d lost %d appended records, more than batch_records=%d", i, n, batchRecords)
		}
		// The newest record of this session that is durable (arrived)
		// was taken at most batch_interval before the kill: everything
		// older had been committed.
		var newest time.Time
		for s := k.firstNext; s < k.next; s++ {
			if ds, ok := got[s]; ok && ds[0].rec.Kind == telemetry.KindReading {
				newest = ds[0].rec.Time
			}
		}
		if n > 0 && !newest.IsZero() {
			window := k.at.Sub(newest)
			worst = max(worst, window)
			if window > batchInterval+time.Second {
				t.Errorf("kill %d lost %d records appended over %v, longer than batch_interval %v (+1s slack for a loaded machine)", i, n, window.Round(time.Millisecond), batchInterval)
			}
		}
	}
	t.Logf("batch: %d unclean-shutdown gaps reported, at most %d appended records lost per kill (batch_records %d), longest unsaved window %v (batch_interval %v)",
		unclean, maxLost, batchRecords, worst.Round(time.Millisecond), batchInterval)
}

func statusHasWarning(st agent.Status, substr string) bool {
	for _, w := range st.Warnings {
		if strings.Contains(w.Msg, substr) {
			return true
		}
	}
	return false
}

// seqRanges formats sorted seqs as "1-4,7".
func seqRanges(seqs []uint64) string {
	slices.Sort(seqs)
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprintf(&b, "%d", seqs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		}
		i = j + 1
	}
	return b.String()
}

// pause pauses the harness for d: the random moment of a kill, or the
// pace of a polling loop (never a stand-in for synchronisation).
func pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// damageBuffer damages the buffer file the way a failing SD card or a cut
// during a write might: truncated at a random offset, random bytes
// garbled, a page zeroed, a meta page rotted, or nothing left. It returns what it did.
func damageBuffer(t *testing.T, rng *rand.Rand, path string, mode int) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	switch mode % 5 {
	case 0:
		off := rng.Int64N(size)
		if err := f.Truncate(off); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("truncated %d-byte file at %d", size, off)
	case 1:
		var what []string
		for range 1 + rng.IntN(4) {
			off, n := rng.Int64N(size), 16+rng.IntN(512)
			junk := make([]byte, n)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			if _, err := f.WriteAt(junk, off); err != nil {
				t.Fatal(err)
			}
			what = append(what, fmt.Sprintf("%d@%d", n, off))
		}
		return fmt.Sprintf("garbled %d-byte file: %s", size, strings.Join(what, " "))
	case 2:
		const page = 4096
		off := rng.Int64N(max(size/page, 1)) * page
		if _, err := f.WriteAt(make([]byte, page), off); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("zeroed the page at %d of a %d-byte file", off, size)
	case 3:
		// Rot in one of bbolt's two meta pages (page size 4096).
		off := rng.Int64N(2)*4096 + 16 + rng.Int64N(64)
		if _, err := f.WriteAt([]byte{byte(rng.Uint32()) | 1}, off); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("garbled a meta page byte at %d", off)
	default:
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("truncated %d-byte file to nothing", size)
	}
}

// A buffer file truncated or garbled between runs never stops trackerd:
// it starts, reports the recovery as a warning, numbers new records above
// every seq it ever handed out, and new records flow.
func TestDamagedBufferNeverStopsStartup(t *testing.T) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(testSeed(t), 61))
	id := "damaged-buffer"
	dir := r.device(id, deviceOpts{interval: 100 * time.Millisecond, sensorInterval: 100 * time.Millisecond,
		extra: "[hub]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\n[buffer]\nsync = \"always\"\n"})
	path := filepath.Join(dir, "state", "buffer.db")

	const rounds = 15
	var lastNext uint64 // NextSeq seen last before the previous kill
	setAside, damaged := 0, 0
	for round := range rounds + 1 {
		d := r.start(dir)
		st := d.waitStatus("local API", 60*time.Second, func(agent.Status) bool { return true })
		// Seqs below lastNext-1 were returned by Append before the kill
		// (lastNext-1 may have been in flight, never returned, and may
		// be handed out again).
		if st.Buffer.NextSeq+1 < lastNext {
			t.Errorf("round %d: numbering resumed at %d, but seqs up to %d were handed out before: they would be reused", round, st.Buffer.NextSeq, lastNext-2)
		}
		roundDamaged := false
		if round > 0 {
			if !statusHasWarning(st, "buffer recovery") {
				t.Errorf("round %d: no buffer recovery warning in the status after a kill and damage: %+v", round, st.Warnings)
			}
			for _, w := range st.Warnings {
				if strings.Contains(w.Msg, "buffer recovery") {
					t.Logf("round %d: %s", round, w.Msg)
					if strings.Contains(w.Msg, "set aside") {
						setAside++
					}
					if strings.Contains(w.Msg, "damage") || strings.Contains(w.Msg, "missing") {
						damaged++
						roundDamaged = true
					}
				}
			}
		}
		// New records flow to the hub.
		first := st.Buffer.NextSeq
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := r.emu.WaitTelemetry(ctx, func(m emulator.Message) bool {
			var b telemetry.Batch
			if !strings.EqualFold(m.DeviceID, id) || json.Unmarshal(m.Payload, &b) != nil {
				return false
			}
			for _, rec := range b.Records {
				if rec.Seq >= first && rec.Kind == telemetry.KindReading {
					return true
				}
			}
			return false
		})
		cancel()
		if err != nil {
			t.Fatalf("round %d: no new record (seq >= %d) reached the hub: %v\n%s", round, first, err, logTail(d.log.String(), 8<<10))
		}
		if roundDamaged {
			// The loss report of this round's damage reaches the hub
			// before the next kill: damage in the next round could
			// otherwise destroy the report itself (that loss would be
			// reported in turn, but not counted here).
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			_, err := r.emu.WaitTelemetry(ctx, func(m emulator.Message) bool {
				var b telemetry.Batch
				if !strings.EqualFold(m.DeviceID, id) || json.Unmarshal(m.Payload, &b) != nil {
					return false
				}
				for _, rec := range b.Records {
					if rec.Kind == telemetry.KindGap && rec.Gap != nil && rec.Seq+1 >= lastNext {
						switch rec.Gap.Reason {
						case buffer.GapCorruptFile, buffer.GapCorruptRecords, buffer.GapMissingFile:
							return true
						}
					}
				}
				return false
			})
			cancel()
			if err != nil {
				t.Fatalf("round %d: the damage was detected but no loss report reached the hub: %v\n%s", round, err, logTail(d.log.String(), 8<<10))
			}
		}
		if round == rounds {
			d.term()
			break
		}
		pause(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		if st, err := d.status(); err == nil {
			lastNext = st.Buffer.NextSeq
		}
		d.kill()
		t.Logf("round %d: %s", round, damageBuffer(t, rng, path, round))
	}

	got, msgs := r.deliveries(id)
	left, _ := leftovers(t, dir)
	checkDuplicates(t, got, false)
	corrupt := 0
	for _, g := range gapsOf(got, left) {
		switch g.Reason {
		case buffer.GapCorruptFile, buffer.GapCorruptRecords, buffer.GapMissingFile:
			corrupt++
		default:
			t.Errorf("unexpected gap event: %+v", g)
		}
	}
	t.Logf("%d rounds of damage: %d detected (%d files set aside), %d damage gap events reported; %d records in %d messages",
		rounds, damaged, setAside, corrupt, len(got), msgs)
	if corrupt < damaged {
		t.Errorf("%d damaged files were recovered but only %d gap events reported the loss", damaged, corrupt)
	}
	if damaged == 0 {
		t.Errorf("none of %d rounds of damage was detected", rounds)
	}
}

// While trackerd streams, the emulator drops the connection, withholds
// PUBACKs (the message arrives, its acknowledgement does not), throttles
// and delays. Afterwards every record has arrived, and a record that
// arrived twice did so under the same $.mid.
func TestNetworkChaos(t *testing.T) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(testSeed(t), 62))
	id := "chaos"
	dir := r.device(id, deviceOpts{interval: 100 * time.Millisecond, sensorInterval: 100 * time.Millisecond,
		extra: "[hub]\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n"})
	d := r.start(dir)
	d.waitStatus("connected", 60*time.Second, func(s agent.Status) bool { return s.Connection.State == "connected" })

	f := r.emu.Faults()
	span := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	did := map[string]int{}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		switch rng.IntN(5) {
		case 0:
			f.DropDevice(id)
			did["drop"]++
		case 1:
			// The hub gets the next messages but their PUBACKs are
			// lost; the connection then breaks (a client waits up to
			// its publish timeout, 30s, otherwise).
			f.WithholdPubacks(id, 1+rng.IntN(3))
			pause(span(300*time.Millisecond, 800*time.Millisecond))
			f.DropDevice(id)
			did["withhold+drop"]++
		case 2:
			hold := span(300*time.Millisecond, 1500*time.Millisecond)
			f.WithholdPubacksFor(id, hold)
			pause(hold + 100*time.Millisecond)
			f.DropDevice(id)
			did["withhold-for+drop"]++
		case 3:
			f.ThrottleD2C(2 + 6*rng.Float64())
			pause(span(time.Second, 3*time.Second))
			f.ThrottleD2C(0)
			did["throttle"]++
		case 4:
			f.Latency(span(50*time.Millisecond, 300*time.Millisecond))
			pause(span(time.Second, 2*time.Second))
			f.Latency(0)
			did["latency"]++
		}
		pause(span(200*time.Millisecond, time.Second))
	}
	f.Clear()
	st := d.waitStatus("backlog drained", 2*time.Minute, func(s agent.Status) bool {
		return s.Connection.State == "connected" && s.Buffer.Depth <= 2
	})
	d.term()

	got, msgs := r.deliveries(id)
	left, next := leftovers(t, dir)
	dups := checkDuplicates(t, got, true)
	var lost []uint64
	for s := uint64(1); s < next; s++ {
		_, sent := got[s]
		_, kept := left[s]
		if !sent && !kept {
			lost = append(lost, s)
		}
	}
	t.Logf("chaos %v: seqs 1..%d: %d delivered in %d messages, %d left in the buffer, %d delivered more than once (same $.mid), %d reconnects",
		did, next-1, len(got), msgs, len(left), dups, st.Connection.Reconnects)
	if len(lost) > 0 {
		t.Errorf("%d records never arrived: seqs %s", len(lost), seqRanges(lost))
	}
	for _, g := range gapsOf(got, left) {
		t.Errorf("unexpected gap event: %+v", g)
	}
	if dups == 0 && did["withhold+drop"]+did["withhold-for+drop"] > 0 {
		t.Errorf("PUBACKs were withheld but no message arrived twice: the resend path was not exercised")
	}
	if st.Connection.Reconnects == 0 {
		t.Errorf("no reconnects after %d dropped connections", did["drop"]+did["withhold+drop"]+did["withhold-for+drop"])
	}
}

// A week out of coverage at the configured rate against a small cap: the
// buffer evicts routine readings by its policy (newest at full
// resolution, oldest thinned, then dropped), keeps every alert, and when
// the hub is back trackerd delivers the alerts, what was kept, and gap
// events whose counts account for every reading evicted.
//
// A week of real time cannot pass in a test, so the week is appended on a
// simulated clock into the device's buffer file, through the same
// telemetry/buffer options trackerd derives from its config (see
// openBuffer in buffer.go), with the records the sampler makes; then the
// real trackerd starts on that state directory and drains it.
func TestWeekOfflineAgainstSmallCap(t *testing.T) {
	r := newRig(t)
	id := "week-offline"
	dir := r.device(id, deviceOpts{interval: time.Minute, sensorInterval: 10 * time.Second,
		extra: "[buffer]\nmax_bytes = \"512KiB\"\n"})
	cfg, err := config.Load(filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-7 * 24 * time.Hour).Truncate(time.Minute).UTC()
	now := start
	b := deviceBuffer(t, cfg, func() time.Time { return now })
	interval := cfg.Telemetry.Interval.D()
	n := int(7 * 24 * time.Hour / interval)
	routine, alerts := map[uint64]time.Time{}, map[uint64]bool{}
	for i := range n {
		now = start.Add(time.Duration(i) * interval)
		rec := telemetry.Record{Kind: telemetry.KindReading, Time: now, Clock: "gps", Shipment: cfg.Telemetry.ShipmentID,
			Env: &telemetry.Env{TempC: 4.5, PressureHPa: 1012.8},
			Fix: &telemetry.Fix{Time: now, Mode: 3, Lat: 51.95, Lon: 4.14, Sats: 9}}
		class := buffer.Routine
		// Half an hour every day the reefer fails: alerts.
		if m := now.Sub(start) % (24 * time.Hour); m >= 14*time.Hour && m < 14*time.Hour+30*time.Minute {
			rec.Env.TempC = 11.2
			rec.Alerts = []string{telemetry.AlertTempHigh}
			class = buffer.Alert
		}
		data, err := rec.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		seq, err := b.Append(class, now, data)
		if err != nil {
			t.Fatalf("append %d of a week: %v", i, err)
		}
		if class == buffer.Alert {
			alerts[seq] = true
		} else {
			routine[seq] = now
		}
	}
	bs := b.Stats()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(cfg.StateDir, "buffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a week at one reading per %v: %d readings (%d alerts) into a %d KiB budget: file %d KiB, %d kept (live %d of %d bytes), %d thinned, %d dropped, %d gap events",
		interval, n, len(alerts), cfg.Buffer.MaxBytes>>10, fi.Size()>>10, bs.Depth, bs.Bytes, bs.LiveLimit, bs.Thinned, bs.Dropped, bs.GapEvents)
	if fi.Size() > int64(cfg.Buffer.MaxBytes) {
		t.Errorf("buffer file is %d bytes, over max_bytes %d", fi.Size(), cfg.Buffer.MaxBytes)
	}

	// Back in coverage.
	d := r.start(dir)
	d.waitStatus("backlog drained", 2*time.Minute, func(s agent.Status) bool {
		return s.Connection.State == "connected" && s.Buffer.Depth <= 2 && s.Telemetry.Sent > 0
	})
	d.term()
	got, msgs := r.deliveries(id)
	left, _ := leftovers(t, dir)
	checkDuplicates(t, got, true)

	for s := range alerts {
		if ds, ok := got[s]; !ok || len(ds[0].rec.Alerts) == 0 {
			t.Errorf("alert seq %d did not arrive", s)
		}
	}
	var evicted, reported uint64
	var gaps []telemetry.Gap
	for _, g := range gapsOf(got, left) {
		switch g.Reason {
		case buffer.GapThinned, buffer.GapDropped:
			gaps = append(gaps, g)
			reported += g.Count
		default:
			t.Errorf("unexpected gap event: %+v", g)
		}
	}
	perDay := make([]int, 7)
	var missing []uint64
	for s, at := range routine {
		if _, ok := got[s]; ok {
			perDay[at.Sub(start)/(24*time.Hour)]++
			continue
		}
		evicted++
		covered := false
		for _, g := range gaps {
			if g.FirstSeq <= s && s <= g.LastSeq {
				covered = true
				break
			}
		}
		if !covered {
			missing = append(missing, s)
		}
	}
	t.Logf("delivered %d records in %d messages; readings kept per day, oldest first: %v; %d evicted, %d reported in %d gap events",
		len(got), msgs, perDay, evicted, reported, len(gaps))
	if len(missing) > 0 {
		t.Errorf("%d evicted readings lie in no gap event: %s", len(missing), seqRanges(missing))
	}
	if reported != evicted {
		t.Errorf("gap events report %d evicted readings, %d are missing", reported, evicted)
	}
	if evicted == 0 {
		t.Errorf("a week into %d KiB evicted nothing: the cap was not exercised", cfg.Buffer.MaxBytes>>10)
	}
	// The oldest data goes first: the kept readings per day never
	// decrease towards the present, and the newest hour is complete.
	for i := 1; i < len(perDay); i++ {
		if perDay[i] < perDay[i-1] {
			t.Errorf("day %d kept %d readings, day %d only %d: eviction must take the oldest first", i, perDay[i-1], i+1, perDay[i])
		}
	}
	var newest []uint64
	for s := range routine {
		newest = append(newest, s)
	}
	slices.Sort(newest)
	for _, s := range newest[len(newest)-int(time.Hour/interval):] {
		if _, ok := got[s]; !ok {
			t.Errorf("reading %d of the last hour was evicted: the newest readings keep full resolution", s)
		}
	}
}
