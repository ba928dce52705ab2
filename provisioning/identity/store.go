package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coldchain/tracker/provisioning/pki"
)

// File names inside the state directory.
const (
	AssignmentFile = "assignment.json"
	ChainFile      = "device.chain.pem"
	KeyFile        = "device.key.pem"
)

// assignmentVersion is written into assignment.json so a later format can
// be told apart.
const assignmentVersion = 1

// maxAssignmentSize bounds what Assignment reads: a real file is a few KiB,
// and a runaway file must not exhaust a small board's memory.
const maxAssignmentSize = 1 << 20

// Store is the identity store in one state directory. Create it with
// [Open].
type Store struct {
	dir string
	mu  sync.Mutex // serialises writers within the process
}

// Open returns the store in stateDir, creating the directory (and its
// parents) when missing. The directory itself is made mode 0700, repairing
// a looser mode. It is an error, wrapping [ErrStateDir], when stateDir is
// not a directory or belongs to another user.
func Open(stateDir string) (*Store, error) {
	if stateDir == "" {
		return nil, fmt.Errorf("%w: no state directory given", ErrStateDir)
	}
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("identity: state directory %s: %w", stateDir, err)
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("identity: create state directory: %w", err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: state directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory; remove it or set state_dir elsewhere", ErrStateDir, dir)
	}
	if err := checkOwner(dir, fi); err != nil {
		return nil, err
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("identity: make state directory %s private (mode 0700): %w", dir, err)
		}
	}
	return &Store{dir: dir}, nil
}

// Dir returns the absolute path of the state directory.
func (s *Store) Dir() string { return s.dir }

// Assignment is what the device keeps of a successful DPS registration:
// enough to connect to its IoT hub without registering again at every
// boot.
type Assignment struct {
	// AssignedHub is the host name of the IoT hub DPS assigned.
	AssignedHub string `json:"assignedHub"`
	// DeviceID is the device's identity in that hub.
	DeviceID string `json:"deviceId"`
	// RegistrationID is the DPS registration ID (the certificate CN).
	RegistrationID string `json:"registrationId"`
	// Substatus is DPS's substatus, such as "initialAssignment".
	Substatus string `json:"substatus,omitempty"`
	// OperationID is the DPS operation that produced the assignment.
	OperationID string `json:"operationId,omitempty"`
	// ETag is the registration record's etag.
	ETag string `json:"etag,omitempty"`
	// AssignedAt is when the device received the assignment, by the best
	// clock it had then.
	AssignedAt time.Time `json:"assignedAt"`
	// Result is the registrationState object exactly as DPS returned it.
	Result json.RawMessage `json:"result,omitempty"`
}

// assignmentFile is the on-disk form of an Assignment.
type assignmentFile struct {
	Version int `json:"version"`
	Assignment
}

func (a *Assignment) validate() error {
	switch {
	case a.AssignedHub == "":
		return errors.New("no assigned hub")
	case a.DeviceID == "":
		return errors.New("no device id")
	case len(a.Result) > 0 && (!json.Valid(a.Result) || bytes.TrimSpace(a.Result)[0] != '{'):
		return errors.New("result is not a JSON object")
	}
	return nil
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// Assignment returns the cached assignment. Without one it returns
// (nil, err) with err matching [ErrNotProvisioned]; when the file exists but
// is damaged, err is also a *[CorruptError] naming it. It never fails in a
// way that should stop the device from provisioning again, except when the
// file cannot be read at all (an I/O or permission error).
func (s *Store) Assignment() (*Assignment, error) {
	p := s.path(AssignmentFile)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotProvisioned, AssignmentFile, s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read assignment: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxAssignmentSize+1)); err != nil {
		return nil, fmt.Errorf("identity: read assignment %s: %w", p, err)
	}
	if buf.Len() > maxAssignmentSize {
		return nil, &CorruptError{Path: p, Err: fmt.Errorf("larger than %d bytes", maxAssignmentSize)}
	}
	a, err := decodeAssignment(buf.Bytes())
	if err != nil {
		return nil, &CorruptError{Path: p, Err: err}
	}
	return a, nil
}

// decodeAssignment parses and validates the content of assignment.json.
func decodeAssignment(data []byte) (*Assignment, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty file")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var af assignmentFile
	if err := dec.Decode(&af); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if af.Version != assignmentVersion {
		return nil, fmt.Errorf("format version %d, want %d", af.Version, assignmentVersion)
	}
	if err := af.Assignment.validate(); err != nil {
		return nil, err
	}
	a := af.Assignment
	return &a, nil
}

// SaveAssignment replaces the cached assignment atomically and durably
// (temporary file, fsync, rename, fsync of the directory). The file is
// mode 0600. An assignment without hub or device ID is refused.
func (s *Store) SaveAssignment(a *Assignment) error {
	if a == nil {
		return errors.New("identity: save assignment: nil assignment")
	}
	if err := a.validate(); err != nil {
		return fmt.Errorf("identity: save assignment: %w", err)
	}
	data, err := encodeAssignment(a)
	if err != nil {
		return fmt.Errorf("identity: save assignment: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := pki.WriteFileAtomic(s.path(AssignmentFile), data, 0o600); err != nil {
		return fmt.Errorf("identity: save assignment: %w", err)
	}
	return nil
}

// ClearAssignment removes the cached assignment, so that the next start
// registers with DPS again (after a deprovisioning, or when the hub
// refuses the device). Removing an absent assignment is not an error.
func (s *Store) ClearAssignment() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.Remove(s.path(AssignmentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("identity: clear assignment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("identity: clear assignment: %w", err)
	}
	return nil
}

// ChainPath is where [Store.ImportIdentity] puts the certificate chain.
func (s *Store) ChainPath() string { return s.path(ChainFile) }

// KeyPath is where [Store.ImportIdentity] puts the private key.
func (s *Store) KeyPath() string { return s.path(KeyFile) }

// Identity loads the identity imported into the store (see
// [Store.ImportIdentity]). Without one it returns an error wrapping
// [ErrNoIdentity].
func (s *Store) Identity() (*Identity, error) {
	_, cerr := os.Stat(s.ChainPath())
	_, kerr := os.Stat(s.KeyPath())
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoIdentity, s.dir)
	}
	return LoadFiles(s.ChainPath(), s.KeyPath())
}

// ImportIdentity validates the certificate chain and key in certPath and
// keyPath with [LoadFiles] and copies them into the store, the key with
// mode 0600, each file atomically. The key is written in PKCS#8 PEM form.
// It returns the imported identity. Keys held by hardware cannot be
// imported (they have no file).
func (s *Store) ImportIdentity(certPath, keyPath string) (*Identity, error) {
	id, err := LoadFiles(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(id.Key)
	if err != nil {
		return nil, fmt.Errorf("identity: import: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Key first: a chain without its key is reported as a key problem,
	// which is what it is.
	if err := pki.WriteFileAtomic(s.KeyPath(), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("identity: import key: %w", err)
	}
	if err := pki.WriteFileAtomic(s.ChainPath(), pki.EncodePEM(id.Chain...), 0o644); err != nil {
		return nil, fmt.Errorf("identity: import certificate chain: %w", err)
	}
	return id, nil
}

// syncDir fsyncs a directory so that a removal in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, cerr)
	}
	return nil
}

// encodeAssignment renders a for the assignment file, keeping Result as DPS
// sent it: no indenting, and no HTML escaping (json.Marshal would turn an
// "&" inside Result into "\u0026").
func encodeAssignment(a *Assignment) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(assignmentFile{Version: assignmentVersion, Assignment: *a}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
