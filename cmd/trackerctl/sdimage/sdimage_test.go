package sdimage_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/google/go-cmp/cmp"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/cmd/trackerctl/sdimage"
)

const (
	bootSize = 40 << 20
	rootOff  = bootOffset + bootSize
	rootSize = 2 << 20
)

var stampTime = time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)

func stampOpts(force bool) sdimage.Options {
	return sdimage.Options{Force: force, Now: func() time.Time { return stampTime }, Tool: "trackerctl test"}
}

func TestStampReadBackWithMtools(t *testing.T) {
	mdir := tool(t, "mdir", "mtools")
	mtype := tool(t, "mtype", "mtools")
	img := newImage(t)
	rootBefore := rangeHash(t, img, rootOff, rootSize)
	dir, files := deviceDir(t, newPKI(t), "tracker-0042")

	m, err := sdimage.Stamp(img, dir, stampOpts(false))
	if err != nil {
		t.Fatalf("Stamp: %v", err)
	}
	if m.DeviceID != "tracker-0042" || !m.StampedAt.Equal(stampTime) || m.Tool != "trackerctl test" || len(m.Files) != len(files) {
		t.Errorf("manifest = %+v", m)
	}

	at := fmt.Sprintf("%s@@%d", img, bootOffset)
	listing := run(t, mdir, "-b", "-i", at, "::/tracker")
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		got = append(got, strings.TrimPrefix(l, "::/tracker/"))
	}
	want := []string{bootstrap.ManifestName}
	for name := range files {
		want = append(want, name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mdir ::/tracker (-want +got):\n%s\nlisting:\n%s", diff, listing)
	}
	for name, data := range files {
		if out := run(t, mtype, "-i", at, "::/tracker/"+name); out != string(data) {
			t.Errorf("mtype %s differs from the bundle file", name)
		}
	}
	var onDisk bootstrap.Manifest
	if err := json.Unmarshal([]byte(run(t, mtype, "-i", at, "::/tracker/"+bootstrap.ManifestName)), &onDisk); err != nil {
		t.Fatalf("manifest read with mtype: %v", err)
	}
	if diff := cmp.Diff(*m, onDisk); diff != "" {
		t.Errorf("manifest in the image (-returned +on disk):\n%s", diff)
	}
	for _, f := range onDisk.Files {
		if err := f.Check(files[f.Name]); err != nil {
			t.Errorf("manifest entry: %v", err)
		}
		if f.Secret != (f.Name == "device.key.pem") {
			t.Errorf("%s: secret = %v", f.Name, f.Secret)
		}
	}
	// The rest of the boot partition and partition 2 are untouched.
	if out := run(t, mtype, "-i", at, "::/config.txt"); !strings.Contains(out, "dtparam=i2c_arm=on") {
		t.Errorf("config.txt changed: %q", out)
	}
	if rangeHash(t, img, rootOff, rootSize) != rootBefore {
		t.Error("partition 2 changed")
	}
	fsckClean(t, img, bootOffset, bootSize)
}

func TestStampRefusesThenForceReplaces(t *testing.T) {
	img := newImage(t)
	p := newPKI(t)
	dirA, filesA := deviceDir(t, p, "tracker-0001")
	if _, err := sdimage.Stamp(img, dirA, stampOpts(false)); err != nil {
		t.Fatal(err)
	}
	oldKey := filesA["device.key.pem"]
	if !bytes.Contains(readFile(t, img), oldKey) {
		t.Fatal("the stamped key is not in the image; the scrub check below would prove nothing")
	}

	dirB, filesB := deviceDir(t, p, "tracker-0002")
	before := fileHash(t, img)
	_, err := sdimage.Stamp(img, dirB, stampOpts(false))
	if !errors.Is(err, sdimage.ErrStamped) || !strings.Contains(err.Error(), `"tracker-0001"`) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second Stamp = %v, want ErrStamped naming tracker-0001 and --force", err)
	}
	if fileHash(t, img) != before {
		t.Error("refused Stamp changed the image")
	}

	// B has one file fewer and one more than A.
	if err := os.Remove(filepath.Join(dirB, "trust.pem")); err != nil {
		t.Fatal(err)
	}
	delete(filesB, "trust.pem")
	filesB["notes.txt"] = []byte("shipment 7\n")
	if err := os.WriteFile(filepath.Join(dirB, "notes.txt"), filesB["notes.txt"], 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := sdimage.Stamp(img, dirB, stampOpts(true))
	if err != nil {
		t.Fatalf("Stamp --force: %v", err)
	}
	if m.DeviceID != "tracker-0002" {
		t.Errorf("DeviceID = %q", m.DeviceID)
	}
	r, err := sdimage.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range r.Files {
		names = append(names, f.Name)
	}
	if diff := cmp.Diff([]string{"config.toml", "device.chain.pem", "device.key.pem", "notes.txt"}, names); diff != "" {
		t.Errorf("files after --force (-want +got):\n%s", diff)
	}
	if !r.OK() {
		t.Errorf("Inspect problems: %v", r.Problems)
	}
	if bytes.Contains(readFile(t, img), oldKey) {
		t.Error("the replaced private key is still readable in the image")
	}
	fsckClean(t, img, bootOffset, bootSize)
}

func TestInspect(t *testing.T) {
	mcopy := tool(t, "mcopy", "mtools")
	img := newImage(t)
	p := newPKI(t)
	dir, _ := deviceDir(t, p, "tracker-0042")
	if _, err := sdimage.Inspect(img); !errors.Is(err, sdimage.ErrNotStamped) {
		t.Fatalf("Inspect of a clean image = %v, want ErrNotStamped", err)
	}
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, img)
	r, err := sdimage.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if fileHash(t, img) != before {
		t.Error("Inspect changed the image")
	}
	if !r.OK() || r.Partition != 1 || r.Label != "bootfs" || r.Manifest.DeviceID != "tracker-0042" {
		t.Fatalf("report = %+v", r)
	}
	for _, f := range r.Files {
		if !f.Listed || !f.Match {
			t.Errorf("%s: listed %v match %v", f.Name, f.Listed, f.Match)
		}
		if f.Secret != (f.Name == "device.key.pem") {
			t.Errorf("%s: secret = %v", f.Name, f.Secret)
		}
		if f.Name == "device.chain.pem" {
			if len(f.Certs) != 2 || f.Certs[0].Subject != "CN=tracker-0042" || f.Certs[0].Issuer != "CN=Test Fleet Root" || !f.Certs[1].IsCA {
				t.Errorf("chain certs = %+v", f.Certs)
			}
			if time.Until(f.Certs[0].NotAfter) < 300*24*time.Hour {
				t.Errorf("leaf expiry %v, want about a year ahead", f.Certs[0].NotAfter)
			}
		}
	}

	// Edit a file behind the manifest's back, with mtools.
	edited := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(edited, []byte("[identity]\ncert = \"other.pem\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, mcopy, "-o", "-i", fmt.Sprintf("%s@@%d", img, bootOffset), edited, "::/tracker/config.toml")
	r, err = sdimage.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "config.toml") {
		t.Errorf("after editing config.toml: OK %v, problems %q", r.OK(), r.Problems)
	}
}

func TestClear(t *testing.T) {
	mdir := tool(t, "mdir", "mtools")
	img := newImage(t)
	dir, files := deviceDir(t, newPKI(t), "tracker-0042")
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); err != nil {
		t.Fatal(err)
	}
	if err := sdimage.Clear(img); err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if _, err := sdimage.Inspect(img); !errors.Is(err, sdimage.ErrNotStamped) {
		t.Errorf("Inspect after Clear = %v, want ErrNotStamped", err)
	}
	if out := run(t, mdir, "-b", "-i", fmt.Sprintf("%s@@%d", img, bootOffset), "::/"); strings.Contains(strings.ToLower(out), "tracker") {
		t.Errorf("root folder still lists tracker:\n%s", out)
	}
	if bytes.Contains(readFile(t, img), files["device.key.pem"]) {
		t.Error("the cleared private key is still readable in the image")
	}
	if err := sdimage.Clear(img); !errors.Is(err, sdimage.ErrNotStamped) {
		t.Errorf("second Clear = %v, want ErrNotStamped", err)
	}
	fsckClean(t, img, bootOffset, bootSize)
	// A cleared image can be stamped again.
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); err != nil {
		t.Fatalf("Stamp after Clear: %v", err)
	}
	fsckClean(t, img, bootOffset, bootSize)
}

// TestStampMkfsImage stamps a boot partition formatted by mkfs.vfat, as real
// Raspberry Pi OS images are, rather than by go-diskfs.
func TestStampMkfsImage(t *testing.T) {
	mkfs := tool(t, "mkfs.vfat", "dosfstools")
	mtype := tool(t, "mtype", "mtools")
	img := filepath.Join(t.TempDir(), "mkfs.img")
	// 4 KiB clusters, like the 512 MiB boot partition of Raspberry Pi OS,
	// and enough of them (76k) to be FAT32 by the book.
	const bootSectors = 320 << 20 / 512
	partitioned(t, img, 8192+bootSectors+2048, []*mbr.Partition{
		{Index: 1, Bootable: true, Type: mbr.Fat32LBA, Start: 8192, Size: bootSectors},
		{Index: 2, Type: mbr.Linux, Start: 8192 + bootSectors, Size: 2048},
	})
	run(t, mkfs, "-F", "32", "-s", "8", "-h", "8192", "-n", "BOOTFS", "--offset", "8192", img, fmt.Sprint(bootSectors/2))
	dir, files := deviceDir(t, newPKI(t), "tracker-0042")
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); err != nil {
		t.Fatalf("Stamp: %v", err)
	}
	for name, data := range files {
		if out := run(t, mtype, "-i", fmt.Sprintf("%s@@%d", img, bootOffset), "::/tracker/"+name); out != string(data) {
			t.Errorf("mtype %s differs from the bundle file", name)
		}
	}
	fsckClean(t, img, bootOffset, bootSectors*512)
	if err := sdimage.Clear(img); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img, bootOffset, bootSectors*512)
}

// partitioned creates an image of the given sectors with an MBR.
func partitioned(t *testing.T, path string, sectors int64, parts []*mbr.Partition) {
	t.Helper()
	d, err := diskfs.Create(path, sectors*512, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Partition(&mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: parts}); err != nil {
		t.Fatal(err)
	}
}

func TestStampRefusesImages(t *testing.T) {
	dir, _ := deviceDir(t, newPKI(t), "tracker-0042")
	for _, tc := range []struct {
		name  string
		make  func(t *testing.T, path string)
		want  error
		words string
	}{
		{"no partition table", func(t *testing.T, path string) {
			if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		}, sdimage.ErrNotImage, "no partition table"},
		{"xz compressed", func(t *testing.T, path string) {
			if err := os.WriteFile(path, append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, make([]byte, 4096)...), 0o644); err != nil {
				t.Fatal(err)
			}
		}, sdimage.ErrNotImage, "xz -dk"},
		{"GPT", func(t *testing.T, path string) {
			d, err := diskfs.Create(path, 8<<20, diskfs.SectorSize512)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
				Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 8191, Type: gpt.MicrosoftBasicData, Name: "boot"}}}); err != nil {
				t.Fatal(err)
			}
		}, sdimage.ErrNotImage, "GPT"},
		{"empty MBR", func(t *testing.T, path string) {
			partitioned(t, path, 16384, nil)
		}, sdimage.ErrNoFAT32, "empty partition table"},
		{"no FAT32 partition", func(t *testing.T, path string) {
			partitioned(t, path, 16384, []*mbr.Partition{{Index: 1, Type: mbr.Linux, Start: 2048, Size: 8192}})
		}, sdimage.ErrNoFAT32, "1 (type 0x83)"},
		{"FAT32 type, no file system", func(t *testing.T, path string) {
			partitioned(t, path, 16384, []*mbr.Partition{{Index: 1, Type: mbr.Fat32LBA, Start: 2048, Size: 8192}})
		}, sdimage.ErrNoFAT32, "typed FAT32 but holds"},
		{"truncated", func(t *testing.T, path string) {
			if err := sdimage.CreateTestImage(path, sdimage.TestImageOptions{BootMiB: 40, RootMiB: 1}); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 30<<20); err != nil {
				t.Fatal(err)
			}
		}, sdimage.ErrNotImage, "truncated"},
		{"a folder", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, sdimage.ErrNotImage, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "bad.img")
			tc.make(t, img)
			var before [32]byte
			if fi, _ := os.Stat(img); fi.Mode().IsRegular() {
				before = fileHash(t, img)
			}
			_, err := sdimage.Stamp(img, dir, stampOpts(false))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("Stamp = %v, want %v mentioning %q", err, tc.want, tc.words)
			}
			if _, err := sdimage.Inspect(img); !errors.Is(err, tc.want) {
				t.Errorf("Inspect = %v, want %v", err, tc.want)
			}
			if fi, _ := os.Stat(img); fi.Mode().IsRegular() && fileHash(t, img) != before {
				t.Error("refused Stamp changed the image")
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := sdimage.Stamp(filepath.Join(t.TempDir(), "absent.img"), dir, stampOpts(false))
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Stamp = %v, want not-exist", err)
		}
	})
}

func TestStampRefusesFAT16(t *testing.T) {
	mkfs := tool(t, "mkfs.vfat", "dosfstools")
	img := filepath.Join(t.TempDir(), "fat16.img")
	partitioned(t, img, 8192+65536, []*mbr.Partition{{Index: 1, Type: mbr.Fat32LBA, Start: 8192, Size: 65536}})
	run(t, mkfs, "-F", "16", "--offset", "8192", img, "32768")
	dir, _ := deviceDir(t, newPKI(t), "tracker-0042")
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); !errors.Is(err, sdimage.ErrNoFAT32) || !strings.Contains(err.Error(), "FAT12 or FAT16") {
		t.Fatalf("Stamp on FAT16 = %v, want ErrNoFAT32 naming FAT16", err)
	}
}

func TestStampRefusesDeviceDirs(t *testing.T) {
	img := newImage(t)
	before := fileHash(t, img)
	p := newPKI(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string
		words string
	}{
		{"subfolder", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.Mkdir(filepath.Join(dir, "old"), 0o755); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "is a folder"},
		{"oversized file", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.Truncate(filepath.Join(dir, "config.toml"), bootstrap.MaxFileSize+1); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "more than the"},
		{"empty file", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "is empty"},
		{"hidden file", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.WriteFile(filepath.Join(dir, ".DS_Store"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "hidden"},
		{"case collision", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.WriteFile(filepath.Join(dir, "CONFIG.TOML"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "differ only in case"},
		{"reserved name", func(t *testing.T) string {
			dir, _ := deviceDir(t, p, "tracker-0042")
			if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "reserved for the manifest"},
		{"empty directory", func(t *testing.T) string { return t.TempDir() }, "has no files"},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "absent") }, "no such file"},
		{"expired certificate", func(t *testing.T) string {
			chain, key := p.device(t, "tracker-0042", time.Now().Add(-24*time.Hour))
			return writeDir(t, map[string][]byte{"device.chain.pem": chain, "device.key.pem": key})
		}, "expired on"},
		{"two devices", func(t *testing.T) string {
			chainA, key := p.device(t, "tracker-0001", time.Now().Add(24*time.Hour))
			chainB, _ := p.device(t, "tracker-0002", time.Now().Add(24*time.Hour))
			return writeDir(t, map[string][]byte{"a.pem": chainA, "b.pem": chainB, "device.key.pem": key})
		}, "tracker-0001, tracker-0002"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sdimage.Stamp(img, tc.setup(t), sdimage.Options{})
			if !errors.Is(err, sdimage.ErrDeviceDir) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("Stamp = %v, want ErrDeviceDir mentioning %q", err, tc.words)
			}
		})
	}
	if fileHash(t, img) != before {
		t.Error("a refused Stamp changed the image")
	}
}

func TestCreateTestImage(t *testing.T) {
	img := newImage(t)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(bootOffset + bootSize + rootSize); fi.Size() != want {
		t.Errorf("image size %d, want %d", fi.Size(), want)
	}
	root := make([]byte, rootSize)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(root, rootOff); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(root, []byte(sdimage.RootPattern+sdimage.RootPattern)) {
		t.Errorf("partition 2 starts %q", root[:40])
	}
	if err := sdimage.CreateTestImage(img, sdimage.TestImageOptions{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("CreateTestImage over an existing file = %v, want refusal", err)
	}
	// 64 MiB (the default) is a size where go-diskfs alone writes a FAT two
	// entries short; 41 and 128 MiB are sizes where it does not.
	for _, boot := range []int{0, 41, 128} {
		other := filepath.Join(t.TempDir(), "x.img")
		if err := sdimage.CreateTestImage(other, sdimage.TestImageOptions{BootMiB: boot, RootMiB: 1}); err != nil {
			t.Fatalf("CreateTestImage(BootMiB %d): %v", boot, err)
		}
		size := int64(boot) << 20
		if boot == 0 {
			size = 64 << 20
		}
		fi, err := os.Stat(other)
		if err != nil {
			t.Fatal(err)
		}
		// Partition 1 may end up to a few 32 KiB steps short of the size asked.
		fsckClean(t, other, bootOffset, fi.Size()-bootOffset-1<<20)
		if fi.Size() > bootOffset+size+1<<20 || fi.Size() < bootOffset+size+1<<20-4*32<<10 {
			t.Errorf("BootMiB %d: image is %d bytes", boot, fi.Size())
		}
		if _, err := sdimage.Stamp(other, writeDir(t, map[string][]byte{"config.toml": []byte("x = 1\n")}), stampOpts(false)); err != nil {
			t.Errorf("Stamp on a %d MiB test image: %v", boot, err)
		}
	}
	if err := sdimage.CreateTestImage(filepath.Join(t.TempDir(), "x.img"), sdimage.TestImageOptions{BootMiB: 16}); err == nil {
		t.Error("CreateTestImage with a 16 MiB FAT32 partition succeeded, want an error")
	}
	fsckClean(t, img, bootOffset, bootSize)
	if sfdisk, err := exec.LookPath("sfdisk"); err == nil {
		out := run(t, sfdisk, "--dump", img)
		for _, want := range []string{"start=        8192, size=       81920, type=c, bootable", "start=       90112, size=        4096, type=83"} {
			if !strings.Contains(out, want) {
				t.Errorf("sfdisk --dump lacks %q:\n%s", want, out)
			}
		}
	}
}

// TestBoardImportsStampedBundle copies the stamped folder out of the image
// with mtools, as the board's kernel would present it under /boot/firmware,
// and imports it with agent/bootstrap.
func TestBoardImportsStampedBundle(t *testing.T) {
	mcopy := tool(t, "mcopy", "mtools")
	img := newImage(t)
	dir, files := deviceDir(t, newPKI(t), "tracker-0042")
	if _, err := sdimage.Stamp(img, dir, stampOpts(false)); err != nil {
		t.Fatal(err)
	}
	boot, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
	run(t, mcopy, "-s", "-i", fmt.Sprintf("%s@@%d", img, bootOffset), "::/tracker", boot)
	imported, err := bootstrap.ImportBundle(boot, state)
	if err != nil || !imported {
		t.Fatalf("ImportBundle = %v, %v", imported, err)
	}
	for name, want := range files {
		if got := readFile(t, filepath.Join(state, name)); !bytes.Equal(got, want) {
			t.Errorf("imported %s differs", name)
		}
	}
	if _, err := os.Stat(filepath.Join(boot, "tracker", "device.key.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key left on the boot copy: %v", err)
	}
}
