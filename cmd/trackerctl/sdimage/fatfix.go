package sdimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// errFATTooSmall reports a FAT with fewer entries than the data area has
// clusters (plus the two reserved entries).
var errFATTooSmall = errors.New("FAT too small")

// geometry is the layout of a FAT32 file system, read from its boot sector
// (Microsoft's FAT specification, "BPB structure" and "FAT32 extended BPB").
type geometry struct {
	start       int64 // byte offset of the partition in the image
	sectorSize  int64
	clusterSize int64
	reserved    int64 // reserved sectors before the first FAT
	fats        int64
	fatSectors  int64 // sectors per FAT
	rootCluster uint32
	fsInfo      int64  // sector of the FSInfo structure
	clusters    uint32 // number of data clusters (numbered from 2)
	activeFAT   int    // -1 when every FAT copy is kept in step
}

// readGeometry parses the boot sector of the partition at start (size
// bytes) and returns an error if it is not a FAT32 file system.
func readGeometry(r io.ReaderAt, start, size int64) (*geometry, error) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, start); err != nil {
		return nil, fmt.Errorf("read boot sector: %w", err)
	}
	le16 := func(off int) int64 { return int64(binary.LittleEndian.Uint16(bs[off:])) }
	le32 := func(off int) int64 { return int64(binary.LittleEndian.Uint32(bs[off:])) }
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return nil, fmt.Errorf("no FAT boot sector (signature 0x55aa missing)")
	}
	g := &geometry{
		start:       start,
		sectorSize:  le16(11),
		reserved:    le16(14),
		fats:        int64(bs[16]),
		fatSectors:  le32(36),
		rootCluster: uint32(le32(44)),
		fsInfo:      le16(48),
		activeFAT:   -1,
	}
	spc := int64(bs[13])
	switch g.sectorSize {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("no FAT boot sector (%d bytes per sector)", g.sectorSize)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, fmt.Errorf("no FAT boot sector (%d sectors per cluster)", spc)
	}
	g.clusterSize = spc * g.sectorSize
	if le16(17) != 0 || le16(22) != 0 || g.fatSectors == 0 {
		// FAT12 and FAT16 have a fixed root directory and a 16-bit FAT size.
		return nil, fmt.Errorf("FAT12 or FAT16, not FAT32 (reformat it with mkfs.vfat -F 32)")
	}
	if g.fats < 1 || g.fats > 2 || g.reserved < 1 {
		return nil, fmt.Errorf("not a usable FAT32 boot sector (%d FATs, %d reserved sectors)", g.fats, g.reserved)
	}
	total := le16(19)
	if total == 0 {
		total = le32(32)
	}
	if total*g.sectorSize > size {
		return nil, fmt.Errorf("file system (%d bytes) is larger than its partition (%d bytes)", total*g.sectorSize, size)
	}
	data := total - g.reserved - g.fats*g.fatSectors
	if data <= 0 {
		return nil, fmt.Errorf("not a usable FAT32 boot sector (no data area)")
	}
	g.clusters = uint32(data / spc)
	if int64(g.clusters)+2 > g.fatSectors*g.sectorSize/4 {
		return nil, fmt.Errorf("not a usable FAT32 boot sector (%w: %d entries for %d clusters)", errFATTooSmall, g.fatSectors*g.sectorSize/4, g.clusters+2)
	}
	if g.rootCluster < 2 || g.rootCluster >= g.clusters+2 {
		return nil, fmt.Errorf("not a usable FAT32 boot sector (root directory at cluster %d)", g.rootCluster)
	}
	if flags := le16(40); flags&0x80 != 0 {
		g.activeFAT = int(flags & 0x0f)
	}
	return g, nil
}

func (g *geometry) fatOffset(i int64) int64 {
	return g.start + (g.reserved+i*g.fatSectors)*g.sectorSize
}

func (g *geometry) clusterOffset(c uint32) int64 {
	return g.start + (g.reserved+g.fats*g.fatSectors)*g.sectorSize + int64(c-2)*g.clusterSize
}

var (
	dotName    = []byte(".          ")
	dotDotName = []byte("..         ")
)

// repair frees the given cluster chains, points the ".." entry of the given
// folders (each directly under the root) at cluster 0 as the FAT
// specification requires, and rewrites the FSInfo free count and hint. It
// writes through f and syncs it.
func repair(f *os.File, g *geometry, free [][]uint32, rootSubdirs []uint32) error {
	fat := make([]byte, g.fatSectors*g.sectorSize)
	if _, err := f.ReadAt(fat, g.fatOffset(int64(max(g.activeFAT, 0)))); err != nil {
		return fmt.Errorf("read FAT: %w", err)
	}
	for _, chain := range free {
		for _, c := range chain {
			if c < 2 || c >= g.clusters+2 {
				return fmt.Errorf("free cluster %d: outside 2..%d", c, g.clusters+1)
			}
			e := binary.LittleEndian.Uint32(fat[4*c:])
			binary.LittleEndian.PutUint32(fat[4*c:], e&0xf0000000) // the top 4 bits are reserved
		}
	}
	for _, c := range rootSubdirs {
		if c < 2 || c >= g.clusters+2 {
			return fmt.Errorf("folder at cluster %d: outside 2..%d", c, g.clusters+1)
		}
		ents := make([]byte, 64)
		off := g.clusterOffset(c)
		if _, err := f.ReadAt(ents, off); err != nil {
			return fmt.Errorf("read folder: %w", err)
		}
		if !bytes.Equal(ents[0:11], dotName) || !bytes.Equal(ents[32:43], dotDotName) {
			return fmt.Errorf("folder at cluster %d does not start with . and .. entries", c)
		}
		if parent := uint32(binary.LittleEndian.Uint16(ents[52:]))<<16 | uint32(binary.LittleEndian.Uint16(ents[58:])); parent == g.rootCluster {
			binary.LittleEndian.PutUint16(ents[52:], 0) // high word of the cluster
			binary.LittleEndian.PutUint16(ents[58:], 0) // low word
			if _, err := f.WriteAt(ents[32:64], off+32); err != nil {
				return fmt.Errorf("write folder: %w", err)
			}
		}
	}

	var nfree uint32
	next := uint32(0xffffffff)
	for c := uint32(2); c < g.clusters+2; c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&0x0fffffff == 0 {
			nfree++
			if next == 0xffffffff {
				next = c
			}
		}
	}
	for i := int64(0); i < g.fats; i++ {
		if g.activeFAT >= 0 && i != int64(g.activeFAT) {
			continue
		}
		if _, err := f.WriteAt(fat, g.fatOffset(i)); err != nil {
			return fmt.Errorf("write FAT %d: %w", i, err)
		}
	}

	if g.fsInfo > 0 && g.fsInfo < g.reserved {
		info := make([]byte, 512)
		off := g.start + g.fsInfo*g.sectorSize
		if _, err := f.ReadAt(info, off); err != nil {
			return fmt.Errorf("read FSInfo: %w", err)
		}
		if binary.LittleEndian.Uint32(info[0:]) == 0x41615252 && binary.LittleEndian.Uint32(info[484:]) == 0x61417272 {
			binary.LittleEndian.PutUint32(info[488:], nfree)
			binary.LittleEndian.PutUint32(info[492:], next)
			if _, err := f.WriteAt(info, off); err != nil {
				return fmt.Errorf("write FSInfo: %w", err)
			}
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}
