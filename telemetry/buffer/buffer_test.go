package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustOpen(t testing.TB, path string, o Options) (*Buffer, *Recovery) {
	t.Helper()
	b, rec, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b, rec
}

func mustAppend(t testing.TB, b *Buffer, c Class, at time.Time, data string) uint64 {
	t.Helper()
	s, err := b.Append(c, at, []byte(data))
	if err != nil {
		t.Fatalf("Append(%v, %q) = %v", c, data, err)
	}
	return s
}

func mustPeek(t testing.TB, b *Buffer) []Entry {
	t.Helper()
	es, err := b.Peek(1<<30, 0)
	if err != nil {
		t.Fatalf("Peek = %v", err)
	}
	return es
}

func seqs(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// crashCopy copies the buffer's files as they are on disk right now into a
// new directory: the image a power cut would leave (every commit is
// fsynced, so the committed state is in the file).
func crashCopy(t testing.TB, path string) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", ".seq"} {
		src, err := os.Open(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(dir, "buf.db"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "buf.db")
}

func TestAppendPeekAckReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	b, rec := mustOpen(t, path, Options{})
	if rec != nil {
		t.Errorf("Open of a new file: Recovery = %v, want nil", rec)
	}
	var want []Entry
	for i := range 10 {
		c := Routine
		if i%4 == 3 {
			c = Alert
		}
		at := t0.Add(time.Duration(i) * time.Minute)
		data := fmt.Sprintf(`{"n":%d}`, i)
		s := mustAppend(t, b, c, at, data)
		if len(want) > 0 && s <= want[len(want)-1].Seq {
			t.Fatalf("Append returned seq %d after %d", s, want[len(want)-1].Seq)
		}
		want = append(want, Entry{Seq: s, Class: c, Time: at, Data: []byte(data)})
	}
	if diff := cmp.Diff(want, mustPeek(t, b)); diff != "" {
		t.Fatalf("Peek after appends (-want +got):\n%s", diff)
	}
	st := b.Stats()
	if st.Depth != 10 || st.Urgent != 2 || st.OldestSeq != want[0].Seq || !st.OldestTime.Equal(t0) {
		t.Errorf("Stats = depth %d urgent %d oldest %d %v; want 10, 2, %d, %v", st.Depth, st.Urgent, st.OldestSeq, st.OldestTime, want[0].Seq, t0)
	}

	// Acknowledged records disappear from Peek at once, and from the file
	// at the next commit.
	if err := b.Ack(want[0].Seq, want[3].Seq, want[4].Seq); err != nil {
		t.Fatal(err)
	}
	rest := append([]Entry{}, want[1:3]...)
	rest = append(rest, want[5:]...)
	if diff := cmp.Diff(rest, mustPeek(t, b)); diff != "" {
		t.Fatalf("Peek after Ack (-want +got):\n%s", diff)
	}
	if err := b.Ack(want[0].Seq); err != nil {
		t.Errorf("Ack of an already acknowledged seq = %v, want nil", err)
	}
	if err := b.Ack(want[9].Seq + 100); err == nil {
		t.Errorf("Ack of a never assigned seq = nil, want error")
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Depth != 7 || st.Urgent != 1 || st.PendingAcks != 0 {
		t.Errorf("Stats after Sync = depth %d urgent %d pendingAcks %d; want 7, 1, 0", st.Depth, st.Urgent, st.PendingAcks)
	}
	next := b.Stats().NextSeq
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(Routine, t0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Peek(1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close = %v, want ErrClosed", err)
	}

	b2, rec := mustOpen(t, path, Options{})
	if rec != nil {
		t.Errorf("Open after Close: Recovery = %v, want nil", rec)
	}
	if diff := cmp.Diff(rest, mustPeek(t, b2)); diff != "" {
		t.Fatalf("Peek after reopen (-want +got):\n%s", diff)
	}
	if got := b2.Stats().NextSeq; got != next {
		t.Errorf("NextSeq after a clean reopen = %d, want %d (no hole)", got, next)
	}
	if s := mustAppend(t, b2, Routine, t0, "x"); s != next {
		t.Errorf("first Append after reopen = seq %d, want %d", s, next)
	}
}

func TestPeekVariants(t *testing.T) {
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{})
	var all []uint64
	for i := range 8 {
		c := Routine
		if i == 2 || i == 5 {
			c = Alert
		}
		if i == 6 {
			c = Event
		}
		all = append(all, mustAppend(t, b, c, t0, string(bytes.Repeat([]byte{'a' + byte(i)}, 10))))
	}
	tests := []struct {
		name string
		peek func() ([]Entry, error)
		want []uint64
	}{
		{"Peek 3", func() ([]Entry, error) { return b.Peek(3, 0) }, all[:3]},
		{"Peek 25 bytes", func() ([]Entry, error) { return b.Peek(100, 25) }, all[:2]},
		{"Peek 1 byte returns one", func() ([]Entry, error) { return b.Peek(100, 1) }, all[:1]},
		{"PeekAfter", func() ([]Entry, error) { return b.PeekAfter(all[4], 2, 0) }, all[5:7]},
		{"PeekNewest", func() ([]Entry, error) { return b.PeekNewest(3, 0) }, []uint64{all[7], all[6], all[5]}},
		{"PeekUrgent", func() ([]Entry, error) { return b.PeekUrgent(10, 0) }, []uint64{all[2], all[5], all[6]}},
		{"PeekUrgent 2", func() ([]Entry, error) { return b.PeekUrgent(2, 0) }, []uint64{all[2], all[5]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := tt.peek()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, seqs(es)); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
		})
	}
	if err := b.Ack(all[5]); err != nil {
		t.Fatal(err)
	}
	es, err := b.PeekUrgent(10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{all[2], all[6]}, seqs(es)); diff != "" {
		t.Errorf("PeekUrgent after Ack (-want +got):\n%s", diff)
	}
	if _, err := b.Peek(0, 0); err == nil {
		t.Errorf("Peek(0, 0) = nil error, want one")
	}
}

func TestBatchPolicyOnlyCommittedVisible(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	b, _ := mustOpen(t, path, Options{Sync: SyncBatch, BatchRecords: 10, BatchInterval: time.Hour})
	var got []uint64
	for range 5 {
		got = append(got, mustAppend(t, b, Routine, t0, "r"))
	}
	if es := mustPeek(t, b); len(es) != 0 {
		t.Fatalf("Peek before the batch commits = %v, want nothing", seqs(es))
	}
	if st := b.Stats(); st.Pending != 5 {
		t.Errorf("Stats.Pending = %d, want 5", st.Pending)
	}
	// A crash now loses the five.
	crashed := crashCopy(t, path)
	for range 5 {
		got = append(got, mustAppend(t, b, Routine, t0, "r"))
	}
	// The tenth Append committed the batch before returning.
	if diff := cmp.Diff(got, seqs(mustPeek(t, b))); diff != "" {
		t.Fatalf("Peek after BatchRecords appends (-want +got):\n%s", diff)
	}
	if st := b.Stats(); st.Pending != 0 {
		t.Errorf("Stats.Pending = %d, want 0", st.Pending)
	}

	c, rec := mustOpen(t, crashed, Options{Sync: SyncBatch, BatchRecords: 10, BatchInterval: time.Hour})
	t.Logf("recovery: %v", rec)
	if rec == nil || !rec.Unclean {
		t.Fatalf("Open of a crash image: Recovery = %v, want Unclean", rec)
	}
	if rec.MaybeLostFirst > got[0] || rec.MaybeLostLast < got[4] {
		t.Errorf("Recovery says seqs %d-%d may be lost; the lost ones were %d-%d", rec.MaybeLostFirst, rec.MaybeLostLast, got[0], got[4])
	}
	s := mustAppend(t, c, Routine, t0, "after")
	if s <= got[4] {
		t.Errorf("first seq after the crash = %d, want above the lost %d", s, got[4])
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	es := mustPeek(t, c)
	if len(es) != 2 || es[0].Class != Event || es[1].Seq != s {
		t.Fatalf("after the crash Peek = %+v, want the unclean-shutdown gap event and seq %d", es, s)
	}
	if !bytes.Contains(es[0].Data, []byte(`"reason":"unclean-shutdown"`)) {
		t.Errorf("gap event data = %s, want reason unclean-shutdown", es[0].Data)
	}
}

func TestBatchIntervalCommits(t *testing.T) {
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{Sync: SyncBatch, BatchRecords: 1000, BatchInterval: 10 * time.Millisecond})
	ch := b.Changed()
	s := mustAppend(t, b, Routine, t0, "r")
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no commit within 10s of a 10ms batch interval")
	}
	if got := seqs(mustPeek(t, b)); len(got) != 1 || got[0] != s {
		t.Errorf("Peek after the interval commit = %v, want [%d]", got, s)
	}
}

func TestChangedWakesWaiter(t *testing.T) {
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{})
	ch := b.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any commit")
	default:
	}
	mustAppend(t, b, Routine, t0, "r")
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed after a SyncAlways Append returned")
	}
	ch = b.Changed()
	b.Close()
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by Close")
	}
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	b, _ := mustOpen(t, filepath.Join(t.TempDir(), "buf.db"), Options{})
	const workers, each = 8, 40
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				s, err := b.Append(Routine, t0, fmt.Appendf(nil, "%d-%d", w, i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[s] {
					t.Errorf("seq %d returned twice", s)
				}
				seen[s] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	es := mustPeek(t, b)
	if len(es) != workers*each {
		t.Fatalf("Peek returned %d records, want %d", len(es), workers*each)
	}
	for _, e := range es {
		if !seen[e.Seq] {
			t.Errorf("stored seq %d was never returned by Append", e.Seq)
		}
	}
	st := b.Stats()
	t.Logf("%d appends from %d goroutines in %d commits", workers*each, workers, st.Commits)
	if st.Commits > workers*each+1 {
		t.Errorf("Commits = %d, more than one per Append", st.Commits)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buf.db")
	for _, o := range []Options{
		{Sync: "sometimes"},
		{BatchRecords: -1},
		{MaxBytes: 1000},
	} {
		if _, _, err := Open(path, o); err == nil {
			t.Errorf("Open with %+v = nil error, want one", o)
		}
	}
	if _, _, err := Open(filepath.Join(dir, "nope", "buf.db"), Options{}); err == nil {
		t.Errorf("Open in a missing directory = nil error, want one")
	}
	b, _ := mustOpen(t, path, Options{})
	_, _, err := Open(path, Options{LockTimeout: 30 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	if _, err := b.Append(0, t0, nil); err == nil {
		t.Errorf("Append of class 0 = nil error, want one")
	}
	if _, err := b.Append(Routine, t0, make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append of %d bytes = %v, want ErrTooLarge", MaxRecordBytes+1, err)
	}
	b.Close()
	b2, _ := mustOpen(t, path, Options{})
	if err := b2.Close(); err != nil {
		t.Errorf("Close after the lock was released = %v", err)
	}
}

func TestPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	b, _ := mustOpen(t, path, Options{})
	mustAppend(t, b, Routine, t0, "r")
	b.Close()
	for _, p := range []string{path, path + ".seq", path + ".lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), m)
		}
	}
}
