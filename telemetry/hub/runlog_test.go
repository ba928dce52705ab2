package hub

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recordingHandler keeps the level and message of every log record.
type recordingHandler struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r)
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

// A hub out of reach for hours must not fill the journal: the first failure
// is a warning, then at most one an hour; every other failure is debug.
func TestRunConnectFailuresLogRateLimited(t *testing.T) {
	p := sharedPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var recs []slog.Record
		c, err := New(Config{Host: addr, DeviceID: "d1", Certificate: p.device, RootCAs: p.roots,
			ReconnectMin: time.Minute, ReconnectMax: 10 * time.Minute, Logger: slog.New(recordingHandler{&mu, &recs})})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		const span = 3*time.Hour + 30*time.Minute
		start := time.Now()
		for time.Since(start) < span {
			synctest.Wait() // Run is asleep between attempts
			time.Sleep(c.State().NextAttempt.Sub(c.cfg.Time()))
		}
		synctest.Wait()
		failures := c.State().Failures
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}

		mu.Lock()
		defer mu.Unlock()
		var warns, debugs int
		var lastWarn time.Time
		for _, r := range recs {
			if r.Message != "connection failed" {
				continue
			}
			switch r.Level {
			case slog.LevelWarn:
				if warns > 0 && r.Time.Sub(lastWarn) < time.Hour {
					t.Errorf("warning %d came %v after the previous one, want at least an hour", warns+1, r.Time.Sub(lastWarn))
				}
				warns++
				lastWarn = r.Time
			case slog.LevelDebug:
				if warns == 0 {
					t.Error("the first failure was logged at debug level")
				}
				debugs++
			default:
				t.Errorf("connection failure logged at %v", r.Level)
			}
		}
		if warns+debugs != failures {
			t.Errorf("%d failures logged %d times, want once each", failures, warns+debugs)
		}
		if warns < 3 || warns > 4 || failures < 20 {
			t.Errorf("%d failures in %v gave %d warnings, want the first and one an hour (3 or 4)", failures, span, warns)
		}
	})
}
