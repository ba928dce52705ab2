package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// methodWorkers is how many direct methods may run at once.
const methodWorkers = 4

// Run connects to the hub and keeps the connection up, reconnecting with
// backoff, until ctx ends (it returns ctx's error) or the hub refused the
// device's identity [Config.MaxRefusals] times in a row (it returns an error
// wrapping [ErrUnauthorized]). It owns the callback goroutines; all of them
// have stopped when it returns.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("hub: Run is already running for this client")
	}
	defer c.running.Store(false)

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { c.dispatch(rctx) })
	for range methodWorkers {
		wg.Go(func() { c.methodWorker(rctx) })
	}

	bo := &backoff{min: c.cfg.ReconnectMin, max: c.cfg.ReconnectMax, rng: c.rng}
	refusals := 0
	// Days out of coverage must not fill the journal on flash: the first
	// failure of a streak is a warning, then one an hour with the count;
	// the rest are debug.
	streak := 0
	var warned time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.noteAttempt()
		s, err := c.connect(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			kind := failOther
			var ce *connectError
			if errors.As(err, &ce) {
				kind = ce.kind
			}
			if kind == failRefused {
				refusals++
			}
			wait := bo.next(kind == failThrottled)
			c.noteFailure(err, refusals, wait)
			if refusals >= c.cfg.MaxRefusals {
				c.log.Error("hub refuses the device identity", "refusals", refusals, "err", err)
				return fmt.Errorf("%w %d times in a row: %w", ErrUnauthorized, refusals, err)
			}
			streak++
			level := slog.LevelDebug
			if streak == 1 || time.Since(warned) >= time.Hour {
				level, warned = slog.LevelWarn, time.Now()
			}
			c.log.Log(ctx, level, "connection failed", "err", err, "failures", streak, "retry_in", wait)
			if !sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		refusals, streak = 0, 0
		c.setConnected(s)
		c.log.Info("connected", "host", c.addr, "session_present", s.sessionPresent)
		s.goOwned(func() { c.syncDesired(s) })

		<-s.done
		reason := s.reason()
		up := time.Since(s.upMono)
		c.setDisconnected(s, reason)
		s.close()
		if ctx.Err() != nil {
			c.log.Info("disconnected", "reason", "stopping")
			return ctx.Err()
		}
		if up >= c.cfg.ReconnectMax {
			bo.reset()
		}
		wait := bo.next(s.throttled.Load())
		c.noteWait(wait)
		c.log.Warn("connection lost", "err", reason, "up", up.Round(time.Millisecond), "retry_in", wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) noteAttempt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.Attempts++
	c.state.NextAttempt = time.Time{}
}

func (c *Client) noteFailure(err error, refusals int, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Time()
	c.state.Failures++
	c.state.Refusals = refusals
	c.state.LastError = err.Error()
	c.state.NextAttempt = now.Add(wait)
	if c.state.Since.IsZero() {
		c.state.Since = now
	}
}

func (c *Client) noteWait(wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.NextAttempt = c.cfg.Time().Add(wait)
}

// setConnected publishes s as the current session.
func (c *Client) setConnected(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Time()
	c.cur = s
	c.state.Connected = true
	c.state.Since = now
	c.state.ConnectedAt = now
	c.state.Connects++
	c.state.Reconnects = c.state.Connects - 1
	c.state.Refusals = 0
	c.state.SessionPresent = s.sessionPresent
	close(c.connected)
}

// setDisconnected retires s; publishes and requests waiting on it fail
// through s.done.
func (c *Client) setDisconnected(s *session, reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == s {
		c.retireLocked(reason)
	}
}

// liveLocked returns the current session if its connection has not ended.
// A session whose connection ended is retired at once, before Run gets to
// it, so that Connected, State and Publish never see a dead connection as
// up. c.mu must be held.
func (c *Client) liveLocked() *session {
	if c.cur != nil && c.cur.ctx.Err() != nil {
		c.retireLocked(c.cur.reason())
	}
	return c.cur
}

// retireLocked marks the client disconnected. c.mu must be held.
func (c *Client) retireLocked(reason error) {
	c.cur = nil
	c.connected = make(chan struct{})
	c.state.Connected = false
	c.state.Since = c.cfg.Time()
	c.state.SessionPresent = false
	if reason != nil && !errors.Is(reason, errConnClosed) {
		c.state.LastError = reason.Error()
	}
}
