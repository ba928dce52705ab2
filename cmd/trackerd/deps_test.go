package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeviceBinaryDependencies keeps the device binary small and its attack
// surface reviewed: trackerd must not link the cloud emulator, the MQTT
// broker library, the SD image library, the testing package or any fake
// ("*test") package.
func TestDeviceBinaryDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed only %d packages; the check would prove nothing", len(deps))
	}
	forbidden := []struct{ prefix, why string }{
		{"github.com/coldchain/tracker/emulator", "the cloud emulator belongs to trackerctl"},
		{"github.com/mochi-mqtt/", "the MQTT broker is the emulator's"},
		{"github.com/diskfs/", "SD image stamping is trackerctl's"},
		{"github.com/coldchain/tracker/cmd/trackerctl", "trackerctl's commands"},
		{"testing", "test code"},
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f.prefix || strings.HasPrefix(d, f.prefix+"/") || (strings.HasSuffix(f.prefix, "/") && strings.HasPrefix(d, f.prefix)) {
				t.Errorf("trackerd links %s (%s)", d, f.why)
			}
		}
		// Fakes follow the "<pkg>test" naming of httptest and i2ctest.
		// The standard library's own internals are exempt.
		std := !strings.Contains(strings.SplitN(d, "/", 2)[0], ".")
		last := d[strings.LastIndexByte(d, '/')+1:]
		if !std && strings.HasSuffix(last, "test") {
			t.Errorf("trackerd links test helper package %s", d)
		}
	}
}
