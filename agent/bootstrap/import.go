package bootstrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ImportBundle imports the bundle in bootDir/tracker (bootDir is where the
// boot partition is mounted, /boot/firmware on Raspberry Pi OS) into
// stateDir. It reports imported=false with a nil error when there is no
// bundle, or when stateDir already holds this very bundle (same manifest);
// in that case it still deletes any private key left on the boot partition
// by an earlier, interrupted import.
//
// Files not listed in the manifest (such as the ._* files macOS leaves) are
// ignored. A file that is missing, oversized or does not match the manifest
// fails the import with an error wrapping ErrBadBundle, before anything is
// written to stateDir or removed from bootDir.
func ImportBundle(bootDir, stateDir string) (imported bool, err error) {
	src := filepath.Join(bootDir, BundleDir)
	raw, err := os.ReadFile(filepath.Join(src, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(src); serr == nil {
			return false, fmt.Errorf("%w: %s has no %s: it was not written by 'trackerctl image stamp'; stamp the image again", ErrBadBundle, src, ManifestName)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bootstrap: read manifest: %w", err)
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return false, fmt.Errorf("%w (in %s)", err, src)
	}

	if err := prepareStateDir(stateDir); err != nil {
		return false, err
	}
	if old, err := os.ReadFile(filepath.Join(stateDir, ManifestName)); err == nil && bytes.Equal(old, raw) {
		return false, scrubSecrets(src, m)
	}

	// Read and check everything before writing anything.
	contents := make([][]byte, len(m.Files))
	for i, f := range m.Files {
		data, err := readBounded(filepath.Join(src, f.Name))
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%w: %s is listed in the manifest but missing from %s; stamp the image again", ErrBadBundle, f.Name, src)
		}
		if err != nil {
			return false, err
		}
		if err := f.Check(data); err != nil {
			return false, err
		}
		contents[i] = data
	}

	for i, f := range m.Files {
		if err := writeAtomic(stateDir, f.Name, contents[i]); err != nil {
			return false, err
		}
	}
	// The manifest goes last: its presence marks the import as complete.
	if err := writeAtomic(stateDir, ManifestName, raw); err != nil {
		return false, err
	}
	if err := syncDir(stateDir); err != nil {
		return false, err
	}
	return true, scrubSecrets(src, m)
}

// readBounded reads a regular file of at most MaxFileSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadBundle, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadBundle, path, MaxFileSize)
	}
	return data, nil
}

// prepareStateDir creates stateDir with mode 0700 if needed and tightens an
// existing one to 0700.
func prepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bootstrap: state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("bootstrap: state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("bootstrap: state directory %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("bootstrap: state directory: %w", err)
		}
	}
	return nil
}

// writeAtomic writes dir/name with mode 0600, owned like dir: a temporary
// file, fsync, rename. The caller syncs dir.
func writeAtomic(dir, name string, data []byte) (err error) {
	dst := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, ".import-*")
	if err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	if err := chownLike(tmp, dir); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("bootstrap: write %s: sync: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", dst, err)
	}
	return nil
}

// scrubSecrets overwrites each private key file still in src with zeros,
// then deletes it and syncs src.
func scrubSecrets(src string, m *Manifest) error {
	var removed bool
	for _, f := range m.Files {
		path := filepath.Join(src, f.Name)
		data, err := readBounded(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		// The content decides too, in case the manifest was written by a
		// tool that did not flag the key.
		if !f.Secret && !IsPrivateKey(data) {
			continue
		}
		if err := scrub(path, len(data)); err != nil {
			return err
		}
		removed = true
	}
	if removed {
		return syncDir(src)
	}
	return nil
}

func scrub(path string, size int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("bootstrap: remove key from boot partition: %w", err)
	}
	_, werr := f.Write(make([]byte, size))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("bootstrap: overwrite %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("bootstrap: remove key from boot partition: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bootstrap: sync %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("bootstrap: sync %s: %w", dir, err)
	}
	return nil
}

// readManifest reads and validates dir/manifest.json.
func readManifest(dir string) (*Manifest, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return ParseManifest(raw)
}
