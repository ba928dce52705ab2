// Package bootstrap moves a device bundle stamped into an SD card's boot
// partition into the tracker's state directory on first boot, and defines
// the manifest that travels with the bundle.
//
// # On the card
//
// "trackerctl image stamp" writes every file of a device bundle (certificate
// chain, private key, trust bundle, config.toml, ...) into the folder
// [BundleDir] of the FAT32 boot partition, plus [ManifestName]: a JSON
// [Manifest] with the size and SHA-256 of each file, the device ID, the
// stamping time and the tool version. On a Raspberry Pi OS board that folder
// is /boot/firmware/tracker.
//
// # On the board
//
// [ImportBundle] verifies every file against the manifest, copies them into
// the state directory (mode 0600, directory 0700, each file replaced
// atomically and the directory synced), writes the manifest last as the
// commit mark, and only then overwrites the private key files on the boot
// partition with zeros and deletes them. A power cut at any point leaves
// either a pending import that runs again at the next boot or a completed
// one. The FAT partition and the SD card's wear levelling may still hold
// old copies of the key's sectors: the scrub is best effort, and the
// unstamped image is the place to keep secrets out of.
//
// The systemd unit runs the import before trackerd starts, as root
// ("trackerd import-boot", see [ImportCommand]) because the boot partition
// is root-owned FAT; files written by root are given to the owner of the
// state directory.
//
// This package does not link go-diskfs: the board reads the partition
// mounted by the kernel. It starts no goroutines.
package bootstrap
