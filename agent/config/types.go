package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "5m") in the file.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses a duration such as "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number with a unit: 500ms, 30s, 5m, 1h)", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText renders the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a size in bytes, written in the file as a number or with a
// unit: "64MiB", "512KiB", "2GB".
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalText parses sizes such as "64MiB" or "1048576".
func (s *ByteSize) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(str, u.suffix) {
			mult = u.mult
			str = strings.TrimSpace(strings.TrimSuffix(str, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(str, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid size %q (use bytes or a unit: 512KiB, 64MiB, 1GiB)", b)
	}
	*s = ByteSize(n * float64(mult))
	return nil
}

// MarshalText renders the size with the largest exact binary unit.
func (s ByteSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s ByteSize) String() string {
	switch {
	case s >= 1<<30 && s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s >= 1<<20 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	case s >= 1<<10 && s%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", s>>10)
	}
	return fmt.Sprintf("%dB", int64(s))
}
