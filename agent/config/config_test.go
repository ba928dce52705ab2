package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoadsAndDocumentsEveryKey(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "trackerd.example.toml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	// The example shows the defaults: apart from the id scope and the
	// resolved paths it must decode to Default().
	want := Default()
	want.DPS.IDScope = "0ne00000000"
	got := *c
	got.path = ""
	dir := filepath.Dir(path)
	want.Identity.Cert = filepath.Join(dir, want.Identity.Cert)
	want.Identity.Key = filepath.Join(dir, want.Identity.Key)
	want.Identity.TrustBundle = filepath.Join(dir, want.Identity.TrustBundle)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example config differs from the defaults:\n got %+v\nwant %+v", got, want)
	}

	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range tomlKeys(reflect.TypeOf(Config{}), "") {
		table, name := "", key
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			table, name = key[:i], key[i+1:]
		}
		if !documented(string(src), table, name) {
			t.Errorf("configs/trackerd.example.toml does not document key %q", key)
		}
	}
}

// tomlKeys lists the dotted keys of every leaf field of t.
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || !f.IsExported() {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			keys = append(keys, tomlKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}

// documented reports whether name is set in [table] of src, preceded by a
// comment line.
func documented(src, table, name string) bool {
	cur := ""
	lines := strings.Split(src, "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") {
			cur = strings.Trim(l, "[]")
			continue
		}
		if cur == table && strings.HasPrefix(l, name+" ") && strings.Contains(l, "=") {
			for j := i - 1; j >= 0; j-- {
				p := strings.TrimSpace(lines[j])
				if strings.HasPrefix(p, "#") {
					return true
				}
				if !strings.Contains(p, "=") {
					return false
				}
			}
		}
	}
	return false
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings the error must contain
	}{
		{"unknown key names key and line", "[dps]\nid_scope = \"x\"\n\n[sensor]\nintervall = \"5s\"\n",
			[]string{`line 5: unknown key "sensor.intervall"`}},
		{"unknown top-level key", "dps.id_scope = \"x\"\nstate_dri = \"/tmp\"\n", []string{`line 2: unknown key "state_dri"`}},
		{"syntax error names line", "[dps]\nid_scope = \"x\n", []string{"line 2"}},
		{"missing id scope", "", []string{"dps.id_scope: must be set"}},
		{"every problem at once", `
log_level = "loud"
[dps]
id_scope = "0ne1"
[sensor]
driver = "bmx280"
address = 0x40
[buffer]
sync = "sometimes"
[telemetry]
temp_min_c = 9.0
temp_max_c = 8.0
`, []string{"log_level", "sensor.address", "buffer.sync", "temp_min_c < temp_max_c"}},
		{"bad duration", "[dps]\nid_scope=\"x\"\n[sensor]\ninterval = \"soon\"\n", []string{`invalid duration "soon"`}},
		{"bad size", "[dps]\nid_scope=\"x\"\n[buffer]\nmax_bytes = \"lots\"\n", []string{`invalid size "lots"`}},
		{"replay without file", "[dps]\nid_scope=\"x\"\n[gps]\ndriver = \"replay\"\n", []string{"gps.replay_file"}},
		{"endpoint with path", "[dps]\nid_scope=\"x\"\nendpoint = \"https://x/y\"\n", []string{"dps.endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "/etc/trackerd")
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingIsErrNoConfig(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, ErrNoConfig) {
		t.Fatalf("Load(missing) = %v, want ErrNoConfig", err)
	}
}

func TestRelativePathsResolveAgainstFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	src := "state_dir = \"state\"\n[identity]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n[dps]\nid_scope = \"0ne1\"\n[buffer]\nmax_bytes = 1048576\n"
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(dir, "state") || c.Identity.Cert != filepath.Join(dir, "c.pem") || c.Identity.Key != "/abs/k.pem" {
		t.Errorf("paths not resolved: state %q cert %q key %q", c.StateDir, c.Identity.Cert, c.Identity.Key)
	}
	if c.Buffer.MaxBytes != 1<<20 {
		t.Errorf("max_bytes = %v, want 1MiB", c.Buffer.MaxBytes)
	}
	if c.Path() != p {
		t.Errorf("Path() = %q", c.Path())
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"64MiB": 64 << 20, "512KiB": 512 << 10, "1GB": 1e9, "100": 100, "1.5KiB": 1536} {
		var s ByteSize
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	if got := ByteSize(64 << 20).String(); got != "64MiB" {
		t.Errorf("String() = %q", got)
	}
}

// FuzzParse checks that no input makes the loader panic, and that whatever
// it accepts passes Validate.
func FuzzParse(f *testing.F) {
	src, err := os.ReadFile(filepath.Join("..", "..", "configs", "trackerd.example.toml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(src)
	f.Add([]byte("[dps]\nid_scope = \"x\"\n[buffer]\nmax_bytes = \"1e400\"\n"))
	f.Add([]byte("[sensor]\naddress = 0x76\ninterval = \"-1s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "/base")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that fails Validate: %v", err)
		}
	})
}
