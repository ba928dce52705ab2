package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path so that readers see either the old
// file or the complete new one, even after a crash: it writes a temporary
// file in the same directory, fsyncs it, renames it over path and fsyncs the
// directory. The file gets exactly mode perm (the umask does not apply).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true)
}

// CreateFileAtomic is [WriteFileAtomic] for a file that must not exist yet:
// if path exists it returns an *ExistsError and leaves the file alone. The
// check and the creation are one atomic step.
func CreateFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, false)
}

// writeFile is WriteFileAtomic that, when replace is false, refuses to
// replace an existing path with an *ExistsError. The refusal is atomic too:
// the temporary file is hard-linked to path, which fails if path exists.
func writeFile(path string, data []byte, perm os.FileMode, replace bool) error {
	if err := writeFileNoDirSync(path, data, perm, replace); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeFileNoDirSync is writeFile without the fsync of the directory, for
// callers that write several files into one directory and sync it once.
func writeFileNoDirSync(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return errorf("pki: write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if err != nil || !replace {
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return errorf("pki: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return errorf("pki: write %s: sync: %w", path, err)
	}
	cerr := tmp.Close()
	tmp = nil
	if cerr != nil {
		return errorf("pki: write %s: close: %w", path, cerr)
	}
	if replace {
		if err := os.Rename(tmpName, path); err != nil {
			return errorf("pki: write %s: %w", path, err)
		}
	} else if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &ExistsError{Path: path}
		}
		return errorf("pki: write %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so that a rename or link in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return errorf("pki: sync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return errorf("pki: sync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return errorf("pki: sync directory %s: %w", dir, cerr)
	}
	return nil
}

// makePrivateDir creates dir (and missing parents) and makes dir itself
// mode 0700. It reports whether dir was created, in which case the caller
// syncs the parent (with syncNewDir) once the directory's content is
// durable.
func makePrivateDir(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); isNotExist(err) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, errorf("pki: create directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, errorf("pki: create directory: %w", err)
	}
	return created, nil
}

// syncNewDir fsyncs dir, and its parent when dir was just created, so that
// the files written into dir and dir's own entry are durable.
func syncNewDir(dir string, created bool) error {
	if err := syncDir(dir); err != nil {
		return err
	}
	if created {
		return syncDir(filepath.Dir(dir))
	}
	return nil
}

// checkAbsent returns an *ExistsError for the first of paths that exists.
func checkAbsent(paths ...string) error {
	for _, p := range paths {
		_, err := os.Lstat(p)
		if err == nil {
			return &ExistsError{Path: p}
		}
		if !isNotExist(err) {
			return errorf("pki: check %s: %w", p, err)
		}
	}
	return nil
}
