package pki

import (
	"unicode/utf8"
)

// MaxRegistrationIDLen is the longest registration ID DPS accepts.
const MaxRegistrationIDLen = 128

// ValidateRegistrationID checks id against the DPS rules for registration
// IDs: 1 to 128 characters, each an ASCII letter or digit or one of
// "-", ".", "_" and ":", with a letter or digit first and last. DPS treats
// IDs case-insensitively. The error wraps [ErrInvalidID] and names the rule
// that was broken.
func ValidateRegistrationID(id string) error {
	if id == "" {
		return errorf("%w: it is empty; use 1 to %d characters", ErrInvalidID, MaxRegistrationIDLen)
	}
	if n := utf8.RuneCountInString(id); n > MaxRegistrationIDLen {
		return errorf("%w %.20q...: it has %d characters; the limit is %d", ErrInvalidID, id, n, MaxRegistrationIDLen)
	}
	for i, r := range id {
		if !isIDChar(r) {
			return errorf("%w %q: character %q at offset %d is not allowed; use letters, digits, '-', '.', '_' or ':'", ErrInvalidID, id, r, i)
		}
	}
	if first := rune(id[0]); !isAlnum(first) {
		return errorf("%w %q: it starts with %q; it must start with a letter or digit", ErrInvalidID, id, first)
	}
	if last := rune(id[len(id)-1]); !isAlnum(last) {
		return errorf("%w %q: it ends with %q; it must end with a letter or digit", ErrInvalidID, id, last)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func isIDChar(r rune) bool {
	return isAlnum(r) || r == '-' || r == '.' || r == '_' || r == ':'
}
