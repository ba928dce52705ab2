package buffer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// TestModel runs random operations (append, peek and ack, sync, clean
// reopen, crash) against the buffer and a map, and checks after each that
// the buffer holds exactly what the map says: nothing acknowledged comes
// back after a clean reopen, nothing appended goes missing, seqs only go up.
func TestModel(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncBatch} {
		t.Run(string(policy), func(t *testing.T) {
			for seed := range uint64(3) {
				modelRun(t, policy, seed)
			}
		})
	}
}

func modelRun(t *testing.T, policy SyncPolicy, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	opts := Options{Sync: policy, BatchRecords: 8, BatchInterval: time.Hour}
	path := filepath.Join(t.TempDir(), "buf.db")
	b, _, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()

	stored := map[uint64]Entry{}      // committed and not acknowledged
	uncommitted := map[uint64]Entry{} // appended, batch not yet committed (SyncBatch)
	ackedSoft := map[uint64]Entry{}   // acknowledged, deletion not yet committed
	var lastSeq uint64
	committed := func() {
		for s, e := range uncommitted {
			stored[s] = e
		}
		clear(uncommitted)
		clear(ackedSoft)
	}
	steps := 400
	if testing.Short() {
		steps = 120
	}
	for step := range steps {
		op := rng.IntN(100)
		switch {
		case op < 55: // append
			c := Class(1 + rng.IntN(3))
			e := Entry{Class: c, Time: t0.Add(time.Duration(step) * time.Second), Data: fmt.Appendf(nil, "%d-%d", seed, step)}
			s, err := b.Append(c, e.Time, e.Data)
			if err != nil {
				t.Fatalf("step %d: Append = %v", step, err)
			}
			if s <= lastSeq {
				t.Fatalf("step %d: seq %d after %d", step, s, lastSeq)
			}
			lastSeq = s
			e.Seq = s
			uncommitted[s] = e
			if policy == SyncAlways || len(uncommitted) == opts.BatchRecords {
				committed()
			}
		case op < 75: // deliver some of the oldest
			es, err := b.Peek(1+rng.IntN(6), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Ack(seqs(es)...); err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				ackedSoft[e.Seq] = stored[e.Seq]
				delete(stored, e.Seq)
			}
		case op < 85:
			if err := b.Sync(); err != nil {
				t.Fatal(err)
			}
			committed()
		case op < 93: // clean restart
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			committed()
			if b, _, err = Open(path, opts); err != nil {
				t.Fatal(err)
			}
		default: // power cut: reopen a copy of the files as they are now
			img := crashCopy(t, path)
			b.Close()
			clear(uncommitted) // lost with the batch window
			path = img
			var rec *Recovery
			if b, rec, err = Open(path, opts); err != nil {
				t.Fatal(err)
			}
			if rec == nil || !rec.Unclean {
				t.Fatalf("step %d: Open after a crash: Recovery = %v, want Unclean", step, rec)
			}
			// Acknowledgements not yet committed may come back: delivery
			// is at-least-once.
			got := map[uint64]bool{}
			all, err := b.Peek(1<<20, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range all {
				got[e.Seq] = true
			}
			for s, e := range ackedSoft {
				if got[s] {
					stored[s] = e
				}
			}
			clear(ackedSoft)
			// The crash image has a gap event for the batch window (SyncBatch).
			for _, e := range all {
				if _, ok := stored[e.Seq]; !ok && e.Class == Event && bytes.Contains(e.Data, []byte(GapUncleanShutdown)) {
					stored[e.Seq] = e
					lastSeq = max(lastSeq, e.Seq)
				}
			}
		}
		all, err := b.Peek(1<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != len(stored) {
			t.Fatalf("seed %d step %d (op %d): buffer has %d records, model %d", seed, step, op, len(all), len(stored))
		}
		for _, e := range all {
			want, ok := stored[e.Seq]
			if !ok || want.Class != e.Class || !want.Time.Equal(e.Time) || !bytes.Equal(want.Data, e.Data) {
				t.Fatalf("seed %d step %d: record %d differs from the model", seed, step, e.Seq)
			}
		}
	}
}
