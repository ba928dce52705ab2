package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
)

// This file checks a bbolt file with plain reads before bbolt maps it.
//
// bbolt trusts its file: with NoFreelistSync it walks every page reachable
// from the newest valid meta page during Open, in a goroutine of its own, and
// a garbled page id or element offset there is an access outside the memory
// map or a panic that no recover() in this package can catch. So the file is
// first walked here, with every page id, page type, element offset and key
// order checked against the file's size, exactly along the paths bbolt will
// follow. Only a file that passes is handed to bbolt.
//
// The same walk, run tolerantly over a damaged file, salvages the records
// whose checksums still verify.
//
// Layout (bbolt format version 2, native byte order; all supported boards
// are little-endian):
//
//	page header (16 bytes): id u64, flags u16, count u16, overflow u32
//	meta (64 bytes after the header): magic u32, version u32, pageSize u32,
//	  flags u32, root bucket {root pgid u64, sequence u64}, freelist pgid u64,
//	  high-water pgid u64, txid u64, FNV-64a checksum of the preceding 56 bytes
//	branch element (16 bytes): pos u32, ksize u32, pgid u64
//	leaf element (16 bytes): flags u32, pos u32, ksize u32, vsize u32
//	  (pos is relative to the element; flags bit 0 marks a sub-bucket whose
//	  value is {root pgid u64, sequence u64} followed, when root is 0, by an
//	  inline leaf page)

const (
	boltMagic         = 0xED0CDAED
	boltVersion       = 2
	pageHeaderLen     = 16
	elemLen           = 16
	metaLen           = 64
	branchFlag        = 0x01
	leafFlag          = 0x02
	metaFlag          = 0x04
	freelistFlag      = 0x10
	bucketLeafFlag    = 0x01
	noFreelist        = ^uint64(0)
	maxWalkDepth      = 64
	maxReportedFaults = 20
)

var ne = binary.NativeEndian

// errDamaged marks every finding of the walker.
var errDamaged = errors.New("damaged buffer file")

type boltMeta struct {
	magic, version, pageSize uint32
	root, freelist, pgid     uint64
	txid, checksum           uint64
	err                      error
}

// parseMeta reads the meta page whose header starts at p[0].
func parseMeta(p []byte) boltMeta {
	if len(p) < pageHeaderLen+metaLen {
		return boltMeta{err: fmt.Errorf("meta page truncated")}
	}
	m := p[pageHeaderLen : pageHeaderLen+metaLen]
	bm := boltMeta{
		magic:    ne.Uint32(m[0:]),
		version:  ne.Uint32(m[4:]),
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
		checksum: ne.Uint64(m[56:]),
	}
	h := fnv.New64a()
	h.Write(m[:56])
	switch {
	case bm.magic != boltMagic:
		bm.err = fmt.Errorf("bad magic %#x", bm.magic)
	case bm.version != boltVersion:
		bm.err = fmt.Errorf("format version %d, want %d", bm.version, boltVersion)
	case bm.checksum != h.Sum64():
		bm.err = fmt.Errorf("meta checksum mismatch")
	}
	return bm
}

// walker walks a bbolt file's B+tree with bounds-checked reads.
type walker struct {
	r      io.ReaderAt
	size   int64
	ps     int
	hwm    uint64
	seen   map[uint64]bool
	errs   []error
	faults int
	// visit, if set, is called for every key/value in a top-level bucket.
	visit func(bucket, k, v []byte)
}

func (w *walker) fail(format string, args ...any) {
	w.faults++
	if len(w.errs) < maxReportedFaults {
		w.errs = append(w.errs, fmt.Errorf(format, args...))
	}
}

// err returns nil if the walk found nothing wrong.
func (w *walker) err() error {
	if w.faults == 0 {
		return nil
	}
	err := errors.Join(w.errs...)
	if w.faults > len(w.errs) {
		err = fmt.Errorf("%w\n(and %d more)", err, w.faults-len(w.errs))
	}
	return fmt.Errorf("%w: %w", errDamaged, err)
}

// chooseMeta finds the page size and the meta page bbolt would use,
// following bbolt's own order: page size from the first valid meta page,
// then the meta with the higher txid if it is valid, else the other one.
func chooseMeta(r io.ReaderAt, size int64) (boltMeta, boltMeta, int, error) {
	buf := make([]byte, 0x1000)
	ps := 0
	if n, _ := r.ReadAt(buf, 0); n == len(buf) {
		if m := parseMeta(buf); m.err == nil {
			ps = int(m.pageSize)
		}
	}
	if ps == 0 {
		for i := 0; i <= 14; i++ {
			pos := int64(1024) << i
			if pos >= size-1024 {
				break
			}
			n, _ := r.ReadAt(buf, pos)
			if m := parseMeta(buf[:n]); m.err == nil {
				ps = int(m.pageSize)
				break
			}
		}
	}
	if ps == 0 {
		return boltMeta{}, boltMeta{}, 0, fmt.Errorf("%w: no valid meta page", errDamaged)
	}
	if ps < 1024 || ps > 1<<16 || ps&(ps-1) != 0 {
		return boltMeta{}, boltMeta{}, 0, fmt.Errorf("%w: page size %d", errDamaged, ps)
	}
	if size < int64(2*ps) {
		return boltMeta{}, boltMeta{}, 0, fmt.Errorf("%w: %d bytes, shorter than two %d-byte meta pages", errDamaged, size, ps)
	}
	read := func(off int64) boltMeta {
		p := make([]byte, pageHeaderLen+metaLen)
		if _, err := r.ReadAt(p, off); err != nil {
			return boltMeta{err: fmt.Errorf("read meta: %w", err)}
		}
		return parseMeta(p)
	}
	m0, m1 := read(0), read(int64(ps))
	a, b := m0, m1
	if m1.txid > m0.txid {
		a, b = m1, m0
	}
	if a.err == nil {
		return a, b, ps, nil
	}
	if b.err == nil {
		return b, a, ps, nil
	}
	return boltMeta{}, boltMeta{}, 0, fmt.Errorf("%w: both meta pages invalid: %v; %v", errDamaged, m0.err, m1.err)
}

// checkFile walks the whole file as bbolt will see it. It returns nil only
// if bbolt can open and read the file without touching anything outside it.
func checkFile(r io.ReaderAt, size int64, visit func(bucket, k, v []byte)) error {
	m, _, ps, err := chooseMeta(r, size)
	if err != nil {
		return err
	}
	w := &walker{r: r, size: size, ps: ps, seen: map[uint64]bool{}, visit: visit}
	w.walkMeta(m)
	return w.err()
}

func (w *walker) walkMeta(m boltMeta) {
	w.hwm = m.pgid
	switch {
	case m.pgid < 3 || m.pgid > uint64(w.size)/uint64(w.ps):
		w.fail("high-water page %d outside the file's %d pages", m.pgid, w.size/int64(w.ps))
		return
	case m.root < 2 || m.root >= m.pgid:
		w.fail("root page %d outside [2, %d)", m.root, m.pgid)
		return
	case m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		w.fail("freelist page %d outside [2, %d)", m.freelist, m.pgid)
		return
	}
	w.seen[0], w.seen[1] = true, true
	w.walkTree(m.root, nil, nil, nil, 0)
	if m.freelist != noFreelist {
		w.walkFreelist(m.freelist)
	}
}

// readPage reads page id and its overflow pages, marking them reachable.
func (w *walker) readPage(id uint64) []byte {
	if id < 2 || id >= w.hwm {
		w.fail("page %d outside [2, %d)", id, w.hwm)
		return nil
	}
	p := make([]byte, w.ps)
	if _, err := w.r.ReadAt(p, int64(id)*int64(w.ps)); err != nil {
		w.fail("read page %d: %v", id, err)
		return nil
	}
	if got := ne.Uint64(p); got != id {
		w.fail("page %d says it is page %d", id, got)
		return nil
	}
	overflow := uint64(ne.Uint32(p[12:]))
	if id+overflow >= w.hwm {
		w.fail("page %d: %d overflow pages run past the high-water page %d", id, overflow, w.hwm)
		return nil
	}
	for i := uint64(0); i <= overflow; i++ {
		if w.seen[id+i] {
			w.fail("page %d referenced twice", id+i)
			return nil
		}
	}
	for i := uint64(0); i <= overflow; i++ {
		w.seen[id+i] = true
	}
	if overflow > 0 {
		full := make([]byte, (overflow+1)*uint64(w.ps))
		if _, err := w.r.ReadAt(full, int64(id)*int64(w.ps)); err != nil {
			w.fail("read page %d with %d overflow pages: %v", id, overflow, err)
			return nil
		}
		p = full
	}
	return p
}

// elem returns the key (and for leaves the value) of element i of page p,
// or ok=false if any part lies outside p.
func elem(p []byte, i int, leaf bool) (flags uint32, key, val []byte, child uint64, ok bool) {
	off := uint64(pageHeaderLen + i*elemLen)
	if off+elemLen > uint64(len(p)) {
		return 0, nil, nil, 0, false
	}
	e := p[off : off+elemLen]
	if leaf {
		flags = ne.Uint32(e[0:])
		pos, ks, vs := uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		start := off + pos
		if start+ks+vs > uint64(len(p)) {
			return 0, nil, nil, 0, false
		}
		return flags, p[start : start+ks], p[start+ks : start+ks+vs], 0, true
	}
	pos, ks := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
	start := off + pos
	if start+ks > uint64(len(p)) {
		return 0, nil, nil, 0, false
	}
	return 0, p[start : start+ks], nil, ne.Uint64(e[8:]), true
}

// checkOrder mirrors bbolt's key-order check (tx_check.go verifyKeyOrder).
func (w *walker) checkOrder(where string, i int, key, prev, maxOpen []byte) bool {
	if i == 0 && prev != nil && bytes.Compare(prev, key) > 0 {
		w.fail("%s: first key below its parent's", where)
		return false
	}
	if i > 0 && bytes.Compare(prev, key) >= 0 {
		w.fail("%s: key %d out of order", where, i)
		return false
	}
	if maxOpen != nil && bytes.Compare(key, maxOpen) >= 0 {
		w.fail("%s: key %d above its parent's bound", where, i)
		return false
	}
	return true
}

// walkTree walks the subtree at page id whose keys must lie in
// [lo, hi); bucket is the top-level bucket it belongs to (nil for the root
// bucket). It returns the subtree's largest key.
func (w *walker) walkTree(id uint64, lo, hi, bucket []byte, depth int) []byte {
	if depth > maxWalkDepth {
		w.fail("page %d: tree deeper than %d", id, maxWalkDepth)
		return nil
	}
	p := w.readPage(id)
	if p == nil {
		return nil
	}
	flags, count := ne.Uint16(p[8:]), int(ne.Uint16(p[10:]))
	where := fmt.Sprintf("page %d", id)
	switch flags {
	case branchFlag:
		if count == 0 {
			w.fail("%s: empty branch page", where)
			return nil
		}
		type child struct {
			key []byte
			id  uint64
		}
		kids := make([]child, 0, count)
		for i := range count {
			_, k, _, c, ok := elem(p, i, false)
			if !ok {
				w.fail("%s: branch element %d outside the page", where, i)
				return nil
			}
			kids = append(kids, child{k, c})
		}
		running := lo
		var maxKey []byte
		for i, c := range kids {
			if !w.checkOrder(where, i, c.key, running, hi) {
				return maxKey
			}
			next := hi
			if i+1 < len(kids) {
				next = kids[i+1].key
			}
			maxKey = w.walkTree(c.id, c.key, next, bucket, depth+1)
			running = maxKey
		}
		return maxKey
	case leafFlag:
		return w.walkLeaf(where, p, lo, hi, bucket, depth)
	}
	w.fail("%s: page type %#x is neither branch nor leaf", where, flags)
	return nil
}

// walkLeaf checks the elements of leaf page p (a real page or an inline
// bucket page) and descends into sub-buckets.
func (w *walker) walkLeaf(where string, p, lo, hi, bucket []byte, depth int) []byte {
	count := int(ne.Uint16(p[10:]))
	prev := lo
	var maxKey []byte
	for i := range count {
		flags, k, v, _, ok := elem(p, i, true)
		if !ok {
			w.fail("%s: leaf element %d outside the page", where, i)
			return maxKey
		}
		if !w.checkOrder(where, i, k, prev, hi) {
			return maxKey
		}
		prev, maxKey = k, k
		switch flags {
		case 0:
			if bucket != nil && w.visit != nil {
				w.visit(bucket, k, v)
			}
		case bucketLeafFlag:
			w.walkBucket(where, k, v, bucket, depth)
		default:
			w.fail("%s: leaf element %d has flags %#x", where, i, flags)
		}
	}
	return maxKey
}

// walkBucket walks the sub-bucket named name whose header is v.
func (w *walker) walkBucket(where string, name, v, parent []byte, depth int) {
	if len(v) < 16 {
		w.fail("%s: bucket %q header of %d bytes", where, name, len(v))
		return
	}
	top := parent
	if top == nil {
		top = name
	}
	root := ne.Uint64(v)
	if root != 0 {
		w.walkTree(root, nil, nil, top, depth+1)
		return
	}
	inline := v[16:]
	if len(inline) < pageHeaderLen {
		w.fail("%s: inline bucket %q truncated", where, name)
		return
	}
	if f := ne.Uint16(inline[8:]); f != leafFlag {
		w.fail("%s: inline bucket %q page type %#x", where, name, f)
		return
	}
	w.walkLeaf(fmt.Sprintf("%s inline bucket %q", where, name), inline, nil, nil, top, depth+1)
}

// walkFreelist checks a synced freelist page (files written by this
// package have none, but a valid meta may still point at one).
func (w *walker) walkFreelist(id uint64) {
	p := w.readPage(id)
	if p == nil {
		return
	}
	if f := ne.Uint16(p[8:]); f != freelistFlag {
		w.fail("freelist page %d has type %#x", id, f)
		return
	}
	idx, count := uint64(0), uint64(ne.Uint16(p[10:]))
	if count == 0xFFFF {
		if len(p) < pageHeaderLen+8 {
			w.fail("freelist page %d truncated", id)
			return
		}
		idx, count = 1, ne.Uint64(p[pageHeaderLen:])
	}
	if count > uint64(len(p))/8 || pageHeaderLen+(idx+count)*8 > uint64(len(p)) {
		w.fail("freelist page %d: %d ids do not fit", id, count)
		return
	}
	for i := idx; i < idx+count; i++ {
		fid := ne.Uint64(p[pageHeaderLen+i*8:])
		if fid < 2 || fid >= w.hwm {
			w.fail("freelist page %d: free page %d outside [2, %d)", id, fid, w.hwm)
			return
		}
		if w.seen[fid] {
			w.fail("freelist page %d: page %d is both free and in use", id, fid)
			return
		}
	}
}

// salvage walks every tree it can find in a damaged file (from both meta
// pages, valid or not) and calls visit for each key/value it can reach.
// Callers must verify what they get; the walk only guarantees bounds.
func salvage(r io.ReaderAt, size int64, visit func(bucket, k, v []byte)) {
	for _, ps := range salvagePageSizes(r, size) {
		for _, off := range []int64{0, int64(ps)} {
			p := make([]byte, pageHeaderLen+metaLen)
			if _, err := r.ReadAt(p, off); err != nil {
				continue
			}
			m := parseMeta(p)
			if m.magic != boltMagic {
				continue
			}
			// Trust the high-water mark only as far as the file reaches.
			if limit := uint64(size) / uint64(ps); m.pgid > limit || m.pgid < 3 {
				m.pgid = limit
			}
			w := &walker{r: r, size: size, ps: ps, seen: map[uint64]bool{}, visit: visit}
			w.hwm = m.pgid
			if m.root >= 2 && m.root < m.pgid {
				w.walkTree(m.root, nil, nil, nil, 0)
			}
		}
	}
}

// salvagePageSizes returns the page size recorded in the file, or the
// usual candidates if no meta page names one.
func salvagePageSizes(r io.ReaderAt, size int64) []int {
	if _, _, ps, err := chooseMeta(r, size); err == nil {
		return []int{ps}
	}
	return []int{4096, 16384, 65536}
}
