package sdnotify_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/coldchain/tracker/agent/sdnotify"
)

// sleepUntil advances the bubble's fake clock to start+d and lets every
// goroutine settle.
func sleepUntil(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)))
	synctest.Wait()
}

func TestSupervisorFeedsOnlyWhileHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := listenTemp(t)
		n, err := sdnotify.New(l.addr, 10*time.Second) // checks every 5 s
		if err != nil {
			t.Fatal(err)
		}
		sup := sdnotify.NewSupervisor(n, nil)
		start := time.Now()
		gps, err := sup.Register("gps", 12*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sup.Register("sampler", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := sup.Register("gps", time.Second); !errors.Is(err, sdnotify.ErrDuplicate) {
			t.Fatalf("second Register(gps) = %v, want ErrDuplicate", err)
		}
		if err := sup.SetStatus("running"); err != nil {
			t.Fatalf("SetStatus: %v", err)
		}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sup.Run(ctx) }()

		step := func(at time.Duration, want ...string) {
			t.Helper()
			sleepUntil(start, at)
			if diff := cmp.Diff(want, l.drain()); diff != "" {
				t.Errorf("t=%v: datagrams (-want +got):\n%s", at, diff)
			}
		}

		step(1*time.Second, "STATUS=running", "WATCHDOG=1") // check at t=0
		gps.Beat()                                          // t=1 s
		step(11*time.Second, "WATCHDOG=1", "WATCHDOG=1")    // checks at 5 s, 10 s
		// gps goes quiet: at the 15 s check it is 14 s idle, over its 12 s.
		step(16*time.Second, "STATUS=stalled: gps (no progress for over 12s)")
		if got := sup.Stalled(); len(got) != 1 || got[0].Name != "gps" {
			t.Errorf("Stalled() = %v, want just gps", got)
		}
		if got, want := sup.LastFeed(), start.Add(10*time.Second); !got.Equal(want) {
			t.Errorf("LastFeed() = %v, want the 10 s check", got.Sub(start))
		}
		// Still stalled at 20 s: no keep-alive, and the same status is not resent.
		step(21 * time.Second)
		// A status change from the agent waits until the stall clears.
		if err := sup.SetStatus("connected"); err != nil {
			t.Fatalf("SetStatus: %v", err)
		}
		gps.Beat() // t=21 s
		step(26*time.Second, "STATUS=connected", "WATCHDOG=1")
		if got := sup.Stalled(); len(got) != 0 {
			t.Errorf("Stalled() after recovery = %v, want none", got)
		}
		// A component that ends on purpose stops being watched.
		gps.Unregister()
		gps.Beat()
		step(51*time.Second, "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1")
		// The sampler never beat: fed at 55 s and 60 s (60 s idle is not over
		// its minute), stalled at 65 s.
		step(66*time.Second, "WATCHDOG=1", "WATCHDOG=1", "STATUS=stalled: sampler (no progress for over 1m0s)")
		if got := sup.Stalled(); len(got) != 1 || got[0].String() != "sampler (no progress for 1m6s, allowed 1m0s)" {
			t.Errorf("Stalled() = %v, want sampler idle 1m6s", got)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
	})
}

func TestSupervisorWatchdogOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := listenTemp(t)
		n, err := sdnotify.New(l.addr, 0)
		if err != nil {
			t.Fatal(err)
		}
		sup := sdnotify.NewSupervisor(n, nil)
		if _, err := sup.Register("gps", time.Second); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sup.Run(ctx) }()
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := l.drain(); len(got) != 0 {
			t.Errorf("datagrams with the watchdog off = %q, want none", got)
		}
		// Health is still reported on demand.
		if got := sup.Stalled(); len(got) != 1 {
			t.Errorf("Stalled() = %v, want gps", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

func TestSupervisorLogsNotifyFailureOnce(t *testing.T) {
	n, err := sdnotify.New(filepath.Join(t.TempDir(), "absent.sock"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sup := sdnotify.NewSupervisor(n, slog.New(slog.NewTextHandler(&buf, nil)))
	for i := range 3 {
		if sup.Check() {
			t.Fatalf("Check() #%d = true with no listener, want false", i)
		}
	}
	if got := strings.Count(buf.String(), "notification failed"); got != 1 {
		t.Errorf("logged %d failures over 3 checks, want 1:\n%s", got, buf.String())
	}
	if !sup.LastFeed().IsZero() {
		t.Errorf("LastFeed() = %v, want zero", sup.LastFeed())
	}
}

func TestRegisterRejectsBadArguments(t *testing.T) {
	sup := sdnotify.NewSupervisor(nil, nil)
	if _, err := sup.Register("", time.Second); err == nil {
		t.Error("Register(\"\") succeeded, want error")
	}
	if _, err := sup.Register("gps", 0); err == nil {
		t.Error("Register(gps, 0) succeeded, want error")
	}
}
