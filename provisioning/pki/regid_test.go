package pki

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateRegistrationID(t *testing.T) {
	valid := []string{
		"a", "Z", "7", "container-0001", "Container-0001", "dev.1", "dev_1", "dev:1",
		"a-._:b", strings.Repeat("x", 128), "00000",
	}
	for _, id := range valid {
		if err := ValidateRegistrationID(id); err != nil {
			t.Errorf("ValidateRegistrationID(%q) = %v, want nil", id, err)
		}
	}
	invalid := []struct {
		id, rule string
	}{
		{"", "empty"},
		{strings.Repeat("x", 129), "limit is 128"},
		{"-abc", "must start with a letter or digit"},
		{".abc", "must start with a letter or digit"},
		{"abc_", "must end with a letter or digit"},
		{"abc:", "must end with a letter or digit"},
		{"..", "must start with"},
		{"a/b", "'/'"},
		{"a b", "' '"},
		{"a\x00b", "not allowed"},
		{"caf\u00e9", "'é'"},
		{"a+b", "'+'"},
		{"a@b", "not allowed"},
		{"../etc", "not allowed"},
	}
	for _, tc := range invalid {
		err := ValidateRegistrationID(tc.id)
		if !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidateRegistrationID(%q) = %v, want ErrInvalidID", tc.id, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("ValidateRegistrationID(%q) = %q, want it to mention %q", tc.id, err, tc.rule)
		}
	}
}

func FuzzValidateRegistrationID(f *testing.F) {
	for _, s := range []string{"container-0001", "-a", "a..b", "ä", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateRegistrationID(id)
		if err != nil {
			return
		}
		// Anything accepted must be safe as a single path element and
		// as an MQTT client ID.
		if len(id) == 0 || len(id) > 128 || strings.ContainsAny(id, "/\\ \x00+#") || id == "." || id == ".." {
			t.Fatalf("ValidateRegistrationID(%q) accepted an unsafe id", id)
		}
	})
}
