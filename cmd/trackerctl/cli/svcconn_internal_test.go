package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadEmulatorInfo(t *testing.T) {
	write := func(t *testing.T, body string) string {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, svcEmulatorFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		_, err := readEmulatorInfo(dir, emulatorServiceFields...)
		if err == nil || !strings.Contains(err.Error(), "trackerctl emulator --state "+dir) {
			t.Fatalf("readEmulatorInfo(empty dir) = %v, want a hint to start the emulator", err)
		}
	})
	t.Run("bad JSON", func(t *testing.T) {
		dir := write(t, "{")
		if _, err := readEmulatorInfo(dir); err == nil || !strings.Contains(err.Error(), svcEmulatorFile) {
			t.Fatalf("readEmulatorInfo(truncated file) = %v, want an error naming the file", err)
		}
	})
	t.Run("missing fields", func(t *testing.T) {
		dir := write(t, `{"httpsUrl":"https://127.0.0.1:1","serverCaFile":"/ca.pem"}`)
		if _, err := readEmulatorInfo(dir, emulatorServiceFields...); err != nil {
			t.Fatalf("service fields: %v", err)
		}
		_, err := readEmulatorInfo(dir, emulatorDeviceFields...)
		if err == nil || !strings.Contains(err.Error(), "lacks dpsHost, idScope;") {
			t.Fatalf("device fields = %v, want it to name dpsHost and idScope", err)
		}
	})
	t.Run("relative CA file", func(t *testing.T) {
		dir := write(t, `{"dpsHost":"h","idScope":"s","serverCaFile":"ca/root.pem"}`)
		info, err := readEmulatorInfo(dir, emulatorDeviceFields...)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, "ca", "root.pem"); info.ServerCAFile != want {
			t.Errorf("ServerCAFile = %q, want %q", info.ServerCAFile, want)
		}
	})
}
