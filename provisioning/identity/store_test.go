package identity

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
	"github.com/google/go-cmp/cmp"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	old := syscall.Umask(0) // the worst umask: Open must still end at 0700
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "var", "lib", "trackerd")
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("state directory mode %04o, want 0700", m)
	}
}

func TestOpenRepairsMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("state directory mode %04o after Open, want 0700", m)
	}
}

func TestOpenRelativePathIsAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	s, err := Open("state")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(s.Dir()) || filepath.Base(s.Dir()) != "state" {
		t.Errorf("Dir() = %q, want an absolute path ending in state", s.Dir())
	}
}

func TestOpenRefuses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); !errors.Is(err, ErrStateDir) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Open(file) = %v, want ErrStateDir saying not a directory", err)
	}
	if _, err := Open(""); !errors.Is(err, ErrStateDir) {
		t.Errorf("Open(\"\") = %v, want ErrStateDir", err)
	}
}

func TestOpenRefusesForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "foreign")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if !errors.Is(err, ErrStateDir) || !strings.Contains(err.Error(), "uid 4242") || !strings.Contains(err.Error(), "chown") {
		t.Errorf("Open(foreign) = %v, want ErrStateDir naming uid 4242 and chown", err)
	}
}

func testAssignment() *Assignment {
	return &Assignment{
		AssignedHub:    "hub1.azure-devices.net",
		DeviceID:       "tracker-0001",
		RegistrationID: "tracker-0001",
		Substatus:      "initialAssignment",
		OperationID:    "4.d0a671905ea5b2c8.e7173b7b",
		ETag:           "IjYxMDA4ZDQ2In0=",
		AssignedAt:     time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC),
		Result:         json.RawMessage(`{"registrationId":"tracker-0001","assignedHub":"hub1.azure-devices.net","deviceId":"tracker-0001","status":"assigned"}`),
	}
}

func TestAssignmentRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.Assignment(); !errors.Is(err, ErrNotProvisioned) || a != nil {
		t.Fatalf("Assignment() on empty store = %v, %v; want nil, ErrNotProvisioned", a, err)
	}
	var ce *CorruptError
	if _, err := s.Assignment(); errors.As(err, &ce) {
		t.Errorf("absent file reported as corrupt: %v", err)
	}

	want := testAssignment()
	if err := s.SaveAssignment(want); err != nil {
		t.Fatalf("SaveAssignment: %v", err)
	}
	got, err := s.Assignment()
	if err != nil {
		t.Fatalf("Assignment: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Assignment() mismatch (-want +got):\n%s", diff)
	}
	if m := mode(t, filepath.Join(s.Dir(), AssignmentFile)); m != 0o600 {
		t.Errorf("assignment file mode %04o, want 0600", m)
	}

	// Replace it: the new one wins, and no temporary file is left behind.
	want2 := testAssignment()
	want2.AssignedHub = "hub2.azure-devices.net"
	want2.Substatus = "reprovisionedToInitialAssignment"
	if err := s.SaveAssignment(want2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Assignment(); err != nil || got.AssignedHub != want2.AssignedHub {
		t.Errorf("Assignment() after replace = %+v, %v; want hub %s", got, err, want2.AssignedHub)
	}
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != AssignmentFile {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("state directory holds %v, want only %s", names, AssignmentFile)
	}

	if err := s.ClearAssignment(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Assignment(); !errors.Is(err, ErrNotProvisioned) {
		t.Errorf("Assignment() after Clear = %v, want ErrNotProvisioned", err)
	}
	if err := s.ClearAssignment(); err != nil {
		t.Errorf("ClearAssignment() twice = %v, want nil", err)
	}
}

func TestSaveAssignmentRefusesIncomplete(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(a *Assignment){
		"no hub":      func(a *Assignment) { a.AssignedHub = "" },
		"no device":   func(a *Assignment) { a.DeviceID = "" },
		"bad result":  func(a *Assignment) { a.Result = json.RawMessage(`{"x":`) },
		"nil pointer": nil,
	} {
		t.Run(name, func(t *testing.T) {
			var a *Assignment
			if mutate != nil {
				a = testAssignment()
				mutate(a)
			}
			if err := s.SaveAssignment(a); err == nil {
				t.Errorf("SaveAssignment(%s) = nil, want error", name)
			}
			if _, err := os.Stat(filepath.Join(s.Dir(), AssignmentFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused assignment was written")
			}
		})
	}
}

func TestAssignmentCorrupt(t *testing.T) {
	valid, err := json.Marshal(assignmentFile{Version: assignmentVersion, Assignment: *testAssignment()})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"empty":            nil,
		"whitespace":       []byte("  \n"),
		"garbage":          []byte("\x00\x01\x02 not json"),
		"truncated":        valid[:len(valid)/2],
		"no hub":           []byte(`{"version":1,"deviceId":"d"}`),
		"no device":        []byte(`{"version":1,"assignedHub":"h"}`),
		"wrong version":    []byte(`{"version":7,"assignedHub":"h","deviceId":"d"}`),
		"no version":       []byte(`{"assignedHub":"h","deviceId":"d"}`),
		"unknown field":    []byte(`{"version":1,"assignedHub":"h","deviceId":"d","colour":"red"}`),
		"trailing data":    append(append([]byte{}, valid...), []byte(`{"version":1}`)...),
		"array":            []byte(`[1,2,3]`),
		"bad time":         []byte(`{"version":1,"assignedHub":"h","deviceId":"d","assignedAt":"yesterday"}`),
		"oversized":        append([]byte(`{"version":1,"assignedHub":"h","deviceId":"d","etag":"`), make([]byte, maxAssignmentSize)...),
		"result not JSON":  []byte(`{"version":1,"assignedHub":"h","deviceId":"d","result":"x"}`),
		"type mismatch":    []byte(`{"version":"1","assignedHub":"h","deviceId":"d"}`),
		"null":             []byte(`null`),
		"nested garbage":   []byte(`{"version":1,"assignedHub":{"a":1},"deviceId":"d"}`),
		"half a rewrite":   append(valid[:len(valid)-1:len(valid)-1], []byte("\x00\x00\x00")...),
		"latin-1 nonsense": []byte{0x7b, 0xe9, 0xe8, 0x7d},
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(s.Dir(), AssignmentFile)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := s.Assignment()
			if a != nil {
				t.Errorf("Assignment() = %+v, want nil", a)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Path != path {
				t.Fatalf("Assignment() error = %v, want *CorruptError for %s", err, path)
			}
			if !errors.Is(err, ErrNotProvisioned) || !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v does not match ErrNotProvisioned and ErrCorrupt", err)
			}
			// A new registration replaces the damaged file.
			if err := s.SaveAssignment(testAssignment()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Assignment(); err != nil {
				t.Errorf("Assignment() after save = %v", err)
			}
		})
	}
}

func TestAssignmentUnreadable(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the file should be cannot be read: an I/O error,
	// not "corrupt".
	if err := os.Mkdir(filepath.Join(s.Dir(), AssignmentFile), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = s.Assignment()
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("Assignment() with a directory in place = %v, want a read error", err)
	}
}

func FuzzDecodeAssignment(f *testing.F) {
	valid, err := json.Marshal(assignmentFile{Version: assignmentVersion, Assignment: *testAssignment()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"version":1,"assignedHub":"h","deviceId":"d"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decodeAssignment(data)
		if err != nil {
			return
		}
		if a.AssignedHub == "" || a.DeviceID == "" {
			t.Fatalf("decodeAssignment accepted %q without hub or device", data)
		}
		// What decodes must save and decode to the same value.
		out, err := encodeAssignment(a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := decodeAssignment(out)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if diff := cmp.Diff(a, b); diff != "" {
			t.Fatalf("round trip mismatch:\n%s", diff)
		}
	})
}

func TestImportIdentity(t *testing.T) {
	ca := newCA(t, true)
	dev, err := ca.IssueDevice("tracker-0010", pki.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	certPath, keyPath := writeFiles(t, src, dev.Chain, keyPEM(t, dev), 0o600)
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Identity(); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("Identity() on empty store = %v, want ErrNoIdentity", err)
	}
	if _, err := s.ImportIdentity(certPath, keyPath); err != nil {
		t.Fatalf("ImportIdentity: %v", err)
	}
	if m := mode(t, s.KeyPath()); m != 0o600 {
		t.Errorf("imported key mode %04o, want 0600", m)
	}
	id, err := s.Identity()
	if err != nil {
		t.Fatalf("Identity: %v", err)
	}
	if id.RegistrationID != "tracker-0010" || len(id.Chain) != 2 || !id.Chain[0].Equal(dev.Leaf) {
		t.Errorf("Identity() = %v, want tracker-0010 with its chain", id)
	}

	// A bad source is refused and the imported identity stays as it was.
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportIdentity(certPath, keyPath); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("ImportIdentity(0644 key) = %v, want ErrKeyPermissions", err)
	}
	if _, err := s.Identity(); err != nil {
		t.Errorf("Identity() after refused import = %v", err)
	}
}
