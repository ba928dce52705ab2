package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// maxThin is how many thinning passes a routine record can go through: a
// region thinned maxThin times keeps one routine record in 2^maxThin.
const maxThin = 3

// thinLevel is the progress of one thinning pass over the oldest records.
type thinLevel struct {
	// Upto is the highest seq this pass has reached: every routine record
	// at or below it has been through the pass (or was removed by it).
	Upto uint64
	// Drop says whether the next routine record the pass meets is removed
	// (passes alternate keep, drop, keep, ...).
	Drop bool
}

// state is the buffer's bookkeeping, stored under metaBucket/stateKey in the
// same transactions as the records it describes.
type state struct {
	// Clean is set by Close's final commit and cleared by Open.
	Clean bool
	// Batch records the previous session's sync policy (true: "batch").
	Batch bool
	// Reserved is the seq reservation: no seq at or above it has been handed
	// out by the session that wrote it.
	Reserved uint64
	// Last is the highest seq ever committed to this file.
	Last uint64
	// Thin holds the progress of thinning passes 1..maxThin (index 0 is
	// pass 1).
	Thin [maxThin]thinLevel
}

const (
	stateVersion = 1
	stateLen     = 1 + 1 + 8 + 8 + maxThin*9 + 4
)

var (
	recordsBucket = []byte("records")
	metaBucket    = []byte("meta")
	stateKey      = []byte("state")
)

func (s state) encode() []byte {
	b := make([]byte, stateLen)
	b[0] = stateVersion
	if s.Clean {
		b[1] |= 1
	}
	if s.Batch {
		b[1] |= 2
	}
	binary.BigEndian.PutUint64(b[2:], s.Reserved)
	binary.BigEndian.PutUint64(b[10:], s.Last)
	o := 18
	for _, l := range s.Thin {
		binary.BigEndian.PutUint64(b[o:], l.Upto)
		if l.Drop {
			b[o+8] = 1
		}
		o += 9
	}
	binary.BigEndian.PutUint32(b[o:], crc32.Checksum(b[:o], castagnoli))
	return b
}

func decodeState(b []byte) (state, error) {
	var s state
	if len(b) != stateLen {
		return s, fmt.Errorf("buffer: state record of %d bytes, want %d", len(b), stateLen)
	}
	o := stateLen - 4
	if got, want := binary.BigEndian.Uint32(b[o:]), crc32.Checksum(b[:o], castagnoli); got != want {
		return s, fmt.Errorf("buffer: state record checksum %08x, want %08x", got, want)
	}
	if b[0] != stateVersion {
		return s, fmt.Errorf("buffer: state record version %d, want %d", b[0], stateVersion)
	}
	s.Clean = b[1]&1 != 0
	s.Batch = b[1]&2 != 0
	s.Reserved = binary.BigEndian.Uint64(b[2:])
	s.Last = binary.BigEndian.Uint64(b[10:])
	o = 18
	for i := range s.Thin {
		s.Thin[i] = thinLevel{Upto: binary.BigEndian.Uint64(b[o:]), Drop: b[o+8] == 1}
		o += 9
	}
	return s, nil
}

// The seq high-water file (<path>.seq) holds a floor for the next sequence
// number that survives the loss of the buffer file itself. It is written
// ahead of use, atomically (temporary file, fsync, rename, fsync of the
// directory), and only every hwAhead sequence numbers.
const (
	hwMagic = "TBSQ"
	hwLen   = 4 + 1 + 8 + 4
)

var errNoHighWater = errors.New("no high-water file")

func readHighWater(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, errNoHighWater
	}
	if err != nil {
		return 0, fmt.Errorf("buffer: read seq high-water file: %w", err)
	}
	if len(b) != hwLen || string(b[:4]) != hwMagic || b[4] != 1 {
		return 0, fmt.Errorf("buffer: seq high-water file %s is damaged (%d bytes)", path, len(b))
	}
	if got, want := binary.BigEndian.Uint32(b[13:]), crc32.Checksum(b[:13], castagnoli); got != want {
		return 0, fmt.Errorf("buffer: seq high-water file %s: checksum %08x, want %08x", path, got, want)
	}
	return binary.BigEndian.Uint64(b[5:13]), nil
}

func writeHighWater(path string, v uint64) error {
	b := make([]byte, hwLen)
	copy(b, hwMagic)
	b[4] = 1
	binary.BigEndian.PutUint64(b[5:], v)
	binary.BigEndian.PutUint32(b[13:], crc32.Checksum(b[:13], castagnoli))
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("buffer: write seq high-water file: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data so that after a crash the file
// holds either the old or the new content.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
