package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors callers branch on.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("buffer: closed")
	// ErrLocked means another process (or another Buffer in this process)
	// has the buffer open. Stop the other trackerd, or point this one at
	// its own state directory.
	ErrLocked = errors.New("buffer in use by another process")
	// ErrFull means a record could not be written even after evicting
	// every routine record the policy allows: the buffer holds only alerts
	// and events, or the file system is out of space.
	ErrFull = errors.New("buffer: full")
	// ErrTooLarge means a record's data is larger than [Options.MaxRecord].
	ErrTooLarge = errors.New("buffer: record too large")
)

// SyncPolicy says when appended records are committed to flash.
type SyncPolicy string

// Sync policies.
const (
	// SyncAlways commits before Append returns; concurrent Appends share a
	// commit. A power cut loses nothing that Append returned.
	SyncAlways SyncPolicy = "always"
	// SyncBatch commits every BatchRecords records or BatchInterval,
	// whichever comes first. A power cut loses at most the records
	// appended since the last commit (see the package documentation).
	SyncBatch SyncPolicy = "batch"
)

// Defaults for zero Options fields.
const (
	DefaultBatchRecords  = 50
	DefaultBatchInterval = 5 * time.Second
	DefaultMaxBytes      = 64 << 20
	DefaultLockTimeout   = time.Second
	// MinMaxBytes is the smallest accepted file budget.
	MinMaxBytes = 128 << 10
	// MaxRecordBytes is the largest record data Append accepts (smaller
	// when MaxBytes is small: see [Options.MaxRecord]).
	MaxRecordBytes = 64 << 10
)

// Options configures a Buffer. Zero fields take the defaults above.
type Options struct {
	// Sync is SyncAlways (the default) or SyncBatch.
	Sync SyncPolicy
	// BatchRecords is the most records a batch commit waits for
	// (SyncBatch only).
	BatchRecords int
	// BatchInterval is the longest a record waits for a batch commit
	// (SyncBatch), and how often acknowledgements are committed when
	// nothing else forces a commit (both policies).
	BatchInterval time.Duration
	// MaxBytes is the budget for the buffer file on disk. Live records are
	// capped at a third of it (see the package documentation).
	MaxBytes int64
	// LockTimeout is how long Open waits for another holder of the buffer
	// to let go before returning ErrLocked.
	LockTimeout time.Duration
	// Now is the clock used for the times of the events the buffer writes
	// itself (gap reports) and for naming set-aside files. Default
	// time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Sync == "" {
		o.Sync = SyncAlways
	}
	if o.BatchRecords == 0 {
		o.BatchRecords = DefaultBatchRecords
	}
	if o.BatchInterval == 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports every problem with o (after defaults are applied).
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if o.Sync != SyncAlways && o.Sync != SyncBatch {
		errs = append(errs, fmt.Errorf("buffer: sync policy %q: use %q or %q", o.Sync, SyncAlways, SyncBatch))
	}
	if o.BatchRecords < 1 {
		errs = append(errs, fmt.Errorf("buffer: batch records %d: must be at least 1", o.BatchRecords))
	}
	if o.BatchInterval < 0 {
		errs = append(errs, fmt.Errorf("buffer: batch interval %v: must be positive", o.BatchInterval))
	}
	if o.MaxBytes < MinMaxBytes {
		errs = append(errs, fmt.Errorf("buffer: max bytes %d: must be at least %d", o.MaxBytes, MinMaxBytes))
	}
	if o.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("buffer: lock timeout %v: must not be negative", o.LockTimeout))
	}
	return errors.Join(errs...)
}

// LiveLimit is the cap on live record bytes for this file budget: a third
// of MaxBytes.
func (o Options) LiveLimit() int64 { return o.withDefaults().MaxBytes / 3 }

// MaxRecord is the largest record data Append accepts: MaxRecordBytes, or
// a sixteenth of LiveLimit if that is smaller.
func (o Options) MaxRecord() int {
	m := int64(MaxRecordBytes)
	if l := o.LiveLimit()/16 - keyLen - leafOverhead - recordHeaderLen; l < m {
		m = l
	}
	return int(m)
}

// Stats is a snapshot of the buffer's counters. Depth, Urgent, Bytes and
// Oldest* describe what is committed; Pending and PendingAcks what waits for
// the next commit. Commits, Thinned, Dropped, Evicted, GapEvents,
// FullRetries, WriteErrors and Lost count since Open.
type Stats struct {
	// Depth is the number of committed records not yet acknowledged and
	// committed as such.
	Depth int
	// Urgent is how many of them are alerts or events.
	Urgent int
	// Bytes is their accounted size (key, value and page element header
	// per record), the figure the cap applies to.
	Bytes int64
	// LiveLimit is the cap on Bytes.
	LiveLimit int64
	// FileBytes is the size of the buffer file.
	FileBytes int64
	// Pending is the number of appended records not yet committed.
	Pending int
	// PendingAcks is the number of acknowledgements not yet committed.
	PendingAcks int
	// OldestSeq and OldestTime identify the oldest committed record (zero
	// when empty).
	OldestSeq  uint64
	OldestTime time.Time
	// NextSeq is the sequence number the next Append will get.
	NextSeq uint64
	// Commits counts write transactions.
	Commits uint64
	// Thinned and Dropped count routine records evicted by thinning and
	// by dropping the oldest range; Evicted is their sum.
	Thinned, Dropped, Evicted uint64
	// GapEvents counts gap events the buffer wrote.
	GapEvents uint64
	// FullRetries counts commits that hit the file budget or a full disk
	// and were retried after evicting.
	FullRetries uint64
	// WriteErrors counts failed commits; Lost counts the records they
	// lost that Append had already returned (SyncBatch only).
	WriteErrors, Lost uint64
	// LastError is the most recent commit error, nil if none.
	LastError error
}

type pendingRec struct {
	seq   uint64
	class Class
	t     time.Time
	data  []byte
}

// batch is a group of records committed together.
type batch struct {
	recs []pendingRec
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// view is the committed state, kept in memory. It is changed only by a
// successful commit (under commitMu and mu), so a commit may read it
// without mu.
type view struct {
	st         state
	live       int64
	depth      int
	urgent     map[uint64]struct{}
	oldestSeq  uint64
	oldestTime time.Time
}

// Buffer is a durable, size-capped queue of records. All methods are safe
// for concurrent use.
type Buffer struct {
	path   string
	hwPath string
	opts   Options
	db     *bolt.DB
	lock   *os.File

	liveLimit int64
	lowWater  int64
	slack     uint64 // seqs reserved ahead of use (SyncBatch)
	maxRecord int

	// closeMu keeps the database open while a reader uses it.
	closeMu sync.RWMutex
	// commitMu serialises write transactions. Lock order: commitMu, mu.
	commitMu sync.Mutex
	dbClosed bool // guarded by commitMu

	mu           sync.Mutex
	closed       bool
	cur          *batch
	acks         map[uint64]struct{}
	acksInFlight map[uint64]struct{}
	nextSeq      uint64
	hwReserved   uint64
	unhealthy    bool
	v            view
	changed      chan struct{}
	stats        Stats

	stop chan struct{}
	done chan struct{}
}

// Changed returns a channel that is closed at the next commit that adds
// records, or at Close. Take the channel before peeking, so no commit can
// slip between the peek and the wait:
//
//	ch := b.Changed()
//	if es, _ := b.Peek(n, 0); len(es) == 0 {
//		<-ch
//	}
func (b *Buffer) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Append stores a record and returns its sequence number. Sequence numbers
// are strictly increasing and never reused, across restarts and crashes.
// With SyncAlways the record is committed when Append returns; with
// SyncBatch it is committed by the next group commit. t is the capture time
// (may be zero); data is copied.
func (b *Buffer) Append(class Class, t time.Time, data []byte) (uint64, error) {
	if !class.Valid() {
		return 0, fmt.Errorf("buffer: append: invalid class %d", class)
	}
	if len(data) > b.maxRecord {
		return 0, fmt.Errorf("buffer: append %d bytes (limit %d): %w", len(data), b.maxRecord, ErrTooLarge)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, ErrClosed
	}
	seq := b.nextSeq
	b.nextSeq++
	bt := b.cur
	bt.recs = append(bt.recs, pendingRec{seq: seq, class: class, t: t, data: append([]byte{}, data...)})
	must := b.opts.Sync == SyncAlways || len(bt.recs) >= b.opts.BatchRecords ||
		seq >= b.v.st.Reserved || b.unhealthy
	b.mu.Unlock()
	if !must {
		return seq, nil
	}
	b.commitMu.Lock()
	select {
	case <-bt.done: // someone else committed our batch
	default:
		_ = b.commit(commitNormal) // the error is in bt.err
	}
	b.commitMu.Unlock()
	if bt.err != nil {
		return 0, bt.err
	}
	return seq, nil
}

// Ack marks records as delivered; they are deleted at the next commit and
// never returned again by Peek. Acknowledging a seq that is not stored (or
// already acknowledged) is not an error; a seq never assigned is.
func (b *Buffer) Ack(seqs ...uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for _, s := range seqs {
		if s == 0 || s >= b.nextSeq {
			return fmt.Errorf("buffer: ack seq %d: never assigned (next is %d)", s, b.nextSeq)
		}
	}
	for _, s := range seqs {
		b.acks[s] = struct{}{}
	}
	return nil
}

// Sync commits pending records and acknowledgements now.
func (b *Buffer) Sync() error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	return b.commit(commitNormal)
}

// Stats returns a snapshot of the counters.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	s := b.stats
	s.Depth = b.v.depth
	s.Urgent = len(b.v.urgent)
	s.Bytes = b.v.live
	s.LiveLimit = b.liveLimit
	s.Pending = len(b.cur.recs)
	s.PendingAcks = len(b.acks) + len(b.acksInFlight)
	s.OldestSeq = b.v.oldestSeq
	s.OldestTime = b.v.oldestTime
	s.NextSeq = b.nextSeq
	s.Evicted = s.Thinned + s.Dropped
	b.mu.Unlock()
	if fi, err := os.Stat(b.path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s
}

// Close commits what is pending, marks the file cleanly closed, stops the
// flusher and releases the file. Close is idempotent.
func (b *Buffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()

	close(b.stop)
	<-b.done

	b.commitMu.Lock()
	err := b.commit(commitClose)
	b.dbClosed = true
	b.commitMu.Unlock()

	b.closeMu.Lock()
	if cerr := b.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("buffer: close: %w", cerr))
	}
	b.closeMu.Unlock()
	if cerr := unlockFile(b.lock); cerr != nil {
		err = errors.Join(err, fmt.Errorf("buffer: release lock: %w", cerr))
	}
	b.mu.Lock()
	close(b.changed)
	b.mu.Unlock()
	return err
}

// flusher commits on a timer: pending records (SyncBatch) and
// acknowledgements (both policies). It is owned by the Buffer and stopped
// by Close.
func (b *Buffer) flusher() {
	defer close(b.done)
	t := time.NewTicker(b.opts.BatchInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			work := len(b.cur.recs) > 0 || len(b.acks) > 0
			b.mu.Unlock()
			if work {
				b.commitMu.Lock()
				_ = b.commit(commitNormal) // recorded in Stats; later Appends report it
				b.commitMu.Unlock()
			}
		}
	}
}

// read runs f in a read transaction with the acknowledged-but-not-yet-
// deleted seqs.
func (b *Buffer) read(f func(tx *bolt.Tx, acked func(uint64) bool) error) error {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	acked := make(map[uint64]struct{}, len(b.acks)+len(b.acksInFlight))
	for s := range b.acks {
		acked[s] = struct{}{}
	}
	for s := range b.acksInFlight {
		acked[s] = struct{}{}
	}
	b.mu.Unlock()
	return b.db.View(func(tx *bolt.Tx) error {
		return f(tx, func(s uint64) bool { _, ok := acked[s]; return ok })
	})
}

// collector gathers peeked entries within the limits.
type collector struct {
	maxRecords, maxBytes, bytes int
	out                         []Entry
	bad                         int
}

// add decodes k/v and reports whether there is room for more.
func (c *collector) add(k, v []byte) bool {
	e, err := decodeEntry(k, v)
	if err != nil {
		// Damaged after Open's scan (the medium rotted under us): skip
		// it; it is deleted at the next Open.
		c.bad++
		return true
	}
	if len(c.out) > 0 && c.maxBytes > 0 && c.bytes+len(e.Data) > c.maxBytes {
		return false
	}
	c.out = append(c.out, e)
	c.bytes += len(e.Data)
	return len(c.out) < c.maxRecords && (c.maxBytes <= 0 || c.bytes < c.maxBytes)
}

func checkLimits(maxRecords int) error {
	if maxRecords < 1 {
		return fmt.Errorf("buffer: peek: maxRecords %d: must be at least 1", maxRecords)
	}
	return nil
}

// Peek returns up to maxRecords committed, unacknowledged records, oldest
// first, whose data totals at most maxBytes (maxBytes <= 0: no limit; the
// first record is returned even if it alone is larger). Only committed
// records are returned, so nothing a caller has published can vanish in a
// crash.
func (b *Buffer) Peek(maxRecords, maxBytes int) ([]Entry, error) {
	return b.PeekAfter(0, maxRecords, maxBytes)
}

// PeekAfter is Peek starting after seq after, so a publisher can send the
// next batch before the previous one is acknowledged.
func (b *Buffer) PeekAfter(after uint64, maxRecords, maxBytes int) ([]Entry, error) {
	if err := checkLimits(maxRecords); err != nil {
		return nil, err
	}
	c := &collector{maxRecords: maxRecords, maxBytes: maxBytes}
	err := b.read(func(tx *bolt.Tx, acked func(uint64) bool) error {
		cur := tx.Bucket(recordsBucket).Cursor()
		for k, v := cur.Seek(seqKey(after + 1)); k != nil; k, v = cur.Next() {
			if len(k) == keyLen && acked(seqOf(k)) {
				continue
			}
			if !c.add(k, v) {
				break
			}
		}
		return nil
	})
	return c.out, err
}

// PeekNewest returns up to maxRecords committed, unacknowledged records,
// newest first: the publisher's fast lane for the latest reading.
func (b *Buffer) PeekNewest(maxRecords, maxBytes int) ([]Entry, error) {
	if err := checkLimits(maxRecords); err != nil {
		return nil, err
	}
	c := &collector{maxRecords: maxRecords, maxBytes: maxBytes}
	err := b.read(func(tx *bolt.Tx, acked func(uint64) bool) error {
		cur := tx.Bucket(recordsBucket).Cursor()
		for k, v := cur.Last(); k != nil; k, v = cur.Prev() {
			if len(k) == keyLen && acked(seqOf(k)) {
				continue
			}
			if !c.add(k, v) {
				break
			}
		}
		return nil
	})
	return c.out, err
}

// PeekUrgent returns up to maxRecords committed, unacknowledged alerts and
// events, oldest first: the publisher's fast lane for what must not wait
// behind a backlog of routine readings.
func (b *Buffer) PeekUrgent(maxRecords, maxBytes int) ([]Entry, error) {
	if err := checkLimits(maxRecords); err != nil {
		return nil, err
	}
	b.mu.Lock()
	seqs := make([]uint64, 0, len(b.v.urgent))
	for s := range b.v.urgent {
		seqs = append(seqs, s)
	}
	b.mu.Unlock()
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	c := &collector{maxRecords: maxRecords, maxBytes: maxBytes}
	err := b.read(func(tx *bolt.Tx, acked func(uint64) bool) error {
		rb := tx.Bucket(recordsBucket)
		for _, s := range seqs {
			if acked(s) {
				continue
			}
			v := rb.Get(seqKey(s))
			if v == nil {
				continue // acknowledged and deleted since the snapshot
			}
			if !c.add(seqKey(s), v) {
				break
			}
		}
		return nil
	})
	return c.out, err
}

func lockPath(path string) string { return path + ".lock" }

func corruptGlob(path string) string {
	return filepath.Join(filepath.Dir(path), filepath.Base(path)+".corrupt-*")
}
