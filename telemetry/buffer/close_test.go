package buffer

import (
	"path/filepath"
	"testing"
	"time"
)

// A clean Close hands the unused part of the batch reservation back: the
// next session numbers on from the exact next seq, so a clean restart
// leaves no hole that a consumer would take for lost records.
func TestCleanRestartLeavesNoHole(t *testing.T) {
	for _, sync := range []SyncPolicy{SyncAlways, SyncBatch} {
		t.Run(string(sync), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buf.db")
			o := Options{Sync: sync, BatchRecords: 20, BatchInterval: time.Hour}
			want := uint64(1)
			for session := range 3 {
				b, rec := mustOpen(t, path, o)
				if rec != nil {
					t.Fatalf("session %d: recovery %v after a clean close", session, rec)
				}
				for range 3 {
					if got := mustAppend(t, b, Routine, t0, "r"); got != want {
						t.Fatalf("session %d: Append = seq %d, want %d", session, got, want)
					}
					want++
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
