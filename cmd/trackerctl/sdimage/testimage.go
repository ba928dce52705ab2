package sdimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// TestImageOptions sizes a test image.
type TestImageOptions struct {
	// BootMiB is the FAT32 boot partition's size: at least 40 (FAT32 needs
	// 65525 clusters) and at most 2048. Zero means 64.
	BootMiB int
	// RootMiB is the size of partition 2: 1 to 2048. Zero means 8.
	RootMiB int
}

// RootPattern fills partition 2 of a test image, so tests can check that
// stamping leaves it alone.
const RootPattern = "trackerctl test image: partition 2 stands in for the ext4 root file system\n"

const (
	sectorSize = 512
	firstLBA   = 8192 // 4 MiB, as Raspberry Pi OS images start their boot partition
	mib        = 1 << 20
)

// CreateTestImage writes a new disk image at path laid out like Raspberry
// Pi OS: an MBR, partition 1 FAT32 (type 0x0c, bootable, label "bootfs")
// holding a config.txt and cmdline.txt, and partition 2 (type 0x83) filled
// with RootPattern instead of a real root file system. It refuses to
// overwrite an existing file.
func CreateTestImage(path string, opts TestImageOptions) error {
	if opts.BootMiB == 0 {
		opts.BootMiB = 64
	}
	if opts.RootMiB == 0 {
		opts.RootMiB = 8
	}
	if opts.BootMiB < 40 || opts.BootMiB > 2048 {
		return fmt.Errorf("sdimage: boot partition of %d MiB: choose 40 to 2048 (FAT32 needs at least 65525 clusters)", opts.BootMiB)
	}
	if opts.RootMiB < 1 || opts.RootMiB > 2048 {
		return fmt.Errorf("sdimage: root partition of %d MiB: choose 1 to 2048", opts.RootMiB)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("sdimage: %s exists; remove it or choose another name", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sdimage: %w", err)
	}
	bootSectors := uint32(opts.BootMiB * mib / sectorSize)
	rootSectors := uint32(opts.RootMiB * mib / sectorSize)
	// go-diskfs v1.9.4 sizes the FAT without its two reserved entries, so
	// for some partition sizes (64 MiB is one) the FAT is two entries short
	// and fsck.fat refuses the result. Such a size is shrunk by 32 KiB,
	// which moves the cluster count away from the edge.
	for attempt := 0; ; attempt++ {
		err := createTestImage(path, bootSectors, rootSectors)
		if !errors.Is(err, errFATTooSmall) {
			return err
		}
		if rerr := os.Remove(path); rerr != nil {
			return fmt.Errorf("sdimage: %w", rerr)
		}
		if attempt == 3 {
			return err
		}
		bootSectors -= 64
	}
}

func createTestImage(path string, bootSectors, rootSectors uint32) (err error) {
	size := int64(firstLBA+bootSectors+rootSectors) * sectorSize
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("sdimage: create %s: %w", path, err)
	}
	defer func() {
		if d != nil {
			d.Close()
		}
		if err != nil && !errors.Is(err, errFATTooSmall) {
			os.Remove(path)
		}
	}()
	table := &mbr.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		Partitions: []*mbr.Partition{
			// go-diskfs finds partitions by Index when it creates file systems.
			{Index: 1, Bootable: true, Type: mbr.Fat32LBA, Start: firstLBA, Size: bootSectors},
			{Index: 2, Type: mbr.Linux, Start: firstLBA + bootSectors, Size: rootSectors},
		},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("sdimage: partition %s: %w", path, err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "bootfs"})
	if err != nil {
		return fmt.Errorf("sdimage: format partition 1 of %s: %w", path, err)
	}
	for name, content := range map[string]string{
		"/config.txt":  "# Test image made by trackerctl image new-test-image\ndtparam=i2c_arm=on\nenable_uart=1\n",
		"/cmdline.txt": "console=tty1 root=/dev/mmcblk0p2 rootfstype=ext4 fsck.repair=yes rootwait\n",
	} {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("sdimage: create %s: %w", name, err)
		}
		_, werr := f.Write([]byte(content))
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("sdimage: write %s: %w", name, err)
		}
	}
	pattern := bytes.Repeat([]byte(RootPattern), int(rootSectors)*sectorSize/len(RootPattern)+1)
	if _, err := d.WritePartitionContents(2, io.LimitReader(bytes.NewReader(pattern), int64(rootSectors)*sectorSize)); err != nil {
		return fmt.Errorf("sdimage: fill partition 2 of %s: %w", path, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("sdimage: close %s: %w", path, err)
	}
	d = nil

	// go-diskfs leaves the FSInfo free count unset; fill it in.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sdimage: %w", err)
	}
	defer f.Close()
	g, err := readGeometry(f, firstLBA*sectorSize, int64(bootSectors)*sectorSize)
	if err != nil {
		return fmt.Errorf("sdimage: %s: go-diskfs wrote an unusable file system: %w", path, err)
	}
	if err := repair(f, g, nil, nil); err != nil {
		return fmt.Errorf("sdimage: %s: %w", path, err)
	}
	return f.Close()
}
