package buffer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/coldchain/tracker/telemetry"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Gap reasons, in the telemetry.Gap of the events the buffer writes.
const (
	// GapThinned: routine records removed by thinning (every other one in
	// the oldest region). Count is exact; the removed seqs lie between
	// FirstSeq and LastSeq, interleaved with kept ones.
	GapThinned = "thinned"
	// GapDropped: the oldest routine records removed outright. Count is
	// exact; alerts and events between FirstSeq and LastSeq were kept.
	GapDropped = "dropped"
	// GapUncleanShutdown: power was lost in SyncBatch mode; records
	// appended in the last batch window, if any, had seqs in the range.
	// Count is 0 (unknown).
	GapUncleanShutdown = "unclean-shutdown"
	// GapCorruptFile: the buffer file was damaged and set aside, or a
	// damaged meta page may have rolled back its last commit; records in
	// the range that were not salvaged are lost. Count is 0 (unknown).
	GapCorruptFile = "corrupt-file"
	// GapMissingFile: the buffer file was gone while its seq high-water
	// file remained; records below LastSeq that were never delivered are
	// lost. Count is 0 (unknown).
	GapMissingFile = "missing-file"
	// GapCorruptRecords: records whose checksums failed were removed.
	// Count is exact.
	GapCorruptRecords = "corrupt-records"
	// GapWriteFailed: a batch commit failed (SyncBatch), losing records
	// Append had returned. Count is exact.
	GapWriteFailed = "write-failed"
)

const (
	// hwAhead is how far the seq high-water file runs ahead of use.
	hwAhead = 4096
	// eventMargin is how close the seqs in use may come to the high-water
	// file's floor before it is moved ahead.
	eventMargin = 16
	// mergeGapsAt is how many undelivered eviction gap events may exist
	// before they are folded into one per reason.
	mergeGapsAt = 16
)

func seqOf(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

// isFull reports whether err means the file budget or the disk is full.
func isFull(err error) bool {
	return errors.Is(err, berrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC)
}

// txResult is what a write transaction changed, applied to the view only
// after it commits.
type txResult struct {
	st         state
	live       int64
	depth      int
	urgentAdd  []uint64
	urgentDel  []uint64
	added      int
	thinned    int
	dropped    int
	gapEvents  int
	oldestSeq  uint64
	oldestTime time.Time
}

// commitKind says why a commit runs.
type commitKind int

const (
	commitNormal commitKind = iota
	// commitOpen always writes: it marks the session open (unclean until
	// Close) and reserves seqs.
	commitOpen
	// commitClose always writes: it marks the file cleanly closed and
	// reserves no seqs ahead.
	commitClose
)

// commit writes the current batch and acknowledgements in one transaction.
// It must be called with commitMu held.
func (b *Buffer) commit(kind commitKind) error {
	closing := kind == commitClose
	b.mu.Lock()
	bt := b.cur
	b.cur = newBatch()
	acks := b.acks
	b.acks = map[uint64]struct{}{}
	b.acksInFlight = acks
	reserve := b.nextSeq + b.slack
	if closing {
		reserve = b.nextSeq
	}
	b.mu.Unlock()

	var err error
	var res txResult
	switch {
	case b.dbClosed:
		err = ErrClosed
	case len(bt.recs) == 0 && len(acks) == 0 && kind == commitNormal:
		// Nothing to write.
	default:
		res, err = b.writeTx(bt.recs, acks, reserve, closing)
		if isFull(err) {
			b.mu.Lock()
			b.stats.FullRetries++
			b.mu.Unlock()
			res, err = b.retryFull(bt.recs, acks, reserve, closing)
		}
	}

	b.mu.Lock()
	b.acksInFlight = nil
	if err != nil {
		for s := range acks {
			b.acks[s] = struct{}{}
		}
		if !errors.Is(err, ErrClosed) {
			b.stats.WriteErrors++
			b.stats.LastError = err
			b.unhealthy = true
			if b.opts.Sync == SyncBatch && len(bt.recs) > 0 && !closing {
				b.stats.Lost += uint64(len(bt.recs))
				b.queueGapLocked(telemetry.Gap{
					FirstSeq: bt.recs[0].seq, LastSeq: bt.recs[len(bt.recs)-1].seq,
					Count: uint64(len(bt.recs)), Reason: GapWriteFailed,
				})
			}
		}
	} else if len(bt.recs) > 0 || len(acks) > 0 || kind != commitNormal {
		b.applyLocked(res)
		b.unhealthy = false
		b.stats.Commits++
		if res.added > 0 {
			close(b.changed)
			b.changed = make(chan struct{})
		}
	}
	b.mu.Unlock()
	bt.err = err
	close(bt.done)
	return err
}

// applyLocked makes a committed transaction's result the view.
func (b *Buffer) applyLocked(res txResult) {
	b.v.st = res.st
	b.v.live = res.live
	b.v.depth = res.depth
	for _, s := range res.urgentAdd {
		b.v.urgent[s] = struct{}{}
	}
	for _, s := range res.urgentDel {
		delete(b.v.urgent, s)
	}
	b.v.oldestSeq, b.v.oldestTime = res.oldestSeq, res.oldestTime
	b.stats.Thinned += uint64(res.thinned)
	b.stats.Dropped += uint64(res.dropped)
	b.stats.GapEvents += uint64(res.gapEvents)
}

// queueGapLocked appends a gap event to the current batch. mu must be held.
func (b *Buffer) queueGapLocked(g telemetry.Gap) {
	seq := b.nextSeq
	b.nextSeq++
	now := b.opts.Now().UTC()
	b.cur.recs = append(b.cur.recs, pendingRec{seq: seq, class: Event, t: now, data: gapData(seq, now, g)})
	b.stats.GapEvents++
}

// gapData encodes a gap event as a telemetry record.
func gapData(seq uint64, now time.Time, g telemetry.Gap) []byte {
	r := telemetry.Record{Seq: seq, Kind: telemetry.KindGap, Time: now, Clock: "system", Gap: &g}
	data, err := json.Marshal(&r)
	if err != nil {
		// A Record of plain fields always encodes.
		panic(fmt.Sprintf("buffer: encode gap event: %v", err))
	}
	return data
}

// writeTx is the group commit: put the batch, delete acknowledged records,
// evict down to the low-water mark if over the cap, and write the state.
func (b *Buffer) writeTx(recs []pendingRec, acks map[uint64]struct{}, reserve uint64, closing bool) (txResult, error) {
	var res txResult
	err := b.db.Update(func(tx *bolt.Tx) error {
		rb := tx.Bucket(recordsBucket)
		// Keys arrive in order: fill pages completely instead of splitting
		// them in half.
		rb.FillPercent = 1.0
		res = txResult{st: b.v.st, live: b.v.live, depth: b.v.depth}
		for _, r := range recs {
			v := encodeEntry(Entry{Seq: r.seq, Class: r.class, Time: r.t, Data: r.data})
			if err := rb.Put(seqKey(r.seq), v); err != nil {
				return fmt.Errorf("buffer: put record %d: %w", r.seq, err)
			}
			res.live += footprint(len(v))
			res.depth++
			res.added++
			if !r.class.evictable() {
				res.urgentAdd = append(res.urgentAdd, r.seq)
			}
			res.st.Last = max(res.st.Last, r.seq)
		}
		if err := b.deleteAcked(rb, acks, &res); err != nil {
			return err
		}
		if res.live > b.liveLimit {
			if err := b.evict(rb, &res, b.lowWater); err != nil {
				return err
			}
		}
		return b.finishTx(tx, &res, reserve, closing)
	})
	return res, err
}

func (b *Buffer) deleteAcked(rb *bolt.Bucket, acks map[uint64]struct{}, res *txResult) error {
	for s := range acks {
		k := seqKey(s)
		v := rb.Get(k)
		if v == nil {
			continue
		}
		res.live -= footprint(len(v))
		res.depth--
		if !peekClass(v).evictable() {
			res.urgentDel = append(res.urgentDel, s)
		}
		if err := rb.Delete(k); err != nil {
			return fmt.Errorf("buffer: delete acknowledged record %d: %w", s, err)
		}
	}
	return nil
}

// finishTx moves the seq high-water file ahead if needed, writes the state
// and records the oldest remaining record. The high-water file is written
// before the transaction commits, so it is on flash before any seq this
// transaction makes durable, or any seq below the reservation, is used.
func (b *Buffer) finishTx(tx *bolt.Tx, res *txResult, reserve uint64, closing bool) error {
	b.mu.Lock()
	next := b.nextSeq // includes seqs taken by gap events in this transaction
	hw := b.hwReserved
	b.mu.Unlock()
	if closing {
		reserve = max(reserve, next)
	}
	if need := max(reserve, next) + eventMargin; need >= hw {
		hw = need + hwAhead
		if err := writeHighWater(b.hwPath, hw); err != nil {
			return err
		}
		b.mu.Lock()
		b.hwReserved = hw
		b.mu.Unlock()
	}
	if closing {
		// Nothing is handed out after Close: the unused rest of the
		// reservation goes back, so a clean restart leaves no hole.
		res.st.Reserved = reserve
	} else {
		res.st.Reserved = max(res.st.Reserved, reserve)
	}
	res.st.Clean = closing
	res.st.Batch = b.opts.Sync == SyncBatch
	if err := tx.Bucket(metaBucket).Put(stateKey, res.st.encode()); err != nil {
		return fmt.Errorf("buffer: write state: %w", err)
	}
	res.oldestSeq, res.oldestTime = 0, time.Time{}
	if k, v := tx.Bucket(recordsBucket).Cursor().First(); k != nil {
		res.oldestSeq = seqOf(k)
		if e, err := decodeEntry(k, v); err == nil {
			res.oldestTime = e.Time
		}
	}
	return nil
}

// retryFull handles a commit that ran out of room (the file budget or the
// disk): first a transaction that only deletes (acknowledged records and an
// extra eighth of the cap in routine records), which frees pages for the
// next transaction, then the original commit once more.
func (b *Buffer) retryFull(recs []pendingRec, acks map[uint64]struct{}, reserve uint64, closing bool) (txResult, error) {
	var freed txResult
	// Deleting needs a few pages of its own (copy-on-write), so this
	// transaction may exceed the budget slightly: otherwise a file full of
	// alerts could not even record acknowledgements.
	err := b.uncapped(func() error {
		return b.db.Update(func(tx *bolt.Tx) error {
			rb := tx.Bucket(recordsBucket)
			freed = txResult{st: b.v.st, live: b.v.live, depth: b.v.depth}
			if err := b.deleteAcked(rb, acks, &freed); err != nil {
				return err
			}
			target := min(b.lowWater, freed.live-b.liveLimit/8)
			if err := b.evict(rb, &freed, target); err != nil {
				return err
			}
			return b.finishTx(tx, &freed, reserve, false)
		})
	})
	if err != nil {
		return txResult{}, fmt.Errorf("buffer: commit %d records: %w (evicting to make room failed: %v)", len(recs), ErrFull, err)
	}
	b.mu.Lock()
	b.applyLocked(freed)
	b.mu.Unlock()
	res, err := b.writeTx(recs, nil, reserve, closing)
	if isFull(err) {
		return res, fmt.Errorf("buffer: commit %d records: %w (%v)", len(recs), ErrFull, err)
	}
	return res, err
}

// uncapped runs f with bbolt's MaxSize lifted. It must be called with
// commitMu held (only write transactions read MaxSize).
func (b *Buffer) uncapped(f func() error) error {
	saved := b.db.MaxSize
	b.db.MaxSize = 0
	defer func() { b.db.MaxSize = saved }()
	return f()
}

// evict removes routine records until res.live is at most target, by the
// policy in the package documentation, and writes one gap event per kind
// of removal.
func (b *Buffer) evict(rb *bolt.Bucket, res *txResult, target int64) error {
	// Routine records in the newest quarter of the cap keep full
	// resolution: thinning stops below boundary.
	boundary := uint64(0)
	var sum int64
	c := rb.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		if peekClass(v) != Routine {
			continue
		}
		boundary = seqOf(k)
		sum += footprint(len(v))
		if sum >= b.liveLimit/4 {
			break
		}
	}
	if sum < b.liveLimit/4 {
		boundary = 0 // every routine record is in the protected window
	}

	var thin, drop gapAcc
	for res.live > target {
		// The oldest region that can still be thinned: records that went
		// through `lvl` passes and not yet pass lvl+1.
		lvl := -1
		var hi uint64
		for l := maxThin - 1; l >= 0; l-- {
			h := uint64(0)
			if boundary > 0 {
				h = boundary - 1
			}
			if l > 0 {
				h = min(h, res.st.Thin[l-1].Upto)
			}
			if res.st.Thin[l].Upto < h {
				lvl, hi = l, h
				break
			}
		}
		if lvl < 0 {
			break
		}
		pass := &res.st.Thin[lvl]
		var del [][]byte
		exhausted := true
		for k, v := c.Seek(seqKey(pass.Upto + 1)); k != nil; k, v = c.Next() {
			s := seqOf(k)
			if s > hi {
				break
			}
			pass.Upto = s
			if peekClass(v) != Routine {
				continue
			}
			if pass.Drop {
				del = append(del, append([]byte{}, k...))
				res.live -= footprint(len(v))
				thin.add(s)
			}
			pass.Drop = !pass.Drop
			if res.live <= target {
				exhausted = false
				break
			}
		}
		if exhausted {
			pass.Upto = hi
		}
		if err := deleteKeys(rb, del); err != nil {
			return err
		}
		res.depth -= len(del)
	}
	if res.live > target {
		// Nothing left to thin: drop the oldest routine records.
		var del [][]byte
		for k, v := c.First(); k != nil && res.live > target; k, v = c.Next() {
			if peekClass(v) != Routine {
				continue
			}
			del = append(del, append([]byte{}, k...))
			res.live -= footprint(len(v))
			drop.add(seqOf(k))
		}
		if err := deleteKeys(rb, del); err != nil {
			return err
		}
		res.depth -= len(del)
	}
	res.thinned += thin.count
	res.dropped += drop.count
	if thin.count == 0 && drop.count == 0 {
		return nil
	}
	if err := b.foldGaps(rb, res, &thin, &drop); err != nil {
		return err
	}
	for _, g := range []struct {
		acc    gapAcc
		reason string
	}{{thin, GapThinned}, {drop, GapDropped}} {
		if g.acc.count == 0 {
			continue
		}
		if err := b.putGap(rb, res, telemetry.Gap{FirstSeq: g.acc.first, LastSeq: g.acc.last, Count: uint64(g.acc.count), Reason: g.reason}); err != nil {
			return err
		}
	}
	return nil
}

// foldGaps keeps eviction gap events from piling up: a long time offline
// against a small cap evicts again and again, and events are never
// evicted. Once mergeGapsAt undelivered thinned/dropped events exist, they
// are deleted and their ranges and counts folded into the events this
// eviction writes. Nothing is lost but resolution of the report: a
// consumer that already received a folded event sees an overlapping
// range again.
func (b *Buffer) foldGaps(rb *bolt.Bucket, res *txResult, thin, drop *gapAcc) error {
	type found struct {
		seq uint64
		fp  int64
		gap telemetry.Gap
	}
	var evs []found
	for s := range b.v.urgent {
		v := rb.Get(seqKey(s))
		if v == nil || peekClass(v) != Event {
			continue
		}
		e, err := decodeEntry(seqKey(s), v)
		if err != nil {
			continue
		}
		r, err := telemetry.UnmarshalRecord(e.Data)
		if err != nil || r.Kind != telemetry.KindGap || r.Gap == nil || (r.Gap.Reason != GapThinned && r.Gap.Reason != GapDropped) {
			continue
		}
		evs = append(evs, found{s, footprint(len(v)), *r.Gap})
	}
	if len(evs) < mergeGapsAt {
		return nil
	}
	for _, f := range evs {
		acc := thin
		if f.gap.Reason == GapDropped {
			acc = drop
		}
		acc.addRange(f.gap.FirstSeq, f.gap.LastSeq, int(f.gap.Count))
		if err := rb.Delete(seqKey(f.seq)); err != nil {
			return fmt.Errorf("buffer: fold gap event %d: %w", f.seq, err)
		}
		res.live -= f.fp
		res.depth--
		res.urgentDel = append(res.urgentDel, f.seq)
	}
	return nil
}

// putGap writes a gap event inside a write transaction.
func (b *Buffer) putGap(rb *bolt.Bucket, res *txResult, g telemetry.Gap) error {
	b.mu.Lock()
	seq := b.nextSeq
	b.nextSeq++
	b.mu.Unlock()
	now := b.opts.Now().UTC()
	v := encodeEntry(Entry{Seq: seq, Class: Event, Time: now, Data: gapData(seq, now, g)})
	if err := rb.Put(seqKey(seq), v); err != nil {
		return fmt.Errorf("buffer: put gap event: %w", err)
	}
	res.live += footprint(len(v))
	res.depth++
	res.added++
	res.gapEvents++
	res.urgentAdd = append(res.urgentAdd, seq)
	res.st.Last = max(res.st.Last, seq)
	return nil
}

type gapAcc struct {
	first, last uint64
	count       int
}

func (g *gapAcc) add(s uint64) { g.addRange(s, s, 1) }

func (g *gapAcc) addRange(first, last uint64, n int) {
	if g.count == 0 || first < g.first {
		g.first = first
	}
	g.last = max(g.last, last)
	g.count += n
}

func deleteKeys(rb *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := rb.Delete(k); err != nil {
			return fmt.Errorf("buffer: evict record %d: %w", seqOf(k), err)
		}
	}
	return nil
}
