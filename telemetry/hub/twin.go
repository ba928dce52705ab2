package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// StatusError is a twin request the hub answered with an error status.
type StatusError struct {
	// Op is the request: "get twin" or "update reported properties".
	Op string
	// Status is the status from the response topic, e.g. 400 or 429.
	Status int
	// Message is the hub's message from the response body, if any.
	Message string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("hub: %s: status %d: %s", e.Op, e.Status, e.Message)
	}
	return fmt.Sprintf("hub: %s: status %d", e.Op, e.Status)
}

// Is makes a 429 response match [ErrThrottled].
func (e *StatusError) Is(target error) bool { return target == ErrThrottled && e.Status == 429 }

// request is a twin request waiting for its response.
type request struct {
	s  *session
	ch chan twinResponse
}

// GetTwin fetches the device twin and returns its desired and reported
// sections (each with its "$version"). It fails with [ErrNotConnected]
// while disconnected, [ErrConnectionLost], [ErrTimeout] or a *[StatusError].
func (c *Client) GetTwin(ctx context.Context) (desired, reported json.RawMessage, err error) {
	s := c.current()
	if s == nil {
		return nil, nil, fmt.Errorf("hub: get twin: %w", ErrNotConnected)
	}
	return c.getTwin(ctx, s)
}

func (c *Client) getTwin(ctx context.Context, s *session) (desired, reported json.RawMessage, err error) {
	const op = "get twin"
	r, err := c.request(ctx, s, op, twinGetTopic, nil)
	if err != nil {
		return nil, nil, err
	}
	var doc struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		return nil, nil, fmt.Errorf("hub: %s: response is not a twin document: %w", op, err)
	}
	if len(doc.Desired) == 0 || len(doc.Reported) == 0 {
		return nil, nil, fmt.Errorf("hub: %s: response lacks the desired or reported section", op)
	}
	return doc.Desired, doc.Reported, nil
}

// UpdateReported sends patch, marshalled to JSON, as a reported-properties
// update (a null value deletes a property) and returns the new reported
// $version (0 if the hub did not say). A json.RawMessage is sent as it is.
// Errors are as for [Client.GetTwin].
func (c *Client) UpdateReported(ctx context.Context, patch any) (version int64, err error) {
	const op = "update reported properties"
	body, err := json.Marshal(patch)
	if err != nil {
		return 0, fmt.Errorf("hub: %s: %w", op, err)
	}
	if len(body) == 0 || body[0] != '{' {
		return 0, fmt.Errorf("hub: %s: the patch must be a JSON object, got %.20s", op, body)
	}
	s := c.current()
	if s == nil {
		return 0, fmt.Errorf("hub: %s: %w", op, ErrNotConnected)
	}
	r, err := c.request(ctx, s, op, twinPatchTopic, body)
	if err != nil {
		return 0, err
	}
	return r.version, nil
}

// request publishes a twin request on s and waits for its response.
func (c *Client) request(ctx context.Context, s *session, op, topicPrefix string, body []byte) (twinResponse, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	req := &request{s: s, ch: make(chan twinResponse, 1)}
	c.mu.Lock()
	c.pending[rid] = req
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, rid)
		c.mu.Unlock()
	}()

	t := time.NewTimer(c.cfg.PublishTimeout)
	defer t.Stop()
	tok := s.pc.Publish(topicPrefix+rid, 0, false, body)
	var r twinResponse
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			if errors.Is(err, mqtt.ErrNotConnected) {
				return r, fmt.Errorf("hub: %s: %w", op, ErrNotConnected)
			}
			return r, fmt.Errorf("hub: %s: %w: %w", op, ErrConnectionLost, err)
		}
		select {
		case r = <-req.ch:
		case <-s.done:
			return r, fmt.Errorf("hub: %s: %w", op, s.lostReason())
		case <-ctx.Done():
			return r, fmt.Errorf("hub: %s: %w", op, ctx.Err())
		case <-t.C:
			return r, fmt.Errorf("hub: %s: no response within %v: %w", op, c.cfg.PublishTimeout, ErrTimeout)
		}
	case <-s.done:
		return r, fmt.Errorf("hub: %s: %w", op, s.lostReason())
	case <-ctx.Done():
		return r, fmt.Errorf("hub: %s: %w", op, ctx.Err())
	case <-t.C:
		return r, fmt.Errorf("hub: %s: request not sent within %v: %w", op, c.cfg.PublishTimeout, ErrTimeout)
	}
	if r.status >= 200 && r.status < 300 {
		return r, nil
	}
	if r.status == 429 {
		s.throttled.Store(true)
	}
	se := &StatusError{Op: op, Status: r.status}
	var eb struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(r.body, &eb) == nil {
		se.Message = eb.Message
	}
	return r, se
}

// deliverResponse hands a twin response to the request waiting for it.
func (c *Client) deliverResponse(r twinResponse) {
	c.mu.Lock()
	req := c.pending[r.rid]
	c.mu.Unlock()
	if req == nil {
		c.log.Debug("ignoring twin response for no pending request", "rid", r.rid)
		return
	}
	select {
	case req.ch <- r:
	default: // a duplicate response
	}
}

// desiredVersion reads "$version" from a desired document or patch.
func desiredVersion(doc json.RawMessage) (int64, bool) {
	var v struct {
		Version *int64 `json:"$version"`
	}
	if json.Unmarshal(doc, &v) != nil || v.Version == nil {
		return 0, false
	}
	return *v.Version, true
}

// syncDesired runs once per connection: it fetches the full desired
// document and queues it for the dispatcher, retrying while the connection
// lasts.
func (c *Client) syncDesired(s *session) {
	c.mu.Lock()
	want := c.onDesired != nil
	c.mu.Unlock()
	if !want {
		return
	}
	delay := c.cfg.ReconnectMin
	for {
		desired, _, err := c.getTwin(s.ctx, s)
		if err == nil {
			v, ok := desiredVersion(desired)
			s.queue(c.events, event{desired: desired, version: v, hasVersion: ok, full: true})
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		c.log.Warn("twin get failed", "err", err, "retry_in", delay)
		if !sleep(s.ctx, delay) {
			return
		}
		delay = min(2*delay, c.cfg.ReconnectMax)
	}
}
