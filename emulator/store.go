package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Buckets of the state database.
const (
	bucketMeta          = "meta"
	bucketGroups        = "enrollmentGroups"
	bucketEnrollments   = "enrollments"
	bucketRegistrations = "registrations"
	bucketDevices       = "devices"
	bucketTwins         = "twins"
	bucketHubCAs        = "hubCAs"
	bucketRegCounts     = "registerCounts"
)

var allBuckets = []string{bucketMeta, bucketGroups, bucketEnrollments, bucketRegistrations,
	bucketDevices, bucketTwins, bucketHubCAs, bucketRegCounts}

// store is the emulator's durable state: one bbolt file with a bucket per
// kind of object, each value JSON. Writes go through bbolt's Batch, so
// concurrent registrations share commits (and fsyncs) while each caller still
// returns only once its change is durable.
type store struct {
	db *bolt.DB
}

// ErrStateLocked means another process holds the state database.
var ErrStateLocked = errors.New("emulator: state directory is in use by another emulator")

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is locked; stop the other emulator or use another --state", ErrStateLocked, path)
		}
		return nil, fmt.Errorf("emulator: open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("emulator: initialise state %s: %w", path, err)
	}
	// A registration is two or three small puts; wait at most a few
	// milliseconds to gather concurrent ones into one commit.
	db.MaxBatchDelay = 2 * time.Millisecond
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) view(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

// update runs fn in a write transaction shared with concurrent callers. fn may
// run more than once (when another function of the same batch fails), so it
// must assign its results afresh on every run.
func (s *store) update(fn func(tx *bolt.Tx) error) error { return s.db.Batch(fn) }

func getJSON[T any](tx *bolt.Tx, bucket, key string) (T, bool, error) {
	var v T
	raw := tx.Bucket([]byte(bucket)).Get([]byte(key))
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, fmt.Errorf("emulator: decode %s/%s: %w", bucket, key, err)
	}
	return v, true, nil
}

func putJSON(tx *bolt.Tx, bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("emulator: encode %s/%s: %w", bucket, key, err)
	}
	return tx.Bucket([]byte(bucket)).Put([]byte(key), raw)
}

func deleteKey(tx *bolt.Tx, bucket, key string) error {
	return tx.Bucket([]byte(bucket)).Delete([]byte(key))
}

func forEachJSON[T any](tx *bolt.Tx, bucket string, fn func(key string, v T) error) error {
	return tx.Bucket([]byte(bucket)).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("emulator: decode %s/%s: %w", bucket, k, err)
		}
		return fn(string(k), v)
	})
}

// meta is the emulator's identity, created on first run.
type meta struct {
	IDScope string    `json:"idScope"`
	DPSKey  string    `json:"dpsKey"`
	HubKey  string    `json:"hubKey"`
	Created time.Time `json:"created"`
}
