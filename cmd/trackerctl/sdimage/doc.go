// Package sdimage stamps a device bundle into an SD card image for
// "trackerctl image": it writes the bundle's files and a manifest into the
// folder /tracker of the image's FAT32 boot partition, reads them back, and
// removes them again, all in the image file, without root, loop devices or
// mounting.
//
// The image is a disk image with an MBR partition table, laid out like
// Raspberry Pi OS: partition 1 is the FAT32 boot partition ("bootfs", 0x0c),
// partition 2 the ext4 root file system. The first FAT32 partition is used;
// no other partition is read or written. Compressed images (.img.xz) must be
// decompressed first; GPT images are refused.
//
// # Device side
//
// On the board the boot partition is mounted at /boot/firmware, and
// agent/bootstrap imports the bundle from /boot/firmware/tracker into the
// state directory and deletes the private key from the card. This package
// shares its manifest format ([bootstrap.Manifest]) and file name rules.
//
// # go-diskfs
//
// The FAT32 work is done by github.com/diskfs/go-diskfs, which this package
// confines to trackerctl: trackerd never links it. Its FAT writer (v1.9.4)
// has gaps that this package closes, so that fsck.fat finds nothing to fix
// in a stamped image (the tests run fsck.fat -n after every change):
//
//   - the ".." entry of a new folder under the root points at the root's
//     cluster instead of 0, a removed file's clusters are never freed, and
//     the FSInfo free-cluster count is not maintained: a small pass over the
//     raw file system (repair) fixes all three after go-diskfs has closed
//     the image;
//   - a read that starts inside a cluster can run past the end of the file,
//     so files are read with one buffer of exactly their size;
//   - for some sizes (64 MiB is one) a new FAT32 file system gets a FAT two
//     entries short, so CreateTestImage checks the result and shrinks the
//     partition slightly when that happens.
//
// Removed files are overwritten with zeros first, so a replaced or cleared
// key does not linger in free clusters of the image.
//
// # Concurrency
//
// Functions open and close the image on every call and keep no state; do not
// run two of them on the same image at once.
package sdimage
