package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Publish sends m as device-to-cloud telemetry at QoS 1. It returns nil only
// after the hub's PUBACK arrived on the connection that carried m. Otherwise:
//   - [ErrNotConnected] at once while disconnected (nothing was sent);
//   - [ErrConnectionLost] if the connection ended before the PUBACK (the hub
//     may have the message; send it again, with the same MessageID);
//   - [ErrTimeout] if no PUBACK came within [Config.PublishTimeout] (the
//     connection is dropped and re-established);
//   - [ErrInvalidMessage] if the hub would never accept m;
//   - ctx's error if ctx ends first, also while waiting for one of the
//     [Config.MaxInFlight] slots. A message already sent keeps its slot
//     until its PUBACK, the end of the connection or the publish timeout,
//     so abandoned publishes cannot grow the window.
func (c *Client) Publish(ctx context.Context, m Message) error {
	topic, err := eventTopic(c.cfg.DeviceID, &m)
	if err != nil {
		return err
	}
	s := c.current()
	if s == nil {
		return ErrNotConnected
	}
	select {
	case c.slots <- struct{}{}:
	case <-s.done:
		return ErrNotConnected
	case <-ctx.Done():
		return fmt.Errorf("hub: publish %s: %w", m.MessageID, ctx.Err())
	}
	handedOff := false
	defer func() {
		if !handedOff {
			<-c.slots
		}
	}()

	deadline := time.Now().Add(c.cfg.PublishTimeout)
	tok := s.pc.Publish(topic, 1, false, m.Body)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-tok.Done():
		return s.publishResult(tok, m.MessageID)
	case <-s.done:
		// The PUBACK may have been handled just before the connection
		// ended; paho completes a token without error only on its PUBACK.
		select {
		case <-tok.Done():
			return s.publishResult(tok, m.MessageID)
		default:
		}
		return fmt.Errorf("hub: publish %s: %w", m.MessageID, s.lostReason())
	case <-ctx.Done():
		// The message is out and still counts against the window until
		// its PUBACK, the end of the connection or the publish timeout.
		handedOff = s.goOwned(func() {
			defer func() { <-c.slots }()
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case <-tok.Done():
			case <-s.done:
			case <-t.C:
				s.end(fmt.Errorf("hub: publish %s: no PUBACK within %v: %w", m.MessageID, c.cfg.PublishTimeout, ErrTimeout))
			}
		})
		return fmt.Errorf("hub: publish %s: %w", m.MessageID, ctx.Err())
	case <-t.C:
		err := fmt.Errorf("hub: publish %s: no PUBACK within %v: %w", m.MessageID, c.cfg.PublishTimeout, ErrTimeout)
		s.end(err)
		return err
	}
}

// publishResult maps a completed paho publish token to Publish's result.
func (s *session) publishResult(tok mqtt.Token, mid string) error {
	err := tok.Error()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mqtt.ErrNotConnected):
		return ErrNotConnected
	default:
		// paho fails pending tokens when the connection ends; any other
		// failure leaves the connection in an unknown state, so drop it.
		s.end(fmt.Errorf("%w: %w", ErrConnectionLost, err))
		return fmt.Errorf("hub: publish %s: %w: %w", mid, ErrConnectionLost, err)
	}
}

// lostReason is the error for an operation cut short by the end of s: it
// always wraps ErrConnectionLost.
func (s *session) lostReason() error {
	r := s.reason()
	if errors.Is(r, ErrConnectionLost) {
		return r
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, r)
}
