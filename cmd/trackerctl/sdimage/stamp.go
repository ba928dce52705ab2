package sdimage

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/agent/buildinfo"
)

// Options tunes Stamp.
type Options struct {
	// Force replaces a bundle already in the image.
	Force bool
	// Now gives the stamping time; nil means time.Now.
	Now func() time.Time
	// Tool names the stamping program in the manifest; empty means
	// trackerctl's version string.
	Tool string
}

type bundleFile struct {
	name string
	data []byte
}

// Stamp writes every file of the device bundle in deviceDir, and a
// manifest, into /tracker on the first FAT32 partition of the MBR image at
// imagePath, then reads them back to check them. It refuses a bundle
// directory with subfolders, hidden, empty or oversized files, or an expired
// device certificate (ErrDeviceDir), an image that already carries a bundle
// unless opts.Force (ErrStamped), and images without an MBR or FAT32 boot
// partition (ErrNotImage, ErrNoFAT32). It returns the manifest written.
func Stamp(imagePath, deviceDir string, opts Options) (*bootstrap.Manifest, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	files, err := readDeviceDir(deviceDir)
	if err != nil {
		return nil, err
	}
	m := &bootstrap.Manifest{Format: bootstrap.ManifestFormat, StampedAt: now().UTC().Truncate(time.Second), Tool: opts.Tool}
	if m.Tool == "" {
		m.Tool = buildinfo.String("trackerctl")
	}
	if m.DeviceID, err = deviceID(files, m.StampedAt); err != nil {
		return nil, err
	}
	for _, f := range files {
		m.Files = append(m.Files, bootstrap.NewFile(f.name, f.data))
	}
	raw, err := m.Marshal()
	if err != nil {
		return nil, err
	}

	v, err := openVolume(imagePath, true)
	if err != nil {
		return nil, err
	}
	defer v.close()
	exists, old, err := v.folderState()
	if err != nil {
		return nil, err
	}
	var free [][]uint32
	if exists {
		if !opts.Force {
			return nil, fmt.Errorf("%w: %s already holds a device bundle in %s%s; pass --force to replace it", ErrStamped, imagePath, shown, v.describe())
		}
		for _, name := range old {
			c, err := v.scrubRemove(name)
			if err != nil {
				return nil, err
			}
			free = append(free, c)
		}
	} else if err := v.fs.Mkdir(folder); err != nil {
		return nil, fmt.Errorf("sdimage: create %s: %w", shown, err)
	}
	for _, f := range files {
		if err := v.writeFile(f.name, f.data); err != nil {
			return nil, err
		}
	}
	// The manifest goes last, so a half-written folder has none and the
	// board refuses it.
	if err := v.writeFile(bootstrap.ManifestName, raw); err != nil {
		return nil, err
	}
	dir, err := v.chain(folder)
	if err != nil {
		return nil, err
	}
	if err := v.finish(free, dir[:1]); err != nil {
		return nil, err
	}

	r, err := Inspect(imagePath)
	if err != nil {
		return nil, fmt.Errorf("sdimage: read back: %w", err)
	}
	if !r.OK() {
		return nil, fmt.Errorf("sdimage: read back %s: %s", imagePath, strings.Join(r.Problems, "; "))
	}
	return m, nil
}

// describe summarises the bundle already in the image for an error message.
func (v *volume) describe() string {
	raw, err := v.readFile(bootstrap.ManifestName)
	if err != nil {
		return " (no manifest)"
	}
	m, err := bootstrap.ParseManifest(raw)
	if err != nil {
		return " (unreadable manifest)"
	}
	return fmt.Sprintf(" for %q, stamped %s", m.DeviceID, m.StampedAt.UTC().Format(time.RFC3339))
}

// readDeviceDir reads the bundle files of dir, sorted by name.
func readDeviceDir(dir string) ([]bundleFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDeviceDir, err)
	}
	var files []bundleFile
	seen := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(dir, name)
		if err := bootstrap.CheckName(name); err != nil {
			return nil, fmt.Errorf("%w: %s: %v; rename or remove it", ErrDeviceDir, p, err)
		}
		if other, dup := seen[strings.ToLower(name)]; dup {
			return nil, fmt.Errorf("%w: %s and %s differ only in case, which FAT cannot keep apart", ErrDeviceDir, other, name)
		}
		seen[strings.ToLower(name)] = name
		fi, err := os.Stat(p) // follows symbolic links to the file they name
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDeviceDir, err)
		}
		switch {
		case fi.IsDir():
			return nil, fmt.Errorf("%w: %s is a folder; a device bundle is flat (move its files up or remove it)", ErrDeviceDir, p)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrDeviceDir, p)
		case fi.Size() == 0:
			return nil, fmt.Errorf("%w: %s is empty", ErrDeviceDir, p)
		case fi.Size() > bootstrap.MaxFileSize:
			return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d a bundle file may have; is this the right directory?", ErrDeviceDir, p, fi.Size(), bootstrap.MaxFileSize)
		}
		data, err := readLimited(p)
		if err != nil {
			return nil, err
		}
		files = append(files, bundleFile{name: name, data: data})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: %s has no files; create a bundle with 'trackerctl device bundle'", ErrDeviceDir, dir)
	}
	if len(files) > bootstrap.MaxFiles {
		return nil, fmt.Errorf("%w: %s has %d files, more than %d; is this the right directory?", ErrDeviceDir, dir, len(files), bootstrap.MaxFiles)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}

func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDeviceDir, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bootstrap.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrDeviceDir, p, err)
	}
	if len(data) > bootstrap.MaxFileSize {
		return nil, fmt.Errorf("%w: %s grew past %d bytes while being read", ErrDeviceDir, p, bootstrap.MaxFileSize)
	}
	return data, nil
}

// deviceID returns the common name of the bundle's device (non-CA)
// certificate, or "" if it has none. Several different device certificates,
// or an expired one, are errors.
func deviceID(files []bundleFile, now time.Time) (string, error) {
	var ids []string
	for _, f := range files {
		for _, c := range certificates(f.data) {
			if c.IsCA {
				continue
			}
			if now.After(c.NotAfter) {
				return "", fmt.Errorf("%w: the device certificate %q in %s expired on %s; issue a new one with 'trackerctl pki issue'", ErrDeviceDir, c.Subject.CommonName, f.name, c.NotAfter.UTC().Format(time.DateOnly))
			}
			if !slices.Contains(ids, c.Subject.CommonName) {
				ids = append(ids, c.Subject.CommonName)
			}
		}
	}
	if len(ids) > 1 {
		return "", fmt.Errorf("%w: it holds certificates for several devices (%s); a bundle is for one device", ErrDeviceDir, strings.Join(ids, ", "))
	}
	if len(ids) == 0 {
		return "", nil
	}
	return ids[0], nil
}

// certificates returns the X.509 certificates PEM-encoded in data.
func certificates(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// Report describes the bundle found in an image.
type Report struct {
	// Image is the image file.
	Image string `json:"image"`
	// Partition is the MBR number of the boot partition.
	Partition int `json:"partition"`
	// Label is the boot partition's volume label.
	Label string `json:"label"`
	// Manifest is the bundle's manifest, nil if missing or unreadable.
	Manifest *bootstrap.Manifest `json:"manifest"`
	// Files lists the files in the bundle folder, by name.
	Files []FileReport `json:"files"`
	// Problems lists everything that does not match the manifest.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the bundle has a manifest and matches it.
func (r *Report) OK() bool { return r.Manifest != nil && len(r.Problems) == 0 }

// FileReport describes one file of the bundle folder.
type FileReport struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Secret is set for a private key.
	Secret bool `json:"secret,omitempty"`
	// Listed is set when the manifest names the file; Match when its size
	// and hash agree with the manifest.
	Listed bool `json:"listed"`
	Match  bool `json:"match"`
	// Certs describes the certificates in the file, in order.
	Certs []Cert `json:"certs,omitempty"`
}

// Cert describes a certificate without its key material.
type Cert struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	IsCA     bool      `json:"is_ca,omitempty"`
}

// Inspect reads the bundle in the image's boot partition and checks it
// against its manifest, without changing the image. It returns an error
// wrapping ErrNotStamped if there is no bundle folder.
func Inspect(imagePath string) (*Report, error) {
	v, err := openVolume(imagePath, false)
	if err != nil {
		return nil, err
	}
	defer v.close()
	exists, names, err := v.folderState()
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("%w: %s has no %s folder on partition %d", ErrNotStamped, imagePath, shown, v.index)
	}
	r := &Report{Image: imagePath, Partition: v.index, Label: strings.TrimSpace(v.fs.Label())}
	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	sort.Strings(names)
	hasManifest := false
	for _, n := range names {
		if strings.EqualFold(n, bootstrap.ManifestName) {
			hasManifest = true
			raw, err := v.readFile(n)
			if err != nil {
				return nil, err
			}
			if r.Manifest, err = bootstrap.ParseManifest(raw); err != nil {
				problem("%v", err)
			}
		}
	}
	if !hasManifest {
		problem("no %s: the folder was not written by 'trackerctl image stamp', or stamping was interrupted", bootstrap.ManifestName)
	}
	found := map[string]bool{}
	for _, n := range names {
		if strings.EqualFold(n, bootstrap.ManifestName) {
			continue
		}
		data, err := v.readFile(n)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		fr := FileReport{Name: n, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Secret: bootstrap.IsPrivateKey(data)}
		for _, c := range certificates(data) {
			fr.Certs = append(fr.Certs, Cert{Subject: c.Subject.String(), Issuer: c.Issuer.String(), NotAfter: c.NotAfter.UTC(), IsCA: c.IsCA})
		}
		if r.Manifest != nil {
			if mf, ok := r.Manifest.Lookup(n); ok {
				found[strings.ToLower(mf.Name)] = true
				fr.Listed = true
				if err := mf.Check(data); err != nil {
					problem("%v", err)
				} else {
					fr.Match = true
				}
			} else {
				problem("%s is not in the manifest", n)
			}
		}
		r.Files = append(r.Files, fr)
	}
	if r.Manifest != nil {
		for _, mf := range r.Manifest.Files {
			if !found[strings.ToLower(mf.Name)] {
				if mf.Secret {
					problem("%s (private key) is missing: the board has imported this bundle already, or it was removed", mf.Name)
				} else {
					problem("%s is listed in the manifest but missing", mf.Name)
				}
			}
		}
	}
	return r, nil
}

// Clear overwrites every file of the image's bundle folder with zeros and
// deletes them and the folder. It returns an error wrapping ErrNotStamped if
// there is no bundle folder.
func Clear(imagePath string) error {
	v, err := openVolume(imagePath, true)
	if err != nil {
		return err
	}
	defer v.close()
	exists, names, err := v.folderState()
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: %s has no %s folder on partition %d", ErrNotStamped, imagePath, shown, v.index)
	}
	var free [][]uint32
	for _, n := range names {
		c, err := v.scrubRemove(n)
		if err != nil {
			return err
		}
		free = append(free, c)
	}
	dir, err := v.chain(folder)
	if err != nil {
		return err
	}
	if err := v.fs.Remove(folder); err != nil {
		return fmt.Errorf("sdimage: remove %s: %w", shown, err)
	}
	free = append(free, dir)
	if err := v.finish(free, nil); err != nil {
		return err
	}
	return nil
}
