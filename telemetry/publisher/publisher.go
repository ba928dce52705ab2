// Package publisher moves records from the durable buffer to IoT Hub.
//
// It has two lanes. The live lane sends the newest reading and every alert
// at once, one record per message. The backlog lane drains what is left,
// oldest first, several records per message (capped in records and bytes),
// at a bounded rate so a fleet coming back into coverage does not trip the
// hub's throttle.
//
// A record leaves the buffer only after the hub acknowledged (PUBACK) the
// message carrying it on the connection that sent it. A message whose fate
// is unknown (the connection dropped before its PUBACK) is resent verbatim,
// with the same $.mid, before anything else, so a duplicate downstream is
// always recognisable by its message id.
//
// The resend state lives in memory: after a power cut (or a stop while a
// PUBACK was on its way) a record whose acknowledgement never reached the
// buffer is sent again, possibly batched differently and so under another
// $.mid. Every record carries the device's sequence number, so consumers
// deduplicate on (device, seq); within one run, duplicates always share
// their $.mid.
//
// One goroutine ([Publisher.Run]) does all publishing; the other methods
// are safe to call from any goroutine.
package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coldchain/tracker/telemetry"
)

// Entry is a stored record as the buffer returns it.
type Entry struct {
	Seq  uint64
	Data []byte // a telemetry.Record encoded with Record.Marshal, Seq unset
}

// Store is the durable buffer as the publisher uses it.
type Store interface {
	// Peek returns up to max of the oldest unacknowledged records.
	Peek(max int) ([]Entry, error)
	// Ack removes records for good.
	Ack(seqs ...uint64) error
	// Depth returns the number of unacknowledged records.
	Depth() int
	// Sync commits appended records now.
	Sync() error
}

// Message is a device-to-cloud message.
type Message struct {
	Body       []byte
	MessageID  string
	Properties map[string]string // application properties
	Created    time.Time
}

// Sender publishes one message and returns nil only after the hub
// acknowledged it on the connection that sent it.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// ErrNotSent is what a Sender wraps when the message certainly did not
// leave the device (not connected): the records stay for the backlog.
var ErrNotSent = errors.New("publisher: message not sent")

// ErrRejected is what a Sender wraps when the message can never be sent
// (refused as invalid before it left): retrying would block the queue
// forever, so its records are dropped and counted.
var ErrRejected = errors.New("publisher: message rejected")

// Options configures a Publisher.
type Options struct {
	DeviceID        string
	MaxRecords      int     // records per backlog message
	MaxMessageBytes int     // body size cap
	DrainRate       float64 // backlog messages per second; 0 = unlimited
	Retime          func(r *telemetry.Record)
	Now             func() time.Time
	Logger          *slog.Logger
	// Retry is the pause after a failed send before trying again.
	Retry time.Duration
}

// Stats counts what was published.
type Stats struct {
	Records  uint64    `json:"records"`
	Messages uint64    `json:"messages"`
	Alerts   uint64    `json:"alerts"`
	Resent   uint64    `json:"resent"`
	LastSent time.Time `json:"lastSent"`
	LastErr  string    `json:"lastError,omitempty"`
	// Rejected counts records dropped because their message was invalid.
	Rejected uint64 `json:"rejected"`
}

// Publisher sends buffered records; see the package documentation.
type Publisher struct {
	store  Store
	sender Sender
	opts   Options
	log    *slog.Logger

	wake chan struct{}
	live chan liveItem

	mu      sync.Mutex
	stats   Stats
	retry   *Message // a message whose PUBACK never came: resent first
	retrySq []uint64
	flushes int // active Flush calls: drain at full speed
	// sent remembers recently acknowledged sequence numbers, so a live item
	// whose record already went out in a backlog message is not sent twice.
	sent     map[uint64]struct{}
	sentRing []uint64
	sentNext int
}

type liveItem struct {
	seq uint64
	rec telemetry.Record
}

// New returns a Publisher.
func New(store Store, sender Sender, opts Options) *Publisher {
	if opts.MaxRecords <= 0 {
		opts.MaxRecords = 50
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Retry <= 0 {
		opts.Retry = time.Second
	}
	return &Publisher{store: store, sender: sender, opts: opts, log: opts.Logger,
		wake: make(chan struct{}, 1), live: make(chan liveItem, 64),
		sent: make(map[uint64]struct{}), sentRing: make([]uint64, 0, 4096)}
}

// Live offers a just-appended record to the live lane. If the lane is full
// the record simply waits in the backlog.
func (p *Publisher) Live(seq uint64, r telemetry.Record) {
	select {
	case p.live <- liveItem{seq, r}:
	default:
	}
	p.Wake()
}

// Wake tells the publisher there may be work: new records, or a connection.
func (p *Publisher) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Run publishes until ctx ends. beat is called after every pass, for the
// watchdog.
func (p *Publisher) Run(ctx context.Context, beat func()) error {
	var lastBacklog time.Time
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		progressed, err := p.pass(ctx, &lastBacklog)
		beat()
		if ctx.Err() != nil {
			return nil
		}
		wait := time.Second
		if err != nil {
			wait = p.opts.Retry
		} else if progressed {
			wait = 0
		}
		if wait == 0 {
			continue
		}
		idle.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-idle.C:
		}
	}
}

// pass does one unit of work: the retry message, then live items, then one
// backlog message. It reports whether it sent anything.
func (p *Publisher) pass(ctx context.Context, lastBacklog *time.Time) (bool, error) {
	p.mu.Lock()
	retry, retrySeqs := p.retry, p.retrySq
	p.mu.Unlock()
	if retry != nil {
		if err := p.send(ctx, *retry, retrySeqs, true); err != nil {
			return false, err
		}
		return true, nil
	}
	select {
	case it := <-p.live:
		p.mu.Lock()
		_, done := p.sent[it.seq]
		p.mu.Unlock()
		if done {
			return true, nil
		}
		it.rec.Seq = it.seq
		m, err := p.message([]telemetry.Record{it.rec}, "live")
		if err != nil {
			return false, err
		}
		if err := p.send(ctx, m, []uint64{it.seq}, false); err != nil {
			return false, err
		}
		return true, nil
	default:
	}
	p.mu.Lock()
	flushing := p.flushes > 0
	p.mu.Unlock()
	if r := p.opts.DrainRate; r > 0 && !flushing {
		if gap := time.Duration(float64(time.Second) / r); p.opts.Now().Sub(*lastBacklog) < gap {
			return false, nil
		}
	}
	entries, err := p.store.Peek(p.opts.MaxRecords)
	if err != nil {
		return false, fmt.Errorf("publisher: peek: %w", err)
	}
	if len(entries) == 0 {
		return false, nil
	}
	recs, seqs, bad := p.decode(entries)
	if len(bad) > 0 {
		// Undecodable records can never be sent; acknowledge them so they
		// do not block the queue, and say so.
		p.log.Error("dropping undecodable buffered records", "seqs", bad)
		if err := p.store.Ack(bad...); err != nil {
			return false, err
		}
	}
	if len(recs) == 0 {
		return true, nil
	}
	m, used, err := p.pack(recs)
	if err != nil {
		return false, err
	}
	*lastBacklog = p.opts.Now()
	if err := p.send(ctx, m, seqs[:used], false); err != nil {
		return false, err
	}
	return true, nil
}

func (p *Publisher) decode(entries []Entry) (recs []telemetry.Record, seqs, bad []uint64) {
	for _, e := range entries {
		r, err := telemetry.UnmarshalRecord(e.Data)
		if err != nil {
			bad = append(bad, e.Seq)
			continue
		}
		r.Seq = e.Seq
		recs = append(recs, *r)
		seqs = append(seqs, e.Seq)
	}
	return recs, seqs, bad
}

// pack builds a backlog message from the longest prefix of recs that fits
// the byte cap (at least one record).
func (p *Publisher) pack(recs []telemetry.Record) (Message, int, error) {
	n := len(recs)
	for {
		m, err := p.message(recs[:n], "backlog")
		if err != nil {
			return Message{}, 0, err
		}
		if len(m.Body) <= p.opts.MaxMessageBytes || n == 1 {
			return m, n, nil
		}
		// Shrink proportionally, at least by one.
		next := n * p.opts.MaxMessageBytes / len(m.Body)
		if next >= n {
			next = n - 1
		}
		if next < 1 {
			next = 1
		}
		n = next
	}
}

// message encodes records as one message.
func (p *Publisher) message(recs []telemetry.Record, lane string) (Message, error) {
	seqs := make([]uint64, len(recs))
	alert := false
	for i := range recs {
		if p.opts.Retime != nil {
			p.opts.Retime(&recs[i])
		}
		seqs[i] = recs[i].Seq
		alert = alert || len(recs[i].Alerts) > 0
	}
	body, err := json.Marshal(telemetry.Batch{V: telemetry.SchemaVersion, Device: p.opts.DeviceID, Records: recs})
	if err != nil {
		return Message{}, fmt.Errorf("publisher: encode: %w", err)
	}
	props := map[string]string{"lane": lane, "records": fmt.Sprint(len(recs))}
	if alert {
		props["alert"] = "true"
	}
	return Message{Body: body, MessageID: telemetry.MessageID(p.opts.DeviceID, seqs), Properties: props, Created: p.opts.Now()}, nil
}

// send publishes m and acknowledges seqs after the PUBACK. A message that
// may have reached the hub becomes the retry message.
func (p *Publisher) send(ctx context.Context, m Message, seqs []uint64, isRetry bool) error {
	err := p.sender.Send(ctx, m)
	if errors.Is(err, ErrRejected) {
		p.log.Error("message rejected; dropping its records", "message_id", m.MessageID, "records", len(seqs), "err", err)
		if aerr := p.store.Ack(seqs...); aerr != nil {
			return fmt.Errorf("publisher: ack: %w", aerr)
		}
		p.mu.Lock()
		p.stats.Rejected += uint64(len(seqs))
		if isRetry {
			p.retry, p.retrySq = nil, nil
		}
		p.mu.Unlock()
		return err
	}
	if err != nil {
		p.mu.Lock()
		p.stats.LastErr = err.Error()
		if !errors.Is(err, ErrNotSent) && ctx.Err() == nil {
			p.retry, p.retrySq = &m, seqs
		}
		p.mu.Unlock()
		return err
	}
	if err := p.store.Ack(seqs...); err != nil {
		return fmt.Errorf("publisher: ack: %w", err)
	}
	p.mu.Lock()
	for _, sq := range seqs {
		p.remember(sq)
	}
	if isRetry {
		p.retry, p.retrySq = nil, nil
		p.stats.Resent++
	}
	p.stats.Records += uint64(len(seqs))
	p.stats.Messages++
	if m.Properties["alert"] == "true" {
		p.stats.Alerts++
	}
	p.stats.LastSent = p.opts.Now()
	p.stats.LastErr = ""
	p.mu.Unlock()
	return nil
}

// Flush drains the buffer at full speed until it is empty or ctx ends, and
// returns the number of records still unsent.
func (p *Publisher) Flush(ctx context.Context) (int, error) {
	p.mu.Lock()
	p.flushes++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.flushes--
		p.mu.Unlock()
	}()
	if err := p.store.Sync(); err != nil {
		return p.store.Depth(), err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		p.Wake()
		if d := p.store.Depth(); d == 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return p.store.Depth(), ctx.Err()
		case <-t.C:
		}
	}
}

// remember adds seq to the bounded set of recently sent records. Called
// with p.mu held.
func (p *Publisher) remember(seq uint64) {
	if len(p.sentRing) < cap(p.sentRing) {
		p.sentRing = append(p.sentRing, seq)
	} else {
		delete(p.sent, p.sentRing[p.sentNext])
		p.sentRing[p.sentNext] = seq
		p.sentNext = (p.sentNext + 1) % len(p.sentRing)
	}
	p.sent[seq] = struct{}{}
}
