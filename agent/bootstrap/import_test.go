package bootstrap_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldchain/tracker/agent/bootstrap"
	"github.com/coldchain/tracker/agent/cmdline"
)

func keyPEM(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// bundle writes files and their manifest into boot/tracker and returns the
// manifest.
func bundle(t *testing.T, boot string, files map[string][]byte) *bootstrap.Manifest {
	t.Helper()
	dir := filepath.Join(boot, bootstrap.BundleDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &bootstrap.Manifest{Format: bootstrap.ManifestFormat, DeviceID: "tracker-0042",
		StampedAt: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC), Tool: "trackerctl test"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, bootstrap.NewFile(name, data))
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bootstrap.ManifestName), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

func standardFiles(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"device.key":  keyPEM(t),
		"chain.pem":   []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
		"config.toml": []byte("[identity]\ncert = \"chain.pem\"\nkey = \"device.key\"\n"),
	}
}

func TestImportBundle(t *testing.T) {
	boot, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
	files := standardFiles(t)
	m := bundle(t, boot, files)
	if !m.Files[0].Secret && !m.Files[1].Secret && !m.Files[2].Secret {
		t.Fatal("NewFile flagged no file as secret")
	}
	// A stray file macOS might add is not part of the bundle.
	if err := os.WriteFile(filepath.Join(boot, bootstrap.BundleDir, "._device.key"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	imported, err := bootstrap.ImportBundle(boot, state)
	if err != nil || !imported {
		t.Fatalf("ImportBundle = %v, %v; want true, nil", imported, err)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(state, name))
		if err != nil {
			t.Fatalf("imported %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("imported %s differs from the bundle", name)
		}
		fi, _ := os.Stat(filepath.Join(state, name))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	if _, err := os.Stat(filepath.Join(state, "._device.key")); err == nil {
		t.Error("a file outside the manifest was imported")
	}
	if _, err := os.Stat(filepath.Join(state, bootstrap.ManifestName)); err != nil {
		t.Errorf("manifest not copied: %v", err)
	}
	// The key is gone from the boot partition; public files stay.
	src := filepath.Join(boot, bootstrap.BundleDir)
	if _, err := os.Stat(filepath.Join(src, "device.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device.key still on the boot partition: %v", err)
	}
	for _, name := range []string{"chain.pem", "config.toml", bootstrap.ManifestName} {
		if _, err := os.Stat(filepath.Join(src, name)); err != nil {
			t.Errorf("%s removed from the boot partition: %v", name, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(state, ".import-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Next boot: nothing to do.
	imported, err = bootstrap.ImportBundle(boot, state)
	if err != nil || imported {
		t.Fatalf("second ImportBundle = %v, %v; want false, nil", imported, err)
	}
}

func TestImportFinishesInterruptedScrub(t *testing.T) {
	boot, state := t.TempDir(), t.TempDir()
	files := standardFiles(t)
	bundle(t, boot, files)
	if _, err := bootstrap.ImportBundle(boot, state); err != nil {
		t.Fatal(err)
	}
	// As if power failed after the state was written but before the key
	// left the boot partition.
	keyPath := filepath.Join(boot, bootstrap.BundleDir, "device.key")
	if err := os.WriteFile(keyPath, files["device.key"], 0o644); err != nil {
		t.Fatal(err)
	}
	imported, err := bootstrap.ImportBundle(boot, state)
	if err != nil || imported {
		t.Fatalf("ImportBundle = %v, %v; want false, nil", imported, err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover key not removed: %v", err)
	}
}

func TestImportNothing(t *testing.T) {
	state := t.TempDir()
	imported, err := bootstrap.ImportBundle(filepath.Join(t.TempDir(), "not-mounted"), state)
	if err != nil || imported {
		t.Fatalf("ImportBundle without a bundle = %v, %v; want false, nil", imported, err)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("state dir changed: %v", entries)
	}
}

func TestImportRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, src string)
		want   string
	}{
		{"edited file", func(t *testing.T, src string) {
			write(t, filepath.Join(src, "config.toml"), "[identity]\ncert = \"other.pem\"\nkey = \"device.key\"\n")
		}, "config.toml"},
		{"truncated key", func(t *testing.T, src string) {
			write(t, filepath.Join(src, "device.key"), "-----BEGIN PRIVATE KEY-----\n")
		}, "device.key is"},
		{"missing file", func(t *testing.T, src string) {
			if err := os.Remove(filepath.Join(src, "chain.pem")); err != nil {
				t.Fatal(err)
			}
		}, "chain.pem is listed in the manifest but missing"},
		{"no manifest", func(t *testing.T, src string) {
			if err := os.Remove(filepath.Join(src, bootstrap.ManifestName)); err != nil {
				t.Fatal(err)
			}
		}, "not written by 'trackerctl image stamp'"},
		{"bad manifest", func(t *testing.T, src string) {
			write(t, filepath.Join(src, bootstrap.ManifestName), `{"format":1,"files":[{"name":"etc/passwd","size":1,"sha256":"00"}]}`)
		}, "not allowed in a FAT file name"},
		{"future format", func(t *testing.T, src string) {
			write(t, filepath.Join(src, bootstrap.ManifestName), `{"format":2,"files":[]}`)
		}, "format 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, state := t.TempDir(), t.TempDir()
			bundle(t, boot, standardFiles(t))
			src := filepath.Join(boot, bootstrap.BundleDir)
			tc.damage(t, src)
			imported, err := bootstrap.ImportBundle(boot, state)
			if !errors.Is(err, bootstrap.ErrBadBundle) || imported {
				t.Fatalf("ImportBundle = %v, %v; want ErrBadBundle", imported, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(state); len(entries) != 0 {
				t.Errorf("state dir written despite the error: %v", entries)
			}
			if tc.name != "truncated key" {
				if _, err := os.Stat(filepath.Join(src, "device.key")); err != nil {
					t.Errorf("key removed from the boot partition despite the error: %v", err)
				}
			}
		})
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportAsRootGivesFilesToStateOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another user")
	}
	boot, state := t.TempDir(), t.TempDir()
	const uid, gid = 65534, 65534
	if err := os.Chown(state, uid, gid); err != nil {
		t.Fatal(err)
	}
	bundle(t, boot, standardFiles(t))
	if _, err := bootstrap.ImportBundle(boot, state); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"device.key", "chain.pem", bootstrap.ManifestName} {
		fi, err := os.Stat(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
	}
}

func TestImportCommand(t *testing.T) {
	boot, state := t.TempDir(), t.TempDir()
	bundle(t, boot, standardFiles(t))
	var out, errOut bytes.Buffer
	env := &cmdline.Env{Stdout: &out, Stderr: &errOut}
	cmds := []cmdline.Command{bootstrap.ImportCommand()}
	if code := cmdline.Dispatch(t.Context(), "trackerd", "", cmds, []string{"import-boot", "-boot", boot, "-state", state}, env); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `imported the device bundle of "tracker-0042" (3 files`) {
		t.Errorf("output %q", out.String())
	}
	out.Reset()
	if code := cmdline.Dispatch(t.Context(), "trackerd", "", cmds, []string{"import-boot", "-boot", boot, "-state", state}, env); code != 0 {
		t.Fatalf("second run exit %d, stderr %s", code, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "no new device bundle") {
		t.Errorf("second run output %q", out.String())
	}
	if code := cmdline.Dispatch(t.Context(), "trackerd", "", cmds, []string{"import-boot", "extra"}, env); code != 2 {
		t.Errorf("stray argument: exit %d, want 2", code)
	}
}

func TestCheckName(t *testing.T) {
	for _, good := range []string{"device.key", "chain.pem", "config.toml", "Trust Bundle.pem", "a-b_c+d(1).PEM"} {
		if err := bootstrap.CheckName(good); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", good, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "a/b", `a\b`, "a:b", "a*", "q?", "manifest.json", "MANIFEST.JSON", "tail ", "ctl\x01", "é.pem", "del\x7f", strings.Repeat("x", 256)} {
		if err := bootstrap.CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", bad)
		}
	}
}

func TestIsPrivateKey(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{string(keyPEM(t)), true},
		{"-----BEGIN EC PRIVATE KEY-----\nnot base64 !!\n-----END EC PRIVATE KEY-----\n", true},
		{"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", false},
		{"[identity]\nkey = \"device.key\"\n", false},
	} {
		if got := bootstrap.IsPrivateKey([]byte(tc.data)); got != tc.want {
			t.Errorf("IsPrivateKey(%.30q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}
