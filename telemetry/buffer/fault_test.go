package buffer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// faultFixture is a closed buffer file with a known history.
type faultFixture struct {
	path    string
	entries map[uint64]Entry // every record ever appended
	maxSeq  uint64
	size    int64
}

func newFaultFixture(t *testing.T) faultFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buf.db")
	b, _ := mustOpen(t, path, Options{Sync: SyncBatch, BatchRecords: 25, BatchInterval: time.Hour})
	rng := rand.New(rand.NewPCG(1, 2))
	f := faultFixture{path: path, entries: map[uint64]Entry{}}
	for i := range 800 {
		c := Routine
		if rng.IntN(10) == 0 {
			c = Alert
		}
		at := t0.Add(time.Duration(i) * time.Minute)
		data := bytes.Repeat([]byte{byte('a' + i%26)}, 50+rng.IntN(250))
		s := mustAppend(t, b, c, at, string(data))
		f.entries[s] = Entry{Seq: s, Class: c, Time: at, Data: data}
		f.maxSeq = max(f.maxSeq, s)
		if i%100 == 99 {
			// Deliver the oldest hundred, so the file has freed pages.
			es, err := b.Peek(100, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Ack(seqs(es)...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f.size = fi.Size()
	return f
}

// damage copies the fixture, lets mutate change the copy, and checks that
// the copy opens, returns only intact records, numbers new ones above
// every old seq, and takes new records.
func (f faultFixture) check(t *testing.T, name string, mutate func(path string)) *Recovery {
	t.Helper()
	path := crashCopy(t, f.path)
	mutate(path)
	b, rec, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("%s: Open = %v, want success", name, err)
	}
	defer b.Close()
	es, err := b.Peek(1<<20, 0)
	if err != nil {
		t.Fatalf("%s: Peek = %v", name, err)
	}
	for _, e := range es {
		if e.Class == Event {
			if !bytes.Contains(e.Data, []byte(`"kind":"gap"`)) {
				t.Errorf("%s: unexpected event %d: %s", name, e.Seq, e.Data)
			}
			continue
		}
		want, ok := f.entries[e.Seq]
		if !ok || want.Class != e.Class || !want.Time.Equal(e.Time) || !bytes.Equal(want.Data, e.Data) {
			t.Fatalf("%s: Peek returned seq %d that is not an intact original record", name, e.Seq)
		}
	}
	s, err := b.Append(Alert, t0, []byte("after damage"))
	if err != nil {
		t.Fatalf("%s: Append after recovery = %v", name, err)
	}
	if s <= f.maxSeq {
		t.Fatalf("%s: Append after recovery got seq %d, not above the old maximum %d", name, s, f.maxSeq)
	}
	got, err := b.PeekNewest(1, 0)
	if err != nil || len(got) != 1 || got[0].Seq != s {
		t.Fatalf("%s: PeekNewest after Append = %v, %v; want seq %d", name, got, err, s)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("%s: Close = %v", name, err)
	}
	// And the repaired file is sound.
	b2, rec2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("%s: second Open = %v", name, err)
	}
	if rec2 != nil {
		t.Errorf("%s: second Open: Recovery = %v, want nil", name, rec2)
	}
	b2.Close()
	return rec
}

func TestOpenTruncated(t *testing.T) {
	f := newFaultFixture(t)
	rng := rand.New(rand.NewPCG(3, 4))
	offsets := []int64{0, 1, 100, 4095, 4096, 4097, 8191, 8192, 8193, f.size - 1}
	for off := int64(12288); off < f.size; off += 4096 * 3 {
		offsets = append(offsets, off)
	}
	for range 40 {
		offsets = append(offsets, rng.Int64N(f.size))
	}
	setAside, salvaged := 0, 0
	for _, off := range offsets {
		rec := f.check(t, fmt.Sprintf("truncate at %d", off), func(p string) {
			if err := os.Truncate(p, off); err != nil {
				t.Fatal(err)
			}
		})
		if rec != nil && rec.SetAside != "" {
			setAside++
			salvaged += rec.Salvaged
			if _, err := os.Stat(rec.SetAside); err != nil {
				t.Errorf("set-aside file: %v", err)
			}
		}
	}
	t.Logf("%d truncations of a %d-byte file: %d set aside, %d records salvaged from them", len(offsets), f.size, setAside, salvaged)
	if setAside == 0 {
		t.Errorf("no truncation was detected as damage")
	}
}

func TestOpenGarbled(t *testing.T) {
	f := newFaultFixture(t)
	rng := rand.New(rand.NewPCG(5, 6))
	kinds := []string{"bytes", "page", "zero-page", "bits", "meta"}
	detected := 0
	for i := range 80 {
		kind := kinds[i%len(kinds)]
		rec := f.check(t, fmt.Sprintf("garble %d (%s)", i, kind), func(p string) {
			fh, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			buf := make([]byte, f.size)
			if _, err := fh.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			pages := f.size / 4096
			switch kind {
			case "bytes":
				off := rng.Int64N(f.size - 64)
				for j := range 1 + rng.IntN(64) {
					buf[off+int64(j)] = byte(rng.Uint32())
				}
			case "page":
				pg := 2 + rng.Int64N(pages-2)
				for j := range int64(4096) {
					buf[pg*4096+j] = byte(rng.Uint32())
				}
			case "zero-page":
				pg := rng.Int64N(pages)
				clear(buf[pg*4096 : (pg+1)*4096])
			case "bits":
				for range 1 + rng.IntN(8) {
					off := rng.Int64N(f.size)
					buf[off] ^= 1 << rng.IntN(8)
				}
			case "meta":
				// Both meta pages: the file is unusable for bbolt.
				for _, pg := range []int64{0, 1} {
					buf[pg*4096+16+rng.Int64N(64)] ^= 0xFF
				}
			}
			if _, err := fh.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
		})
		if rec != nil && (rec.SetAside != "" || rec.CorruptRecords > 0) {
			detected++
		}
	}
	t.Logf("80 garbled copies: %d detected as damaged (the rest hit free pages or padding)", detected)
	if detected == 0 {
		t.Errorf("no garbling was detected")
	}
}

func TestOpenOddFiles(t *testing.T) {
	f := newFaultFixture(t)
	rec := f.check(t, "zero-length", func(p string) {
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
	})
	if rec == nil || !rec.Missing {
		t.Errorf("zero-length file: Recovery = %v, want Missing", rec)
	}
	rec = f.check(t, "deleted", func(p string) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	})
	if rec == nil || !rec.Missing || rec.MaybeLostLast < f.maxSeq {
		t.Errorf("deleted file: Recovery = %v, want Missing with seqs up to %d maybe lost", rec, f.maxSeq)
	}
	rec = f.check(t, "garbled seq file", func(p string) {
		if err := os.WriteFile(p+".seq", []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if rec == nil || rec.HighWater == nil {
		t.Errorf("garbled seq file: Recovery = %v, want a HighWater error", rec)
	}
	rec = f.check(t, "not a bbolt file", func(p string) {
		if err := os.WriteFile(p, bytes.Repeat([]byte("not a database\n"), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if rec == nil || rec.SetAside == "" || !strings.Contains(rec.String(), "set aside") {
		t.Errorf("foreign file: Recovery = %v, want it set aside", rec)
	}
}

func TestSetAsideFilesArePruned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buf.db")
	now := t0
	for i := range 4 {
		if err := os.WriteFile(path, []byte(fmt.Sprintf("garbage %d", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		b, rec, err := Open(path, Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil || rec.SetAside == "" {
			t.Fatalf("round %d: Recovery = %v, want a set-aside file", i, rec)
		}
		b.Close()
		os.Remove(path)
	}
	got, err := filepath.Glob(corruptGlob(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != keepCorrupt {
		t.Errorf("%d set-aside files kept (%v), want %d", len(got), got, keepCorrupt)
	}
}
