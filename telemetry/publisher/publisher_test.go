package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// memStore is an in-memory Store.
type memStore struct {
	mu   sync.Mutex
	recs map[uint64][]byte
}

func newMemStore(n int) *memStore {
	s := &memStore{recs: map[uint64][]byte{}}
	for i := 1; i <= n; i++ {
		r := telemetry.Record{Kind: telemetry.KindReading, Time: time.Unix(int64(i), 0).UTC(), Clock: "system", Env: &telemetry.Env{TempC: 4, PressureHPa: 1000}}
		s.recs[uint64(i)], _ = r.Marshal()
	}
	return s
}

func (s *memStore) Peek(max int) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []uint64
	for k := range s.recs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var out []Entry
	for _, k := range keys {
		if len(out) == max {
			break
		}
		out = append(out, Entry{Seq: k, Data: s.recs[k]})
	}
	return out, nil
}

func (s *memStore) Ack(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range seqs {
		delete(s.recs, q)
	}
	return nil
}

func (s *memStore) Depth() int  { s.mu.Lock(); defer s.mu.Unlock(); return len(s.recs) }
func (s *memStore) Sync() error { return nil }

// scriptSender fails according to a script, then succeeds, recording every
// attempt.
type scriptSender struct {
	mu       sync.Mutex
	failures []error
	attempts []Message
	acked    []Message
}

func (s *scriptSender) Send(ctx context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, m)
	if len(s.failures) > 0 {
		err := s.failures[0]
		s.failures = s.failures[1:]
		return err
	}
	s.acked = append(s.acked, m)
	return nil
}

func seqsOf(t *testing.T, m Message) []uint64 {
	t.Helper()
	var b telemetry.Batch
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, r := range b.Records {
		out = append(out, r.Seq)
	}
	return out
}

func TestBacklogDrainsInOrderWithinCaps(t *testing.T) {
	store := newMemStore(23)
	snd := &scriptSender{}
	p := New(store, snd, Options{DeviceID: "dev1", MaxRecords: 10, MaxMessageBytes: 1200})
	var last time.Time
	for i := 0; i < 100 && store.Depth() > 0; i++ {
		if _, err := p.pass(context.Background(), &last); err != nil {
			t.Fatal(err)
		}
	}
	if store.Depth() != 0 {
		t.Fatalf("%d records left", store.Depth())
	}
	var all []uint64
	for _, m := range snd.acked {
		if len(m.Body) > 1200 && len(seqsOf(t, m)) > 1 {
			t.Errorf("message %s is %d bytes, over the 1200 cap", m.MessageID, len(m.Body))
		}
		seqs := seqsOf(t, m)
		if m.MessageID != telemetry.MessageID("dev1", seqs) {
			t.Errorf("message id %q does not match its records %v", m.MessageID, seqs)
		}
		all = append(all, seqs...)
	}
	for i, s := range all {
		if s != uint64(i+1) {
			t.Fatalf("sent order %v, want 1..23", all)
		}
	}
	if len(snd.acked) < 3 {
		t.Errorf("only %d messages: the caps were not applied", len(snd.acked))
	}
}

func TestAmbiguousFailureResendsVerbatim(t *testing.T) {
	store := newMemStore(5)
	lost := errors.New("connection lost before PUBACK")
	snd := &scriptSender{failures: []error{lost, fmt.Errorf("again: %w", ErrNotSent), lost}}
	p := New(store, snd, Options{DeviceID: "d", MaxRecords: 3})
	var last time.Time
	for i := 0; i < 20 && store.Depth() > 0; i++ {
		p.pass(context.Background(), &last)
		if i < 3 && store.Depth() != 5 {
			t.Fatalf("records acked after a failed send: depth %d", store.Depth())
		}
	}
	if store.Depth() != 0 {
		t.Fatalf("depth %d", store.Depth())
	}
	first := snd.attempts[0]
	for i := 1; i <= 3; i++ {
		if snd.attempts[i].MessageID != first.MessageID || string(snd.attempts[i].Body) != string(first.Body) {
			t.Errorf("attempt %d = %s, want a verbatim resend of %s", i, snd.attempts[i].MessageID, first.MessageID)
		}
	}
	if p.Stats().Resent != 1 || p.Stats().Records != 5 {
		t.Errorf("stats %+v", p.Stats())
	}
}

func TestLiveLaneFirstAndNoDoubleSend(t *testing.T) {
	store := newMemStore(3)
	snd := &scriptSender{}
	p := New(store, snd, Options{DeviceID: "d", MaxRecords: 50})
	var last time.Time
	// Backlog sends 1..3; a late live item for 3 must not be resent.
	p.pass(context.Background(), &last)
	r := telemetry.Record{Kind: telemetry.KindReading, Alerts: []string{"temp_high"}}
	p.Live(3, r)
	p.pass(context.Background(), &last)
	if len(snd.acked) != 1 {
		t.Fatalf("sent %d messages, want 1 (live item 3 was already delivered)", len(snd.acked))
	}
	store.recs[4], _ = r.Marshal()
	p.Live(4, r)
	p.pass(context.Background(), &last)
	if len(snd.acked) != 2 || snd.acked[1].Properties["alert"] != "true" || snd.acked[1].Properties["lane"] != "live" {
		t.Fatalf("live alert not sent as such: %+v", snd.acked)
	}
	if store.Depth() != 0 {
		t.Errorf("depth %d after live send", store.Depth())
	}
}

func TestDrainRateLimitsBacklog(t *testing.T) {
	store := newMemStore(10)
	snd := &scriptSender{}
	now := time.Unix(1000, 0)
	p := New(store, snd, Options{DeviceID: "d", MaxRecords: 1, DrainRate: 2, Now: func() time.Time { return now }})
	var last time.Time
	for i := 0; i < 5; i++ {
		p.pass(context.Background(), &last)
	}
	if len(snd.acked) != 1 {
		t.Fatalf("sent %d messages in no time at 2 msg/s, want 1", len(snd.acked))
	}
	now = now.Add(500 * time.Millisecond)
	p.pass(context.Background(), &last)
	if len(snd.acked) != 2 {
		t.Fatalf("sent %d after 500ms, want 2", len(snd.acked))
	}
}

func TestRejectedMessageIsDroppedNotRetried(t *testing.T) {
	store := newMemStore(2)
	snd := &scriptSender{failures: []error{fmt.Errorf("too big: %w", ErrRejected)}}
	p := New(store, snd, Options{DeviceID: "d", MaxRecords: 1})
	var last time.Time
	for i := 0; i < 5 && store.Depth() > 0; i++ {
		p.pass(context.Background(), &last)
	}
	if store.Depth() != 0 || p.Stats().Rejected != 1 || p.Stats().Records != 1 {
		t.Fatalf("depth %d, stats %+v: want the rejected record dropped and the other sent", store.Depth(), p.Stats())
	}
	if snd.attempts[0].MessageID == snd.attempts[1].MessageID {
		t.Errorf("the rejected message was retried")
	}
}
