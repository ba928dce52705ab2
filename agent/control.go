package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coldchain/tracker/agent/buildinfo"
	"github.com/coldchain/tracker/telemetry"
	"github.com/coldchain/tracker/telemetry/hub"
)

// control handles what the cloud asks of the device on one hub session:
// desired twin properties, direct methods and cloud-to-device commands.
type control struct {
	a      *Agent
	client *hub.Client
	ctx    context.Context // the hub session's: handlers stop with it
	end    context.CancelCauseFunc
}

// onDesired applies a desired-properties patch (or the full desired
// document after a connect) and reports the outcome.
func (c *control) onDesired(patch json.RawMessage, version int64) {
	a := c.a
	a.mu.Lock()
	old := a.settings
	next, err := applyDesired(old, patch)
	if err == nil {
		if next.ShipmentID != old.ShipmentID && a.ship.isSealed(next.ShipmentID) {
			err = fmt.Errorf("shipment %q is sealed; a new loading needs a new shipment id", next.ShipmentID)
			next = old
		} else {
			a.settings = next
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("desired properties rejected", "version", version, "err", err)
		a.warn("twin: " + err.Error())
	} else if next != old {
		a.log.Info("settings changed by the twin", "version", version, "interval", next.Interval, "shipment", next.ShipmentID)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	ack := map[string]any{"version": version, "ok": err == nil}
	if err != nil {
		ack["error"] = err.Error()
	}
	if _, rerr := c.client.UpdateReported(ctx, map[string]any{"desiredAck": ack, "config": c.effective()}); rerr != nil {
		a.log.Debug("reporting the desired acknowledgement failed", "err", rerr)
	}
}

func (c *control) effective() map[string]any {
	s := c.a.Settings()
	return map[string]any{
		"telemetryInterval": s.Interval.Seconds(),
		"tempMinC":          s.TempMinC, "tempMaxC": s.TempMaxC,
		"pressureMinHPa": s.PressureMinHPa, "pressureMaxHPa": s.PressureMaxHPa,
		"shipmentId": s.ShipmentID,
		"bufferSync": c.a.cfg.Buffer.Sync,
	}
}

// report sends the reported properties: firmware, effective config,
// buffer, last fix, clock source and certificate expiry.
func (c *control) report(ctx context.Context) {
	st := c.a.status()
	var oldest float64
	if !st.Buffer.OldestUnsent.IsZero() {
		oldest = st.Now.Sub(st.Buffer.OldestUnsent).Seconds()
	}
	var fix *telemetry.Fix
	c.a.mu.Lock()
	samp := c.a.samp
	c.a.mu.Unlock()
	if samp != nil {
		fix = samp.currentFix()
	}
	props := map[string]any{
		"firmwareVersion": buildinfo.Version,
		"hardwareModel":   c.a.cfg.HardwareModel,
		"config":          c.effective(),
		"buffer":          map[string]any{"depth": st.Buffer.Depth, "oldestUnsentAgeSeconds": oldest, "evicted": st.Buffer.Evicted},
		"lastFix":         fix,
		"clockSource":     st.Clock.Source,
		"certExpiry":      st.Identity.CertNotAfter.UTC().Format(time.RFC3339),
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.client.UpdateReported(rctx, props); err != nil && ctx.Err() == nil {
		c.a.log.Debug("reporting properties failed", "err", err)
	}
}

// onMethod answers direct methods: status, flush, reprovision, deprovision.
func (c *control) onMethod(ctx context.Context, name string, payload json.RawMessage) (int, any) {
	var args struct {
		TimeoutSeconds      float64 `json:"timeoutSeconds"`
		DrainTimeoutSeconds float64 `json:"drainTimeoutSeconds"`
	}
	if len(payload) > 0 && string(payload) != "null" {
		if err := json.Unmarshal(payload, &args); err != nil {
			return 400, map[string]string{"error": "payload must be a JSON object: " + err.Error()}
		}
	}
	switch name {
	case "status":
		return 200, c.a.status()
	case "flush":
		timeout := seconds(args.TimeoutSeconds, 25*time.Second)
		fctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		unsent, _ := c.a.pub.Flush(fctx)
		return 200, map[string]any{"unsent": unsent, "drained": unsent == 0}
	case "reprovision":
		if err := c.a.store.ClearAssignment(); err != nil {
			return 500, map[string]string{"error": err.Error()}
		}
		// Answer first, then end the session.
		time.AfterFunc(500*time.Millisecond, func() { c.end(errReprovision) })
		return 200, map[string]any{"reprovisioning": true}
	case "deprovision":
		res, err := c.a.deprovision(ctx, seconds(args.DrainTimeoutSeconds, 25*time.Second))
		if err != nil {
			return 500, map[string]string{"error": err.Error()}
		}
		time.AfterFunc(500*time.Millisecond, func() { c.end(errDeprovisioned) })
		return 200, res
	}
	return 404, map[string]string{"error": fmt.Sprintf("unknown method %q: use status, flush, reprovision or deprovision", name)}
}

// onC2D runs commands sent as cloud-to-device messages, for devices that
// were offline when the operator acted: {"command": "flush"} or the
// application property command=flush.
func (c *control) onC2D(m hub.Message) {
	var body struct {
		Command             string  `json:"command"`
		DrainTimeoutSeconds float64 `json:"drainTimeoutSeconds"`
	}
	_ = json.Unmarshal(m.Body, &body)
	cmd := body.Command
	if cmd == "" {
		cmd = m.Properties["command"]
	}
	c.a.log.Info("cloud-to-device command", "command", cmd, "message_id", m.MessageID)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Minute)
	defer cancel()
	switch cmd {
	case "flush":
		c.a.pub.Flush(ctx)
	case "reprovision":
		if err := c.a.store.ClearAssignment(); err == nil {
			c.end(errReprovision)
		}
	case "deprovision":
		if _, err := c.a.deprovision(ctx, seconds(body.DrainTimeoutSeconds, 2*time.Minute)); err == nil {
			c.end(errDeprovisioned)
		}
	default:
		c.a.warn(fmt.Sprintf("ignored cloud-to-device message with unknown command %q", cmd))
	}
}

func seconds(s float64, def time.Duration) time.Duration {
	if s <= 0 {
		return def
	}
	return min(time.Duration(s*float64(time.Second)), 10*time.Minute)
}

// deprovision is the delivery step on the device: drain the buffer, seal
// the shipment (a seal record, sent), and forget the assignment. Records
// taken afterwards carry no shipment until the next loading sets one.
func (a *Agent) deprovision(ctx context.Context, drain time.Duration) (map[string]any, error) {
	dctx, cancel := context.WithTimeout(ctx, drain)
	defer cancel()
	a.pub.Flush(dctx)

	a.mu.Lock()
	shipment := a.settings.ShipmentID
	a.settings.ShipmentID = ""
	a.mu.Unlock()
	if shipment != "" {
		if err := a.ship.seal(shipment); err != nil {
			return nil, fmt.Errorf("seal shipment: %w", err)
		}
	}
	now, src := a.clock.Now()
	seal := &telemetry.Record{Kind: telemetry.KindSeal, Time: now, Clock: string(src), Shipment: shipment}
	if _, err := a.Append(seal); err != nil {
		return nil, err
	}
	sctx, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	unsent, _ := a.pub.Flush(sctx)
	if err := a.store.ClearAssignment(); err != nil {
		return nil, err
	}
	a.log.Info("deprovisioned", "shipment", shipment, "unsent", unsent)
	return map[string]any{"sealed": true, "shipmentId": shipment, "unsent": unsent, "drained": unsent == 0}, nil
}
