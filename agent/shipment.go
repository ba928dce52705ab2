package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"

	"github.com/coldchain/tracker/provisioning/pki"
)

// shipmentState remembers sealed shipments, so a record taken after
// delivery is never attributed to the delivered shipment, even after a
// restart with the old shipment id still in the config file.
type shipmentState struct {
	path   string
	mu     sync.Mutex
	Sealed []string `json:"sealed"`
}

// maxSealed bounds the remembered shipments.
const maxSealed = 100

func loadShipment(path string) (*shipmentState, error) {
	s := &shipmentState{path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shipment state: %w", err)
	}
	if err := json.Unmarshal(data, s); err != nil {
		// A damaged file must not stop the tracker: start over, loudly.
		return &shipmentState{path: path}, nil
	}
	return s, nil
}

func (s *shipmentState) isSealed(id string) bool {
	if id == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.Sealed, id)
}

func (s *shipmentState) seal(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.Sealed, id) {
		s.Sealed = append(s.Sealed, id)
		if len(s.Sealed) > maxSealed {
			s.Sealed = s.Sealed[len(s.Sealed)-maxSealed:]
		}
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(s.path, data, 0o600)
}
