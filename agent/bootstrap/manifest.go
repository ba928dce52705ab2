package bootstrap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	// BundleDir is the folder on the boot partition that holds a stamped
	// bundle.
	BundleDir = "tracker"
	// ManifestName is the manifest's file name inside BundleDir.
	ManifestName = "manifest.json"
	// ManifestFormat is the manifest format version this package writes
	// and reads.
	ManifestFormat = 1
	// MaxFileSize bounds each bundle file. Certificates, keys and configs
	// are a few KiB; anything near this is not a device bundle.
	MaxFileSize = 4 << 20
	// MaxFiles bounds the number of files in a bundle.
	MaxFiles = 64
)

// ErrBadBundle reports a bundle that does not match its manifest, or a
// manifest that cannot be used.
var ErrBadBundle = errors.New("bootstrap: bad device bundle")

// Manifest describes a stamped bundle. It is stored as JSON.
type Manifest struct {
	// Format is ManifestFormat.
	Format int `json:"format"`
	// DeviceID is the device certificate's subject common name (the DPS
	// registration ID), empty if the bundle had no device certificate.
	DeviceID string `json:"device_id,omitempty"`
	// StampedAt is when the bundle was written into the image.
	StampedAt time.Time `json:"stamped_at"`
	// Tool names the program and version that stamped it.
	Tool string `json:"tool"`
	// Files lists every file of the bundle, by name.
	Files []File `json:"files"`
}

// File is one manifest entry.
type File struct {
	// Name is the file's base name inside BundleDir.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of its content.
	SHA256 string `json:"sha256"`
	// Secret marks a private key: the board deletes it from the boot
	// partition once imported.
	Secret bool `json:"secret,omitempty"`
}

// NewFile returns the manifest entry for a file named name holding data.
func NewFile(name string, data []byte) File {
	sum := sha256.Sum256(data)
	return File{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Secret: IsPrivateKey(data)}
}

// Check reports whether data is the content f describes, with an error
// wrapping ErrBadBundle if not.
func (f File) Check(data []byte) error {
	if int64(len(data)) != f.Size {
		return fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrBadBundle, f.Name, len(data), f.Size)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		return fmt.Errorf("%w: %s does not match its SHA-256 in the manifest (damaged or edited after stamping)", ErrBadBundle, f.Name)
	}
	return nil
}

// IsPrivateKey reports whether data holds a PEM private key block
// ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", ...).
func IsPrivateKey(data []byte) bool {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			// An unparsable armour line still marks a key.
			return bytes.Contains(data, []byte("PRIVATE KEY-----"))
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// CheckName returns an error if name cannot be a bundle file name: it must
// be a plain ASCII file name that is valid on FAT, not hidden, and not the
// manifest's own name.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > 255:
		return fmt.Errorf("file name %.20q... is longer than 255 bytes", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%q is a hidden file name (leading dot)", name)
	case strings.EqualFold(name, ManifestName):
		return fmt.Errorf("%q is reserved for the manifest", name)
	case strings.HasSuffix(name, " "):
		return fmt.Errorf("%q ends in a space, which FAT drops", name)
	}
	for _, r := range name {
		if r > 0x7e {
			return fmt.Errorf("%q contains %q: use ASCII letters, digits and punctuation", name, r)
		}
		if r < 0x20 || strings.ContainsRune(`/\:*?"<>|`, r) {
			return fmt.Errorf("%q contains %q, which is not allowed in a FAT file name", name, r)
		}
	}
	return nil
}

// ParseManifest decodes and validates a manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadBundle, ManifestName, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest's format, names, sizes and hashes, returning
// every problem found, each wrapping ErrBadBundle.
func (m *Manifest) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrBadBundle, ManifestName, fmt.Sprintf(format, args...)))
	}
	if m.Format != ManifestFormat {
		bad("format %d is not %d (stamped by a newer or older trackerctl)", m.Format, ManifestFormat)
	}
	if len(m.Files) == 0 {
		bad("lists no files")
	}
	if len(m.Files) > MaxFiles {
		bad("lists %d files, more than %d", len(m.Files), MaxFiles)
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if err := CheckName(f.Name); err != nil {
			bad("%v", err)
			continue
		}
		if key := strings.ToLower(f.Name); seen[key] {
			bad("lists %q twice (FAT names ignore case)", f.Name)
		} else {
			seen[key] = true
		}
		if f.Size < 0 || f.Size > MaxFileSize {
			bad("%s: size %d is outside 0..%d", f.Name, f.Size, MaxFileSize)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			bad("%s: %q is not a hex SHA-256", f.Name, f.SHA256)
		}
	}
	return errors.Join(errs...)
}

// Marshal encodes the manifest as indented JSON with a final newline.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Lookup returns the entry for name (compared as FAT does, ignoring case).
func (m *Manifest) Lookup(name string) (File, bool) {
	for _, f := range m.Files {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return File{}, false
}
