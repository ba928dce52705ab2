package sdimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/coldchain/tracker/agent/bootstrap"
)

// Sentinel errors for the outcomes callers branch on; returned errors wrap
// them with the image and what was found.
var (
	// ErrNotImage means the file is not a whole-disk image with an MBR
	// partition table (a compressed image, a single partition, a GPT disk).
	ErrNotImage = errors.New("sdimage: not an MBR disk image")
	// ErrNoFAT32 means the image has no usable FAT32 partition.
	ErrNoFAT32 = errors.New("sdimage: no FAT32 boot partition")
	// ErrStamped means the image already carries a bundle and Force was
	// not set.
	ErrStamped = errors.New("sdimage: image already stamped")
	// ErrNotStamped means the image carries no bundle.
	ErrNotStamped = errors.New("sdimage: image not stamped")
	// ErrDeviceDir means the device bundle directory cannot be stamped as
	// it is.
	ErrDeviceDir = errors.New("sdimage: unusable device directory")
)

// folder is the bundle's folder on the boot partition, as go-diskfs paths
// name it (io/fs style, relative to the root); shown is how messages name it.
const (
	folder = bootstrap.BundleDir
	shown  = "/" + bootstrap.BundleDir
)

// volume is the boot partition of an open image.
type volume struct {
	path  string
	disk  *disk.Disk
	fs    *fat32.FileSystem
	geom  *geometry
	index int // MBR partition number
}

// compressed lists the magic numbers of the formats SD images ship in.
var compressed = []struct {
	magic []byte
	name  string
	undo  string
}{
	{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "xz", "xz -dk"},
	{[]byte{0x1f, 0x8b}, "gzip", "gunzip -k"},
	{[]byte{'P', 'K', 3, 4}, "zip", "unzip"},
	{[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd", "zstd -d"},
}

// openVolume opens the first FAT32 partition of the MBR image at path.
func openVolume(path string, write bool) (*volume, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sdimage: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file; stamp the image file, then write it to the card", ErrNotImage, path)
	}
	if err := sniff(path); err != nil {
		return nil, err
	}
	mode := diskfs.ReadOnly
	if write {
		mode = diskfs.ReadWrite
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(mode), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return nil, fmt.Errorf("sdimage: open %s: %w", path, err)
	}
	v := &volume{path: path, disk: d}
	ok := false
	defer func() {
		if !ok {
			v.close()
		}
	}()
	table, err := d.GetPartitionTable()
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no partition table (%v); use a whole-disk image such as Raspberry Pi OS's .img, not a single partition", ErrNotImage, path, err)
	}
	mt, isMBR := table.(*mbr.Table)
	if !isMBR {
		return nil, fmt.Errorf("%w: %s has a %s partition table; only MBR images (Raspberry Pi OS style) are supported", ErrNotImage, path, strings.ToUpper(table.Type()))
	}
	var part *mbr.Partition
	var seen []string
	for _, p := range mt.Partitions {
		if p.Type == mbr.Empty {
			continue
		}
		seen = append(seen, fmt.Sprintf("%d (type 0x%02x)", p.Index, byte(p.Type)))
		if part == nil && (p.Type == mbr.Fat32LBA || p.Type == mbr.Fat32CHS) {
			part = p
		}
	}
	if part == nil {
		if len(seen) == 0 {
			return nil, fmt.Errorf("%w: %s has an empty partition table", ErrNoFAT32, path)
		}
		return nil, fmt.Errorf("%w: %s has partitions %s and none of type 0x0c or 0x0b (FAT32); the boot partition must be FAT32", ErrNoFAT32, path, strings.Join(seen, ", "))
	}
	start, size := part.GetStart(), part.GetSize()
	if start+size > d.Size {
		return nil, fmt.Errorf("%w: partition %d of %s ends at byte %d, past the end of the file (%d bytes): the image is truncated", ErrNotImage, part.Index, path, start+size, d.Size)
	}
	g, err := readGeometry(d.Backend, start, size)
	if err != nil {
		return nil, fmt.Errorf("%w: partition %d of %s is typed FAT32 but holds %v", ErrNoFAT32, part.Index, path, err)
	}
	fs, err := fat32.Read(d.Backend, size, start, int64(diskfs.SectorSize512))
	if err != nil {
		return nil, fmt.Errorf("%w: partition %d of %s: %v", ErrNoFAT32, part.Index, path, err)
	}
	v.fs, v.geom, v.index = fs, g, part.Index
	ok = true
	return v, nil
}

// sniff refuses compressed images with the command that unpacks them.
func sniff(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sdimage: %w", err)
	}
	defer f.Close()
	head := make([]byte, 8)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sdimage: read %s: %w", path, err)
	}
	for _, c := range compressed {
		if bytes.HasPrefix(head[:n], c.magic) {
			return fmt.Errorf("%w: %s is %s-compressed; unpack it first (%s %s)", ErrNotImage, path, c.name, c.undo, path)
		}
	}
	return nil
}

func (v *volume) close() error {
	if v.disk == nil {
		return nil
	}
	err := v.disk.Close()
	v.disk = nil
	if err != nil {
		return fmt.Errorf("sdimage: close %s: %w", v.path, err)
	}
	return nil
}

// folderState reports whether the bundle folder exists, and its entries.
func (v *volume) folderState() (exists bool, files []string, err error) {
	root, err := v.fs.ReadDir(".")
	if err != nil {
		return false, nil, fmt.Errorf("sdimage: read root folder: %w", err)
	}
	for _, e := range root {
		if !strings.EqualFold(e.Name(), bootstrap.BundleDir) {
			continue
		}
		if !e.IsDir() {
			return false, nil, fmt.Errorf("sdimage: %s: the boot partition has a file named %q where the bundle folder goes; delete it (mdel -i %s@@%d ::%s)", v.path, e.Name(), v.path, v.geom.start, shown)
		}
		entries, err := v.fs.ReadDir(folder)
		if err != nil {
			return false, nil, fmt.Errorf("sdimage: read %s: %w", shown, err)
		}
		for _, f := range entries {
			if f.IsDir() {
				return false, nil, fmt.Errorf("sdimage: %s: %s contains a folder %q, which a bundle never has; remove it (mdeltree -i %s@@%d ::%s/%s)", v.path, shown, f.Name(), v.path, v.geom.start, shown, f.Name())
			}
			files = append(files, f.Name())
		}
		return true, files, nil
	}
	return false, nil, nil
}

// readFile reads a file of the bundle folder.
func (v *volume) readFile(name string) ([]byte, error) {
	f, err := v.fs.OpenFile(folder+"/"+name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("sdimage: open %s/%s: %w", shown, name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sdimage: stat %s/%s: %w", shown, name, err)
	}
	if fi.Size() > bootstrap.MaxFileSize {
		return nil, fmt.Errorf("sdimage: %s/%s is %d bytes, more than a bundle file may have", shown, name, fi.Size())
	}
	// One read of exactly the file's size: go-diskfs v1.9.4 reads past the
	// end of a file when a read starts inside a cluster, which io.ReadAll's
	// growing buffer does on partitions with clusters larger than 512 bytes.
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("sdimage: read %s/%s: %w", shown, name, err)
	}
	return data, nil
}

// writeFile creates or replaces a file of the bundle folder.
func (v *volume) writeFile(name string, data []byte) error {
	p := folder + "/" + name
	f, err := v.fs.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("sdimage: create %s: %w", "/"+p, err)
	}
	n, err := f.Write(data)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sdimage: write %s: %w", "/"+p, err)
	}
	return nil
}

// chain returns the clusters of a file or folder.
func (v *volume) chain(p string) ([]uint32, error) {
	f, err := v.fs.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("sdimage: open %s: %w", "/"+p, err)
	}
	defer f.Close()
	ff, ok := f.(*fat12.File)
	if !ok {
		return nil, fmt.Errorf("sdimage: %s: unexpected file type %T", "/"+p, f)
	}
	c, err := ff.GetClusterChain()
	if err != nil {
		return nil, fmt.Errorf("sdimage: clusters of %s: %w", "/"+p, err)
	}
	return c, nil
}

// scrubRemove overwrites every cluster of a bundle file with zeros, deletes
// it, and returns its clusters, which go-diskfs does not free (see repair).
func (v *volume) scrubRemove(name string) ([]uint32, error) {
	p := folder + "/" + name
	clusters, err := v.chain(p)
	if err != nil {
		return nil, err
	}
	f, err := v.fs.OpenFile(p, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("sdimage: open %s: %w", "/"+p, err)
	}
	_, werr := f.Write(make([]byte, int64(len(clusters))*v.geom.clusterSize))
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return nil, fmt.Errorf("sdimage: overwrite %s: %w", "/"+p, err)
	}
	if err := v.fs.Remove(p); err != nil {
		return nil, fmt.Errorf("sdimage: remove %s: %w", "/"+p, err)
	}
	return clusters, nil
}

// finish closes the image and runs repair over it.
func (v *volume) finish(free [][]uint32, rootSubdirs []uint32) error {
	g, path := v.geom, v.path
	if err := v.close(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sdimage: %w", err)
	}
	rerr := repair(f, g, free, rootSubdirs)
	cerr := f.Close()
	if rerr != nil {
		return fmt.Errorf("sdimage: %s: repair FAT32 after writing: %w", path, rerr)
	}
	if cerr != nil {
		return fmt.Errorf("sdimage: close %s: %w", path, cerr)
	}
	return nil
}
