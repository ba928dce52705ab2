package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeBackend struct {
	mu          sync.Mutex
	reprovision int
	level       string
	unsent      int
}

func (f *fakeBackend) Status() any { return map[string]any{"state": "assigned"} }
func (f *fakeBackend) Reprovision(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reprovision++
	return nil
}
func (f *fakeBackend) Flush(ctx context.Context) (int, error) {
	if f.unsent > 0 {
		<-ctx.Done()
		return f.unsent, ctx.Err()
	}
	return 0, nil
}
func (f *fakeBackend) SetLogLevel(l string) error {
	if l != "debug" {
		return errors.New("unknown level " + l)
	}
	f.level = l
	return nil
}

func serve(t *testing.T, b Backend) (dir string) {
	t.Helper()
	dir = t.TempDir()
	s, err := Listen(dir, b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(s.Path()); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind after shutdown", s.Path())
		}
	})
	return dir
}

func TestStatusCommandsAndErrors(t *testing.T) {
	b := &fakeBackend{}
	dir := serve(t, b)
	fi, err := os.Stat(filepath.Join(dir, SocketName))
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
	c := NewClient(dir)
	ctx := context.Background()
	var st map[string]any
	if err := c.Do(ctx, "GET", "/v1/status", &st); err != nil || st["state"] != "assigned" {
		t.Fatalf("status = %v, %v", st, err)
	}
	var raw json.RawMessage
	if err := c.Do(ctx, "GET", "/v1/status", &raw); err != nil || !strings.Contains(string(raw), "assigned") {
		t.Fatalf("raw status = %s, %v", raw, err)
	}
	if err := c.Do(ctx, "POST", "/v1/reprovision", nil); err != nil || b.reprovision != 1 {
		t.Fatalf("reprovision: %v (calls %d)", err, b.reprovision)
	}
	if err := c.Do(ctx, "POST", "/v1/log-level?level=loud", nil); err == nil || !strings.Contains(err.Error(), "unknown level loud") {
		t.Errorf("bad level error = %v", err)
	}
	if err := c.Do(ctx, "POST", "/v1/log-level?level=debug", nil); err != nil || b.level != "debug" {
		t.Errorf("log-level debug: %v", err)
	}
	if err := c.Do(ctx, "POST", "/v1/flush?timeout=soon", nil); err == nil || !strings.Contains(err.Error(), "positive duration") {
		t.Errorf("bad flush timeout error = %v", err)
	}
	b.unsent = 7
	var res struct {
		Unsent  int  `json:"unsent"`
		Drained bool `json:"drained"`
	}
	if err := c.Do(ctx, "POST", "/v1/flush?timeout=50ms", &res); err != nil || res.Unsent != 7 || res.Drained {
		t.Errorf("flush timing out = %+v, %v", res, err)
	}
}

func TestNotRunningSaysSo(t *testing.T) {
	err := NewClient(t.TempDir()).Do(context.Background(), "GET", "/v1/status", nil)
	if err == nil || !strings.Contains(err.Error(), "trackerd is not running") {
		t.Fatalf("error = %v", err)
	}
}

func TestSecondDaemonRefusedStaleSocketReplaced(t *testing.T) {
	dir := serve(t, &fakeBackend{})
	if _, err := Listen(dir, &fakeBackend{}); err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Fatalf("second Listen = %v, want 'in use'", err)
	}
	// A socket file left by a crash (nobody listening) is replaced.
	stale := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(stale, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	s, err := Listen(stale, &fakeBackend{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	s.Serve(ctx)
}
