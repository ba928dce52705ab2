package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/coldchain/tracker/telemetry"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// keepCorrupt is how many set-aside files are kept for forensics; older
// ones are deleted so repeated damage cannot fill the card.
const keepCorrupt = 2

// Recovery describes what Open found and repaired. Open returns nil when
// the previous session closed cleanly and nothing was damaged.
type Recovery struct {
	// SetAside is where a damaged buffer file was moved ("" if none was).
	SetAside string
	// Damage says what was wrong with the file or its records.
	Damage error
	// Salvaged is the number of intact records copied out of a set-aside
	// file into the new one.
	Salvaged int
	// CorruptRecords is the number of records removed because their
	// checksum failed.
	CorruptRecords int
	// Missing is set when the buffer file did not exist but its seq
	// high-water file did: the file was deleted behind the buffer's back.
	Missing bool
	// Unclean is set when the previous session did not Close (power cut,
	// SIGKILL).
	Unclean bool
	// MaybeLostFirst and MaybeLostLast bound the seqs that may have
	// belonged to records lost with the damage or the unclean shutdown
	// (both zero if nothing can have been lost).
	MaybeLostFirst, MaybeLostLast uint64
	// HighWater reports a problem with the seq high-water file (it is
	// rewritten at once).
	HighWater error
	// NextSeq is where numbering resumes.
	NextSeq uint64
}

// String summarises the recovery for a log line.
func (r *Recovery) String() string {
	var parts []string
	if r.SetAside != "" {
		parts = append(parts, fmt.Sprintf("damaged file set aside as %s (%d records salvaged)", r.SetAside, r.Salvaged))
	}
	if r.Damage != nil {
		parts = append(parts, fmt.Sprintf("damage: %v", r.Damage))
	}
	if r.CorruptRecords > 0 {
		parts = append(parts, fmt.Sprintf("%d corrupt records removed", r.CorruptRecords))
	}
	if r.Missing {
		parts = append(parts, "buffer file was missing")
	}
	if r.Unclean {
		parts = append(parts, "previous session did not close cleanly")
	}
	if r.MaybeLostLast != 0 {
		parts = append(parts, fmt.Sprintf("seqs %d-%d may be lost", r.MaybeLostFirst, r.MaybeLostLast))
	}
	if r.HighWater != nil {
		parts = append(parts, fmt.Sprintf("seq high-water file: %v", r.HighWater))
	}
	parts = append(parts, fmt.Sprintf("next seq %d", r.NextSeq))
	return "buffer recovery: " + strings.Join(parts, "; ")
}

// Open opens or creates the buffer at path (a bbolt file; the directory
// must exist). Open does not refuse to start because of damage: a file that
// fails its checks is moved to <path>.corrupt-<time>, its intact records are
// copied into a new file, and the loss is described in the returned
// Recovery and written to the buffer as a gap event. It fails only when the
// options are invalid, the directory is unusable, or the buffer is held by
// another process (ErrLocked).
func Open(path string, opts Options) (*Buffer, *Recovery, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	opts = opts.withDefaults()
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return nil, nil, fmt.Errorf("buffer: open %s: directory %s does not exist; create the state directory first", path, filepath.Dir(path))
	}
	lock, err := lockFile(lockPath(path), opts.LockTimeout)
	if err != nil {
		return nil, nil, err
	}
	b := &Buffer{
		path: path, hwPath: path + ".seq", opts: opts, lock: lock,
		liveLimit: opts.LiveLimit(), maxRecord: opts.MaxRecord(),
		cur: newBatch(), acks: map[uint64]struct{}{},
		changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	b.lowWater = b.liveLimit * 7 / 8
	if opts.Sync == SyncBatch {
		b.slack = uint64(2 * opts.BatchRecords)
	}
	b.v.urgent = map[uint64]struct{}{}
	rec, err := b.open()
	if err != nil {
		unlockFile(lock)
		return nil, nil, err
	}
	go b.flusher()
	if rec != nil {
		rec.NextSeq = b.Stats().NextSeq
	}
	return b, rec, nil
}

// opened is what the first look at a file found.
type opened struct {
	fresh    bool // the file is new (or replaces a set-aside one)
	st       state
	stateErr error // the state record was missing or damaged
	maxKey   uint64
	bad      []uint64
	live     int64
	depth    int
	urgent   map[uint64]struct{}
}

// open does the checks, repairs and the first commit. Everything it
// allocates is released on error.
func (b *Buffer) open() (*Recovery, error) {
	rec := &Recovery{}
	hw, hwErr := readHighWater(b.hwPath)
	if hwErr != nil && !errors.Is(hwErr, errNoHighWater) {
		rec.HighWater = hwErr
		hw = 0
	}
	var salvaged map[uint64]Entry
	var salvagedState *state
	var metaErr error // one meta page is damaged: the last commit may be rolled back
	exists := false
	if fi, err := os.Stat(b.path); err == nil && fi.Size() > 0 {
		exists = true
		if err := checkPath(b.path); err != nil {
			salvaged, salvagedState = salvagePath(b.path)
			if err := b.setAside(rec, err); err != nil {
				return nil, err
			}
		} else {
			metaErr = checkMetaPages(b.path)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("buffer: open %s: %w", b.path, err)
	}
	if !exists && hwErr == nil && hw > 0 {
		rec.Missing = true
	}

	o, err := b.openDB()
	if err != nil && !errors.Is(err, ErrLocked) && rec.SetAside == "" {
		// Passed the walk but bbolt still refused it: set it aside too.
		salvaged, salvagedState = salvagePath(b.path)
		if err := b.setAside(rec, err); err != nil {
			return nil, err
		}
		o, err = b.openDB()
	}
	if err != nil {
		return nil, err
	}
	fresh := o.fresh || rec.SetAside != ""

	// Where numbering resumes: above everything this file or the
	// high-water file says may have been handed out.
	next := max(uint64(1), o.maxKey+1)
	var gaps []telemetry.Gap
	switch {
	case !fresh && o.stateErr == nil:
		next = max(next, o.st.Last+1, o.st.Reserved)
		if !o.st.Clean {
			rec.Unclean = true
			if o.st.Batch && o.st.Reserved > o.st.Last+1 {
				rec.MaybeLostFirst, rec.MaybeLostLast = o.st.Last+1, o.st.Reserved-1
				gaps = append(gaps, telemetry.Gap{FirstSeq: o.st.Last + 1, LastSeq: o.st.Reserved - 1, Reason: GapUncleanShutdown})
			}
		}
		if metaErr != nil {
			// bbolt fell back to (or may have) the older meta page: the
			// newest commit's records and its seqs are unknown. Number
			// on above the high-water file, so no seq handed out before
			// is used again, and report the range.
			rec.Damage = errors.Join(rec.Damage, metaErr)
			if hwErr == nil && hw > next {
				rec.MaybeLostFirst, rec.MaybeLostLast = next, hw-1
				gaps = append(gaps, telemetry.Gap{FirstSeq: next, LastSeq: hw - 1, Reason: GapCorruptFile})
				next = hw
			}
		}
	default:
		if o.stateErr != nil && !fresh {
			rec.Damage = errors.Join(rec.Damage, o.stateErr)
		}
		next = max(next, hw)
		for s := range salvaged {
			next = max(next, s+1)
		}
		if salvagedState != nil {
			next = max(next, salvagedState.Last+1, salvagedState.Reserved)
		}
	}
	// Keep the thinning progress of a sound file; a new file starts over.
	if !fresh && o.stateErr == nil {
		b.v.st = o.st
	}
	b.v.st.Reserved = 0 // forces the first commit to reserve afresh
	b.nextSeq = next
	b.hwReserved = hw
	if rec.HighWater != nil {
		b.hwReserved = 0
	}

	switch {
	case rec.SetAside != "":
		// Whatever the cloud has not received below next and was not
		// salvaged is gone; how much is unknown.
		rec.MaybeLostFirst, rec.MaybeLostLast = 1, next-1
		if next > 1 {
			gaps = append(gaps, telemetry.Gap{FirstSeq: 1, LastSeq: next - 1, Reason: GapCorruptFile})
		}
	case rec.Missing && next > 1:
		rec.MaybeLostFirst, rec.MaybeLostLast = 1, next-1
		gaps = append(gaps, telemetry.Gap{FirstSeq: 1, LastSeq: next - 1, Reason: GapMissingFile})
	}
	if len(o.bad) > 0 {
		rec.CorruptRecords = len(o.bad)
		rec.Damage = errors.Join(rec.Damage, fmt.Errorf("buffer: %d records failed their checksum", len(o.bad)))
		gaps = append(gaps, telemetry.Gap{FirstSeq: o.bad[0], LastSeq: o.bad[len(o.bad)-1], Count: uint64(len(o.bad)), Reason: GapCorruptRecords})
	}
	for _, g := range gaps {
		b.queueGapLocked(g)
	}
	// Salvaged records go in with their own seqs, ahead of the events.
	if len(salvaged) > 0 {
		seqs := make([]uint64, 0, len(salvaged))
		for s := range salvaged {
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		recs := make([]pendingRec, 0, len(seqs))
		for _, s := range seqs {
			e := salvaged[s]
			recs = append(recs, pendingRec{seq: s, class: e.Class, t: e.Time, data: e.Data})
		}
		b.cur.recs = append(recs, b.cur.recs...)
		rec.Salvaged = len(recs)
	}

	b.v.live, b.v.depth, b.v.urgent = o.live, o.depth, o.urgent
	// The first commit may exceed the file budget (a budget lowered in the
	// config, salvaged records): it evicts down to the cap itself, and a
	// buffer that cannot write its first commit would refuse to start.
	b.commitMu.Lock()
	err = b.uncapped(func() error { return b.commit(commitOpen) })
	b.commitMu.Unlock()
	if err != nil {
		b.db.Close()
		return nil, fmt.Errorf("buffer: first commit: %w", err)
	}
	if rec.SetAside == "" && rec.Damage == nil && !rec.Unclean && !rec.Missing && rec.HighWater == nil {
		return nil, nil
	}
	return rec, nil
}

// checkPath runs the pre-open structural walk on the file at path (record
// checksums are checked by openDB's scan).
func checkPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("buffer: check %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("buffer: check %s: %w", path, err)
	}
	return checkFile(f, fi.Size(), nil)
}

// checkMetaPages reports a damaged meta page in a file that passed
// checkPath. bbolt writes the two meta pages in turn and opens from the
// newest valid one, so a damaged page (a torn write, or rot) silently
// rolls back the commit that wrote it if it was the newest.
func checkMetaPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("buffer: check %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("buffer: check %s: %w", path, err)
	}
	_, other, _, err := chooseMeta(f, fi.Size())
	if err == nil && other.err != nil {
		return fmt.Errorf("%w: a meta page is invalid (%v): the last commit may have been rolled back", errDamaged, other.err)
	}
	return nil
}

// salvagePath collects the intact records (and state) of a damaged file.
func salvagePath(path string) (map[uint64]Entry, *state) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil
	}
	out := map[uint64]Entry{}
	var st *state
	salvage(f, fi.Size(), func(bucket, k, v []byte) {
		switch string(bucket) {
		case string(recordsBucket):
			if e, err := decodeEntry(k, v); err == nil {
				out[e.Seq] = e
			}
		case string(metaBucket):
			if string(k) == string(stateKey) {
				if s, err := decodeState(v); err == nil && (st == nil || s.Last > st.Last) {
					st = &s
				}
			}
		}
	})
	return out, st
}

// setAside moves the damaged file out of the way (kept for forensics) and
// prunes older set-aside files.
func (b *Buffer) setAside(rec *Recovery, why error) error {
	stamp := b.opts.Now().UTC().Format("20060102T150405.000000000Z")
	dst := b.path + ".corrupt-" + stamp
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		}
		dst = fmt.Sprintf("%s.corrupt-%s-%d", b.path, stamp, i)
	}
	if err := os.Rename(b.path, dst); err != nil {
		return fmt.Errorf("buffer: set aside damaged file %s: %w", b.path, err)
	}
	if err := syncDir(filepath.Dir(b.path)); err != nil {
		return fmt.Errorf("buffer: set aside damaged file %s: %w", b.path, err)
	}
	rec.SetAside = dst
	rec.Damage = errors.Join(rec.Damage, why)
	if old, err := filepath.Glob(corruptGlob(b.path)); err == nil && len(old) > keepCorrupt {
		sort.Strings(old)
		for _, p := range old[:len(old)-keepCorrupt] {
			if p != dst {
				os.Remove(p)
			}
		}
	}
	return nil
}

// openDB opens the (checked or new) file with bbolt and scans it. bbolt
// panics and memory faults are turned into errors, as a last line behind
// the pre-open walk.
func (b *Buffer) openDB() (o opened, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if b.db != nil {
				func() {
					defer func() { recover() }()
					b.db.Close()
				}()
				b.db = nil
			}
			err = fmt.Errorf("%w: bbolt: %v", errDamaged, r)
		}
	}()
	o.urgent = map[uint64]struct{}{}
	if fi, serr := os.Stat(b.path); serr != nil || fi.Size() == 0 {
		o.fresh = true
	}
	db, err := bolt.Open(b.path, 0o600, &bolt.Options{
		Timeout:        b.opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		MaxSize:        int(b.opts.MaxBytes),
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return o, fmt.Errorf("buffer: open %s: %w", b.path, ErrLocked)
	}
	if err != nil {
		return o, fmt.Errorf("%w: bbolt open: %w", errDamaged, err)
	}
	b.db = db
	// Grow the file in small steps so the budget is not spent on one
	// large pre-allocation (bbolt's default step is 16 MiB).
	db.AllocSize = int(min(max(b.opts.MaxBytes/16, 32<<10), 4<<20))
	err = db.Update(func(tx *bolt.Tx) error {
		rb, err := tx.CreateBucketIfNotExists(recordsBucket)
		if err != nil {
			return err
		}
		mb, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := mb.Get(stateKey); v != nil {
			o.st, o.stateErr = decodeState(v)
		} else {
			o.stateErr = errors.New("buffer: no state record")
		}
		var bad [][]byte
		c := rb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, derr := decodeEntry(k, v)
			if derr != nil {
				bad = append(bad, append([]byte{}, k...))
				continue
			}
			o.live += footprint(len(v))
			o.depth++
			if !e.Class.evictable() {
				o.urgent[e.Seq] = struct{}{}
			}
			o.maxKey = max(o.maxKey, e.Seq)
		}
		for _, k := range bad {
			if len(k) == keyLen {
				o.bad = append(o.bad, seqOf(k))
				o.maxKey = max(o.maxKey, seqOf(k))
			}
			if err := rb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		b.db = nil
		return o, fmt.Errorf("%w: first scan: %w", errDamaged, err)
	}
	if o.fresh {
		o.stateErr = nil
	}
	return o, nil
}
