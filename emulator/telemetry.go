package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Message is a device-to-cloud message as the hub received it.
type Message struct {
	// Seq is the hub's sequence number (x-opt-sequence-number), from 1,
	// continuing across restarts.
	Seq int64
	// DeviceID is the sending device (iothub-connection-device-id).
	DeviceID string
	// EnqueuedTime is when the hub accepted the message.
	EnqueuedTime time.Time
	// Payload is the message body.
	Payload []byte
	// System holds the system properties under the names
	// "az iot hub monitor-events" prints: message_id, correlation_id,
	// user_id, to, content_type, content_encoding, absolute_expiry_time.
	System map[string]string
	// Properties holds the application properties, URL-decoded.
	Properties map[string]string
	// Interface and Component are the $.ifid and $.sub system properties.
	Interface string
	Component string
	// Topic is the MQTT topic the message was published on.
	Topic string
	// Offset is the message's byte offset in telemetry.jsonl.
	Offset int64
}

// MessageID returns the $.mid system property.
func (m Message) MessageID() string { return m.System["message_id"] }

// Telemetry returns the device-to-cloud messages received since start (the
// most recent TelemetryMemory ones), oldest first. Messages from an earlier
// run are in telemetry.jsonl only.
func (e *Emulator) Telemetry() []Message {
	if e.sink == nil {
		return nil
	}
	return e.sink.feed.snapshot()
}

// WaitTelemetry returns the first message, already received or future, for
// which match returns true, or ctx's error. match runs under a lock: it must
// not call the emulator.
func (e *Emulator) WaitTelemetry(ctx context.Context, match func(Message) bool) (Message, error) {
	if e.sink == nil {
		var zero Message
		return zero, ErrNotStarted
	}
	return e.sink.feed.wait(ctx, match)
}

// monitorEvent is one line of telemetry.jsonl, shaped like the output of
// "az iot hub monitor-events --properties all".
type monitorEvent struct {
	Event monitorBody `json:"event"`
}

type monitorBody struct {
	Origin      string            `json:"origin"`
	Module      string            `json:"module"`
	Interface   string            `json:"interface"`
	Component   string            `json:"component"`
	Properties  monitorProperties `json:"properties"`
	Annotations monitorAnnotation `json:"annotations"`
	Payload     json.RawMessage   `json:"payload"`
}

type monitorProperties struct {
	System      map[string]string `json:"system"`
	Application map[string]string `json:"application"`
}

type monitorAnnotation struct {
	DeviceID         string `json:"iothub-connection-device-id"`
	AuthMethod       string `json:"iothub-connection-auth-method"`
	AuthGenerationID string `json:"iothub-connection-auth-generation-id"`
	EnqueuedTime     int64  `json:"iothub-enqueuedtime"`
	MessageSource    string `json:"iothub-message-source"`
	InterfaceName    string `json:"iothub-interface-name,omitempty"`
	SequenceNumber   int64  `json:"x-opt-sequence-number"`
	Offset           string `json:"x-opt-offset"`
	XEnqueuedTime    int64  `json:"x-opt-enqueued-time"`
}

// telemetrySink appends messages to telemetry.jsonl: each line is written
// (one write call) before the device gets its PUBACK, and fsynced in batches
// by the housekeeping loop.
type telemetrySink struct {
	mu    sync.Mutex
	f     *os.File
	off   int64
	seq   int64
	dirty bool
	live  io.Writer
	feed  *feed[Message]
	buf   bytes.Buffer
}

func openSink(path string, live io.Writer, memory int) (*telemetrySink, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("emulator: open telemetry file: %w", err)
	}
	off, seq, err := recoverTail(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("emulator: telemetry file %s: %w", path, err)
	}
	s := &telemetrySink{f: f, off: off, seq: seq, live: live, feed: newFeed[Message](memory)}
	// The feed numbers its items itself; start it where the file ends.
	s.feed.seq = seq
	return s, nil
}

// recoverTail finds the end of the last complete line, truncates a torn
// line left by a crash, and reads the last sequence number.
func recoverTail(f *os.File) (off, seq int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	if size == 0 {
		return 0, 0, nil
	}
	// Read backwards until two newlines (or the start) bound the last line.
	const chunk = 64 << 10
	var tail []byte
	start := size
	for {
		n := int64(chunk)
		if start < n {
			n = start
		}
		start -= n
		b := make([]byte, n)
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, 0, err
		}
		tail = append(b, tail...)
		if start == 0 || bytes.Count(tail, []byte{'\n'}) >= 2 {
			break
		}
	}
	end := bytes.LastIndexByte(tail, '\n')
	if end < 0 { // one torn line and nothing else
		return 0, 0, f.Truncate(0)
	}
	complete := start + int64(end) + 1
	if complete != size {
		if err := f.Truncate(complete); err != nil {
			return 0, 0, err
		}
	}
	lineStart := bytes.LastIndexByte(tail[:end], '\n') + 1
	var ev monitorEvent
	if err := json.Unmarshal(tail[lineStart:end], &ev); err != nil {
		return 0, 0, fmt.Errorf("last line is not a telemetry event (%v); move the file away to start a new one", err)
	}
	return complete, ev.Event.Annotations.SequenceNumber, nil
}

// record numbers m, appends it to the file and the live output, and wakes
// waiters. It returns the stored copy.
func (s *telemetrySink) record(m Message, authMethod, generationID string) (Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return Message{}, ErrClosed
	}
	m.Seq = s.seq + 1
	m.Offset = s.off
	ms := m.EnqueuedTime.UnixMilli()
	ev := monitorEvent{Event: monitorBody{
		Origin:    m.DeviceID,
		Interface: m.Interface,
		Component: m.Component,
		Properties: monitorProperties{
			System:      nonNil(m.System),
			Application: nonNil(m.Properties),
		},
		Annotations: monitorAnnotation{
			DeviceID:         m.DeviceID,
			AuthMethod:       authMethod,
			AuthGenerationID: generationID,
			EnqueuedTime:     ms,
			MessageSource:    "Telemetry",
			InterfaceName:    m.Interface,
			SequenceNumber:   m.Seq,
			Offset:           fmt.Sprint(m.Offset),
			XEnqueuedTime:    ms,
		},
		Payload: payloadJSON(m.Payload, m.System["content_type"]),
	}}
	s.buf.Reset()
	enc := json.NewEncoder(&s.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return Message{}, fmt.Errorf("emulator: encode telemetry: %w", err)
	}
	n, err := s.f.WriteAt(s.buf.Bytes(), s.off)
	if err != nil {
		// Leave no torn line behind for the next message.
		s.f.Truncate(s.off)
		return Message{}, fmt.Errorf("emulator: append telemetry: %w", err)
	}
	s.off += int64(n)
	s.seq = m.Seq
	s.dirty = true
	if s.live != nil {
		s.live.Write(s.buf.Bytes())
	}
	s.feed.add(func(int64) Message { return m })
	return m, nil
}

func (s *telemetrySink) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || !s.dirty {
		return nil
	}
	s.dirty = false
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("emulator: fsync telemetry: %w", err)
	}
	return nil
}

func (s *telemetrySink) close() error {
	err := s.sync()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return err
	}
	cerr := s.f.Close()
	s.f = nil
	if cerr != nil {
		return errors.Join(err, fmt.Errorf("emulator: close telemetry: %w", cerr))
	}
	return err
}

// payloadJSON renders a body as monitor-events does: parsed JSON when the
// content type is JSON and the body parses, else a string.
func payloadJSON(body []byte, contentType string) json.RawMessage {
	if strings.Contains(strings.ToLower(contentType), "application/json") && json.Valid(body) {
		var out bytes.Buffer
		if json.Compact(&out, body) == nil {
			return out.Bytes()
		}
	}
	s := string(body)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	raw, _ := json.Marshal(s)
	return raw
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
