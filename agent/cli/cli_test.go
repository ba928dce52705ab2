package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coldchain/tracker/agent/cmdline"
)

// run executes trackerd in-process and returns its exit status and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdline.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code = Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "trackerd ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version = %d %q", code, out)
	}
}

func TestCheckConfig(t *testing.T) {
	example := filepath.Join("..", "..", "configs", "trackerd.example.toml")
	code, out, errOut := run(t, "check-config", "--config", example)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("check-config example = %d, %q %q", code, out, errOut)
	}

	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("log_level = \"chatty\"\n[sensor]\nintervall = \"1s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = run(t, "check-config", "--config", bad)
	if code != 1 || !strings.Contains(errOut, `line 3: unknown key "sensor.intervall"`) {
		t.Fatalf("check-config bad = %d, stderr %q", code, errOut)
	}

	code, _, errOut = run(t, "check-config", "--config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("check-config missing = %d, stderr %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	if code, _, errOut := run(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command = %d %q", code, errOut)
	}
	if code, _, errOut := run(t, "check-config", "--bogus"); code != 2 || !strings.Contains(errOut, "bogus") {
		t.Errorf("bad flag = %d %q", code, errOut)
	}
	if code, out, _ := run(t, "check-config", "-help"); code != 0 || !strings.Contains(out, "Usage: trackerd check-config") {
		t.Errorf("-help = %d %q", code, out)
	}
	if code, out, _ := run(t, "help"); code != 0 || !strings.Contains(out, "check-config") {
		t.Errorf("help = %d %q", code, out)
	}
}
