package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const rulesPath = "udev/99-tracker.rules"

// udevEntry is one KEY{attr}OP"value" item of a rule.
type udevEntry struct {
	Key, Attr, Op, Value string
}

// Which operators each key takes (udev(7), "Rules files").
var (
	matchOnly  = set("ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS", "ATTRS", "TAGS", "TEST", "PROGRAM", "RESULT", "CONST")
	assignOnly = set("OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS")
	either     = set("NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG")
	needsAttr  = set("ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "IMPORT", "SECLABEL")
	mayAttr    = set("TEST", "RUN")
)

func set(s ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range s {
		m[k] = true
	}
	return m
}

// parseRule parses one logical rule line, checking each key's operator the
// way udev does, since a match written with "=" silently becomes an
// assignment or is ignored.
func parseRule(line string) ([]udevEntry, error) {
	var out []udevEntry
	rest := line
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		i := 0
		for i < len(rest) && (rest[i] >= 'A' && rest[i] <= 'Z' || rest[i] == '_') {
			i++
		}
		if i == 0 {
			return nil, fmt.Errorf("expected a key at %q", rest)
		}
		e := udevEntry{Key: rest[:i]}
		rest = rest[i:]
		if strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			if end < 2 {
				return nil, fmt.Errorf("%s: bad {attribute}", e.Key)
			}
			e.Attr, rest = rest[1:end], rest[end+1:]
		}
		for _, op := range []string{"==", "!=", "+=", "-=", ":=", "="} {
			if strings.HasPrefix(rest, op) {
				e.Op, rest = op, rest[len(op):]
				break
			}
		}
		if e.Op == "" {
			return nil, fmt.Errorf("%s: expected an operator at %q", e.Key, rest)
		}
		if !strings.HasPrefix(rest, `"`) {
			return nil, fmt.Errorf("%s: value must be in double quotes", e.Key)
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return nil, fmt.Errorf("%s: unterminated value", e.Key)
		}
		e.Value, rest = rest[1:end+1], rest[end+2:]
		if rest != "" && rest[0] != ',' && rest[0] != ' ' {
			return nil, fmt.Errorf("%s: expected a comma after the value, got %q", e.Key, rest)
		}

		isMatch := e.Op == "==" || e.Op == "!="
		switch {
		case matchOnly[e.Key] && !isMatch:
			return nil, fmt.Errorf("%s can only be matched (== or !=), not assigned with %s", e.Key, e.Op)
		case assignOnly[e.Key] && isMatch:
			return nil, fmt.Errorf("%s can only be assigned, not matched with %s", e.Key, e.Op)
		case !matchOnly[e.Key] && !assignOnly[e.Key] && !either[e.Key]:
			return nil, fmt.Errorf("unknown key %s", e.Key)
		case needsAttr[e.Key] && e.Attr == "":
			return nil, fmt.Errorf("%s needs an {attribute}", e.Key)
		case e.Attr != "" && !needsAttr[e.Key] && !mayAttr[e.Key]:
			return nil, fmt.Errorf("%s takes no {attribute}", e.Key)
		}
		out = append(out, e)
	}
	return out, nil
}

// readRules returns the logical rule lines of a rules file (comments and
// blank lines dropped, backslash continuations joined) with their line
// numbers.
func readRules(t *testing.T, path string) map[int]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rules := map[int]string{}
	start, cur := 0, ""
	for n, line := range strings.Split(string(data), "\n") {
		if cur == "" {
			start = n + 1
			trimmed := strings.TrimSpace(line)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				continue
			}
		}
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`)
			continue
		}
		rules[start] = strings.TrimSpace(cur + line)
		cur = ""
	}
	if cur != "" {
		t.Fatalf("%s:%d: continuation runs past the end of the file", path, start)
	}
	return rules
}

func TestUdevRulesParse(t *testing.T) {
	rules := readRules(t, rulesPath)
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", rulesPath)
	}
	gps := map[string]bool{}
	var i2c, uart bool
	for n, line := range rules {
		entries, err := parseRule(line)
		if err != nil {
			t.Errorf("%s:%d: %v", rulesPath, n, err)
			continue
		}
		var assigns int
		kv := map[string]string{}
		for _, e := range entries {
			if e.Op != "==" && e.Op != "!=" {
				assigns++
			}
			k := e.Key
			if e.Attr != "" {
				k += "{" + e.Attr + "}"
			}
			kv[k] = e.Value
		}
		if assigns == 0 {
			t.Errorf("%s:%d: rule only matches and assigns nothing", rulesPath, n)
		}
		if kv["SYMLINK"] == "gps0" {
			if kv["GROUP"] != "dialout" || kv["MODE"] != "0660" {
				t.Errorf("%s:%d: gps0 rule sets GROUP=%q MODE=%q, want dialout 0660", rulesPath, n, kv["GROUP"], kv["MODE"])
			}
			if v := kv["ATTRS{idVendor}"]; v != "" {
				gps[v+":"+kv["ATTRS{idProduct}"]] = true
			}
			if kv["KERNEL"] != "" {
				uart = true
			}
		}
		if kv["SUBSYSTEM"] == "i2c-dev" && kv["GROUP"] == "i2c" && kv["MODE"] == "0660" {
			i2c = true
		}
	}
	for _, id := range []string{"1546:", "067b:2303", "10c4:ea60", "0403:6001"} {
		if !gps[id] {
			t.Errorf("no gps0 rule for USB id %s (have %v)", id, gps)
		}
	}
	if !i2c {
		t.Error("no rule giving i2c-dev nodes group i2c, mode 0660")
	}
	if !uart {
		t.Error("no gps0 rule for the board UART")
	}
}

func TestParseRuleRejects(t *testing.T) {
	for _, line := range []string{
		`SUBSYSTEM="tty", SYMLINK+="gps0"`,               // match key assigned
		`ATTRS{idVendor}="1546", SYMLINK+="gps0"`,        // the classic missing '='
		`SUBSYSTEM=="tty", GROUP=="dialout"`,             // assignment key matched
		`SUBSYSTEM=="tty", SYMLNK+="gps0"`,               // typo
		`SUBSYSTEM=="tty", SYMLINK+=gps0`,                // unquoted
		`SUBSYSTEM=="tty" SYMLINK+="gps0`,                // unterminated
		`ATTRS=="1546", SYMLINK+="gps0"`,                 // no attribute
		`SUBSYSTEM{x}=="tty", SYMLINK+="gps0"`,           // attribute where none goes
		`SUBSYSTEM=="tty"GROUP="dialout"`,                // no separator
		`SUBSYSTEM=="tty", 'GROUP'="dialout"`,            // not a key
		`SUBSYSTEM=="tty", MODE~"0660"`,                  // no operator
		`SUBSYSTEM=="tty", ATTRS{idVendor}=="1546"x`,     // junk after value
		`SUBSYSTEM=="tty", ATTRS{}=="1546", MODE="0660"`, // empty attribute
	} {
		if _, err := parseRule(line); err == nil {
			t.Errorf("parseRule(%q) accepted a bad rule", line)
		}
	}
	if _, err := parseRule(`SUBSYSTEM=="tty", ATTRS{idVendor}=="1546", SYMLINK+="gps0", OPTIONS+="link_priority=10"`); err != nil {
		t.Errorf("parseRule rejected a good rule: %v", err)
	}
}

// TestUdevadmVerify runs "udevadm verify" where the installed udev has it
// (systemd 254 and later; Debian 12 ships 252 without it).
func TestUdevadmVerify(t *testing.T) {
	udevadm, err := exec.LookPath("udevadm")
	if err != nil {
		t.Skip("udevadm not installed; TestUdevRulesParse checks the syntax")
	}
	if exec.Command(udevadm, "verify", "--help").Run() != nil {
		t.Skip("this udevadm has no verify command; TestUdevRulesParse checks the syntax")
	}
	if out, err := exec.Command(udevadm, "verify", rulesPath).CombinedOutput(); err != nil {
		t.Fatalf("udevadm verify %s: %v\n%s", rulesPath, err, out)
	}
}
