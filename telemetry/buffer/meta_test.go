package buffer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyFile copies src to dst (the test's stand-in for the state of the
// card at a crash).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A damaged newest meta page makes bbolt fall back to the previous
// commit: the last commit is rolled back without a word. Open must report
// it, and must not hand the rolled-back records' seqs out again (a
// consumer deduplicating on seq would drop the new records).
func TestDamagedNewestMetaIsReported(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	b, _ := mustOpen(t, live, Options{Sync: SyncAlways})
	for i := 1; i <= 3; i++ {
		if s := mustAppend(t, b, Routine, t0, "r"); s != uint64(i) {
			t.Fatalf("Append = %d, want %d", s, i)
		}
	}
	// The card as it was after the third commit (a crash now), with the
	// newest meta page then garbled.
	path := filepath.Join(dir, "buf.db")
	copyFile(t, live, path)
	copyFile(t, live+".seq", path+".seq")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	newest, txid := int64(0), uint64(0)
	for i := range 2 {
		p := make([]byte, pageHeaderLen+metaLen)
		if _, err := f.ReadAt(p, int64(i*ps)); err != nil {
			t.Fatal(err)
		}
		if m := parseMeta(p); m.err == nil && m.txid >= txid {
			newest, txid = int64(i*ps), m.txid
		}
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, newest+pageHeaderLen+56); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	b2, rec := mustOpen(t, path, Options{Sync: SyncAlways})
	if rec == nil || rec.Damage == nil || !errors.Is(rec.Damage, errDamaged) {
		t.Fatalf("Open after a garbled newest meta page: recovery %v, want damage reported", rec)
	}
	if !strings.Contains(rec.String(), "meta") {
		t.Errorf("recovery %q does not say the meta page was damaged", rec)
	}
	if rec.MaybeLostFirst > 3 || rec.MaybeLostLast < 3 {
		t.Errorf("recovery says seqs %d-%d may be lost, want a range covering 3", rec.MaybeLostFirst, rec.MaybeLostLast)
	}
	if s := mustAppend(t, b2, Routine, t0, "new"); s <= 3 {
		t.Errorf("Append after the rollback = seq %d: seq 3 was handed out before and must not be reused", s)
	}
	var gap bool
	for _, e := range mustPeek(t, b2) {
		if e.Class == Event && strings.Contains(string(e.Data), GapCorruptFile) {
			gap = true
		}
	}
	if !gap {
		t.Errorf("no %s gap event in the buffer", GapCorruptFile)
	}
}
