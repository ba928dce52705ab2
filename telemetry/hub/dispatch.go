package hub

import (
	"context"
	"encoding/json"
	"time"
)

// event is a desired-properties update or a cloud-to-device message for
// the dispatcher.
type event struct {
	c2d        *Message
	desired    json.RawMessage
	version    int64
	hasVersion bool
	full       bool // the whole desired document from a twin GET
}

// methodCall is a direct-method request for the method workers.
type methodCall struct {
	s       *session
	name    string
	rid     string
	payload []byte
}

// dispatch delivers events in order until ctx ends. It filters desired
// updates by $version so that a patch and the GET after a reconnect do not
// deliver the same version twice.
func (c *Client) dispatch(ctx context.Context) {
	var last int64
	delivered := false
	for {
		var ev event
		select {
		case <-ctx.Done():
			return
		case ev = <-c.events:
		}
		c.mu.Lock()
		onDesired, onC2D := c.onDesired, c.onC2D
		c.mu.Unlock()
		switch {
		case ev.c2d != nil:
			if onC2D == nil {
				c.log.Debug("dropping cloud-to-device message: no handler", "mid", ev.c2d.MessageID)
				continue
			}
			onC2D(*ev.c2d)
		case ev.desired != nil:
			if !ev.hasVersion {
				ev.version, ev.hasVersion = desiredVersion(ev.desired)
			}
			if onDesired == nil {
				continue
			}
			if delivered && ev.hasVersion {
				if ev.full && ev.version == last || !ev.full && ev.version <= last {
					continue
				}
			}
			onDesired(ev.desired, ev.version)
			if ev.hasVersion {
				last, delivered = ev.version, true
			}
		}
	}
}

// methodWorker runs direct methods until ctx ends.
func (c *Client) methodWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case mc := <-c.methods:
			c.callMethod(ctx, mc)
		}
	}
}

// callMethod runs one method and answers it on the connection it came on;
// an answer for a connection that has ended is dropped (the hub has already
// failed the call).
func (c *Client) callMethod(ctx context.Context, mc methodCall) {
	c.mu.Lock()
	h := c.onMethod
	c.mu.Unlock()
	status := 501
	var resp any = map[string]string{"message": "this device implements no direct methods"}
	if h != nil {
		var payload json.RawMessage
		if len(mc.payload) > 0 {
			payload = mc.payload
		}
		status, resp = h(ctx, mc.name, payload)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		c.log.Warn("method response cannot be encoded", "method", mc.name, "err", err)
		status = 500
		body, _ = json.Marshal(map[string]string{"message": "the device could not encode its response"})
	}
	tok := mc.s.pc.Publish(methodResponseTopic(status, mc.rid), 0, false, body)
	t := time.NewTimer(c.cfg.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			c.log.Warn("method response not sent", "method", mc.name, "err", err)
		}
	case <-mc.s.done:
		c.log.Warn("method response not sent: connection ended", "method", mc.name)
	case <-ctx.Done():
	case <-t.C:
		c.log.Warn("method response not sent in time", "method", mc.name)
	}
}
