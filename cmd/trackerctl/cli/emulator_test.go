package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
	"github.com/coldchain/tracker/emulator"
)

// emuBuffer is a goroutine-safe buffer for the running command's stdout.
type emuBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *emuBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *emuBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func emuRun(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code := cli.Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestEmulatorCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "emu")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb emuBuffer
	done := make(chan int, 1)
	go func() {
		env := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
		done <- cli.Main(ctx, []string{"emulator", "--state", dir, "--mqtt-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--dps-status", "503", "--dps-count", "2"}, env)
	}()
	// Wait (bounded, polling) for the start banner, written after emulator.json.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "stop with Ctrl-C") {
		select {
		case code := <-done:
			t.Fatalf("emulator exited %d early\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start banner\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
	}
	info, err := emulator.LoadInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ID scope "+info.IDScope) || !strings.Contains(out.String(), filepath.Join(dir, "emulator.json")) {
		t.Errorf("banner lacks the ID scope or emulator.json path:\n%s", out.String())
	}

	code, stdout, stderr := emuRun("emulator", "status", "--state", dir)
	if code != 0 {
		t.Fatalf("status: exit %d %s", code, stderr)
	}
	var st emulator.Status
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status output %q: %v", stdout, err)
	}
	if st.IDScope != info.IDScope || len(st.Faults.DPS) != 1 || st.Faults.DPS[0].Status != 503 {
		t.Errorf("status %+v: want the start flags' DPS fault", st)
	}

	code, stdout, stderr = emuRun("emulator", "fault", "--state", dir, "--clear", "--throttle-d2c", "100", "--withhold", "dev1", "--withhold-count", "2")
	if code != 0 {
		t.Fatalf("fault: exit %d %s", code, stderr)
	}
	var fs emulator.FaultState
	if err := json.Unmarshal([]byte(stdout), &fs); err != nil {
		t.Fatal(err)
	}
	if fs.ThrottleD2C != 100 || len(fs.DPS) != 0 || fs.Withheld["dev1"] != "next 2" {
		t.Errorf("faults after the command %+v", fs)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("emulator exit %d after SIGINT-like cancel\nstderr:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("emulator did not stop")
	}
	if !strings.Contains(out.String(), "emulator: stopped") {
		t.Errorf("no stop line:\n%s", out.String())
	}
	if st, err := os.Stat(filepath.Join(dir, "emulator.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("emulator.json: %v", err)
	}
}

func TestEmulatorCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"emulator"}, 2, "missing required flag -state"},
		{[]string{"emulator", "--state", "x", "--dps-status", "200"}, 2, "-dps-status 200"},
		{[]string{"emulator", "--state", "x", "--mqtt-addr", "8883"}, 1, "MQTT address"},
		{[]string{"emulator", "fault", "--state", t.TempDir()}, 1, "emulator.json"},
		{[]string{"emulator", "fault", "--state", "x", "--withhold", "d"}, 2, "-withhold needs"},
		{[]string{"emulator", "status"}, 2, "missing required flag -state"},
	} {
		code, _, stderr := emuRun(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("trackerctl %s: exit %d %q, want %d mentioning %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}
