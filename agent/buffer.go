package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/buffer"
	"github.com/coldchain/tracker/telemetry/publisher"
)

// bufferStore adapts the durable buffer to the sampler and the publisher.
type bufferStore struct {
	b        *buffer.Buffer
	maxBytes int
}

// bufferStats is the part of the buffer's counters the status shows.
type bufferStats struct {
	Depth   int
	Bytes   int64
	Oldest  time.Time
	NextSeq uint64
	Evicted uint64
}

// openBuffer opens the buffer in the state directory. A non-nil Recovery
// says what the buffer found and repaired (an unclean shutdown, a damaged
// file); it is logged here, and the caller shows it in the status.
func openBuffer(cfg *config.Config, log *slog.Logger) (*bufferStore, *buffer.Recovery, error) {
	path := filepath.Join(cfg.StateDir, "buffer.db")
	b, rec, err := buffer.Open(path, buffer.Options{
		Sync:          buffer.SyncPolicy(cfg.Buffer.Sync),
		BatchRecords:  cfg.Buffer.BatchRecords,
		BatchInterval: cfg.Buffer.BatchInterval.D(),
		MaxBytes:      int64(cfg.Buffer.MaxBytes),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer %s: %w", path, err)
	}
	if rec != nil {
		log.Warn("buffer recovered", "recovery", rec.String())
	}
	return &bufferStore{b: b, maxBytes: int(cfg.Hub.MaxMessageBytes)}, rec, nil
}

// AppendRecord stores r (its Seq is assigned by the buffer).
func (s *bufferStore) AppendRecord(r *telemetry.Record) (uint64, error) {
	class := buffer.Routine
	switch {
	case r.Kind == telemetry.KindSeal || r.Kind == telemetry.KindGap:
		class = buffer.Event
	case len(r.Alerts) > 0:
		class = buffer.Alert
	}
	data, err := r.Marshal()
	if err != nil {
		return 0, err
	}
	return s.b.Append(class, r.Time, data)
}

// Peek implements publisher.Store.
func (s *bufferStore) Peek(max int) ([]publisher.Entry, error) {
	es, err := s.b.Peek(max, s.maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]publisher.Entry, len(es))
	for i, e := range es {
		out[i] = publisher.Entry{Seq: e.Seq, Data: e.Data}
	}
	return out, nil
}

// Ack implements publisher.Store.
func (s *bufferStore) Ack(seqs ...uint64) error { return s.b.Ack(seqs...) }

// Sync implements publisher.Store.
func (s *bufferStore) Sync() error { return s.b.Sync() }

// Depth implements publisher.Store: records not yet acknowledged,
// committed or not.
func (s *bufferStore) Depth() int { return unsent(s.b.Stats()) }

func (s *bufferStore) Stats() bufferStats {
	st := s.b.Stats()
	return bufferStats{Depth: unsent(st), Bytes: st.Bytes, Oldest: st.OldestTime, NextSeq: st.NextSeq, Evicted: st.Evicted}
}

// unsent counts the records not yet acknowledged, committed or not.
func unsent(st buffer.Stats) int { return max(st.Depth+st.Pending-st.PendingAcks, 0) }

func (s *bufferStore) Close() error { return s.b.Close() }
