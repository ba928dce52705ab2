package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"
)

// Class says how a record may be treated when the buffer is full.
type Class uint8

// Record classes. The zero value is not a valid class.
const (
	// Routine is a periodic reading. Routine records are the only ones the
	// byte cap may evict: thinned first, dropped last.
	Routine Class = 1
	// Alert is a reading outside a threshold (temperature or pressure
	// excursion). Alerts are never evicted.
	Alert Class = 2
	// Event is a gap, seal or fault report. Events are never evicted.
	Event Class = 3
)

// String returns the lowercase name of the class.
func (c Class) String() string {
	switch c {
	case Routine:
		return "routine"
	case Alert:
		return "alert"
	case Event:
		return "event"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Valid reports whether c is Routine, Alert or Event.
func (c Class) Valid() bool { return c >= Routine && c <= Event }

// evictable reports whether the byte cap may remove records of this class.
func (c Class) evictable() bool { return c == Routine }

// Entry is one stored record.
type Entry struct {
	// Seq is the sequence number assigned by [Buffer.Append].
	Seq uint64
	// Class is the record's class.
	Class Class
	// Time is the capture time given to Append (UTC; zero if none was given).
	Time time.Time
	// Data is the record's payload, owned by the caller.
	Data []byte
}

// On-disk record layout (the value stored under the 8-byte big-endian seq
// key):
//
//	[0]      format version (recordVersion)
//	[1]      class
//	[2:10]   capture time, Unix nanoseconds, big-endian (math.MinInt64 = zero time)
//	[10:14]  CRC-32C (Castagnoli) of key || value[0:10] || data
//	[14:]    data
//
// The CRC covers the key so a value that ends up under the wrong key (a
// garbled branch page, a torn write) is detected rather than delivered.
const (
	recordVersion   = 1
	recordHeaderLen = 14
	keyLen          = 8
	// leafOverhead is bbolt's per-element header on a leaf page.
	leafOverhead  = 16
	zeroTimeNanos = math.MinInt64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is wrapped by decodeEntry for every kind of damage.
var errBadRecord = errors.New("bad record")

func seqKey(seq uint64) []byte {
	var k [keyLen]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// footprint is the accounting size of a record: key, value and bbolt's
// leaf element header. Live bytes and the byte cap are sums of footprints.
func footprint(valueLen int) int64 { return int64(keyLen + valueLen + leafOverhead) }

// encodeEntry returns the stored value for e (e.Seq is the key).
func encodeEntry(e Entry) []byte {
	v := make([]byte, recordHeaderLen+len(e.Data))
	v[0] = recordVersion
	v[1] = byte(e.Class)
	ns := int64(zeroTimeNanos)
	if !e.Time.IsZero() {
		ns = e.Time.UnixNano()
	}
	binary.BigEndian.PutUint64(v[2:10], uint64(ns))
	copy(v[recordHeaderLen:], e.Data)
	binary.BigEndian.PutUint32(v[10:14], recordCRC(seqKey(e.Seq), v))
	return v
}

func recordCRC(key, v []byte) uint32 {
	h := crc32.Update(0, castagnoli, key)
	h = crc32.Update(h, castagnoli, v[:10])
	return crc32.Update(h, castagnoli, v[recordHeaderLen:])
}

// decodeEntry checks and decodes a stored record. The returned Data is a
// copy, so key and v may point into bbolt's memory map.
func decodeEntry(key, v []byte) (Entry, error) {
	if len(key) != keyLen {
		return Entry{}, fmt.Errorf("buffer: key of %d bytes, want %d: %w", len(key), keyLen, errBadRecord)
	}
	seq := binary.BigEndian.Uint64(key)
	if seq == 0 {
		return Entry{}, fmt.Errorf("buffer: record with seq 0: %w", errBadRecord)
	}
	if len(v) < recordHeaderLen {
		return Entry{}, fmt.Errorf("buffer: record %d: %d bytes, shorter than the %d-byte header: %w", seq, len(v), recordHeaderLen, errBadRecord)
	}
	if v[0] != recordVersion {
		return Entry{}, fmt.Errorf("buffer: record %d: format version %d, want %d: %w", seq, v[0], recordVersion, errBadRecord)
	}
	c := Class(v[1])
	if !c.Valid() {
		return Entry{}, fmt.Errorf("buffer: record %d: unknown class %d: %w", seq, v[1], errBadRecord)
	}
	if got, want := binary.BigEndian.Uint32(v[10:14]), recordCRC(key, v); got != want {
		return Entry{}, fmt.Errorf("buffer: record %d: checksum %08x, want %08x: %w", seq, got, want, errBadRecord)
	}
	e := Entry{Seq: seq, Class: c, Data: append([]byte{}, v[recordHeaderLen:]...)}
	if ns := int64(binary.BigEndian.Uint64(v[2:10])); ns != zeroTimeNanos {
		e.Time = time.Unix(0, ns).UTC()
	}
	return e, nil
}

// peekClass returns the class byte of a stored value without checking it;
// eviction uses it to skip records it may not remove. A value too short to
// hold a class reads as class 0, which is never evicted by thinning but is
// removed by the open-time scan.
func peekClass(v []byte) Class {
	if len(v) < 2 {
		return 0
	}
	return Class(v[1])
}
