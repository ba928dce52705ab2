package pki

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := join(dir, "f")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteFileAtomic(path, []byte("one"), 0o644); err != nil {
		t.Fatalf("WriteFileAtomic: %v", err)
	}
	if m := perm(t, path); m != 0o644 {
		t.Errorf("mode = %04o, want 0644 regardless of umask", m)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o600); err != nil {
		t.Fatalf("WriteFileAtomic (replace): %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "two" {
		t.Errorf("content = %q, want %q", data, "two")
	}
	if m := perm(t, path); m != 0o600 {
		t.Errorf("mode after replace = %04o, want 0600", m)
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only the file (no temporary files left)", names)
	}
	if err := WriteFileAtomic(join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("WriteFileAtomic into a missing directory succeeded")
	}
}

func TestCreateFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := join(dir, "f")
	if err := CreateFileAtomic(path, []byte("one"), 0o640); err != nil {
		t.Fatalf("CreateFileAtomic: %v", err)
	}
	if m := perm(t, path); m != 0o640 {
		t.Errorf("mode = %04o, want 0640", m)
	}
	err := CreateFileAtomic(path, []byte("two"), 0o600)
	var ee *ExistsError
	if !errors.As(err, &ee) || ee.Path != path || !errors.Is(err, ErrExists) {
		t.Fatalf("CreateFileAtomic over an existing file = %v, want *ExistsError for %s", err, path)
	}
	if data, _ := os.ReadFile(path); string(data) != "one" {
		t.Errorf("content = %q, want the original %q", data, "one")
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only the file", names)
	}
	if !strings.Contains(err.Error(), path+" exists") {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestMakePrivateDir(t *testing.T) {
	dir := join(t.TempDir(), "a", "b")
	if created, err := makePrivateDir(dir); err != nil || !created {
		t.Fatalf("makePrivateDir(new) = %v, %v; want created", created, err)
	}
	if m := perm(t, dir); m != 0o700 {
		t.Errorf("mode = %04o, want 0700", m)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if created, err := makePrivateDir(dir); err != nil || created {
		t.Fatalf("makePrivateDir(existing) = %v, %v; want not created", created, err)
	}
	if m := perm(t, dir); m != 0o700 {
		t.Errorf("mode of an existing 0755 directory = %04o, want 0700", m)
	}
}
