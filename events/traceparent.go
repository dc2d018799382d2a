package events

import (
	"errors"
	"fmt"
)

// MaxTraceParentLen bounds a traceparent of a future version, which W3C
// lets carry fields after the four of version 00 (55 bytes). The value is
// copied into every event of the task: a 60 KiB header once made one task
// write 2.4 MB of log.
const MaxTraceParentLen = 256

// ErrInvalidTraceParent is returned by ParseTraceParent.
var ErrInvalidTraceParent = errors.New("invalid traceparent")

// TraceParent is a parsed W3C Trace Context traceparent
// (https://www.w3.org/TR/trace-context/#traceparent-header):
// "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>".
type TraceParent struct {
	Version  string // 2 lowercase hex digits, not "ff"
	TraceID  string // 32 lowercase hex digits, not all zero
	ParentID string // 16 lowercase hex digits, not all zero
	Flags    string // 2 lowercase hex digits
}

// ParseTraceParent parses s as W3C's traceparent header. Version 00 must be
// exactly 55 bytes; a higher version may go on after a '-' (up to
// MaxTraceParentLen bytes), as the recommendation asks parsers to accept.
// The error wraps ErrInvalidTraceParent and says what is wrong.
func ParseTraceParent(s string) (TraceParent, error) {
	bad := func(why string) (TraceParent, error) {
		return TraceParent{}, fmt.Errorf("%w: %s (want 00-<32 hex>-<16 hex>-<2 hex>)", ErrInvalidTraceParent, why)
	}
	if len(s) > MaxTraceParentLen {
		return bad(fmt.Sprintf("%d bytes, at most %d", len(s), MaxTraceParentLen))
	}
	if len(s) < 55 {
		return bad(fmt.Sprintf("%d bytes, at least 55", len(s)))
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return bad("fields must be separated by '-'")
	}
	p := TraceParent{Version: s[0:2], TraceID: s[3:35], ParentID: s[36:52], Flags: s[53:55]}
	for _, f := range []struct{ name, v string }{{"version", p.Version}, {"trace id", p.TraceID}, {"parent id", p.ParentID}, {"flags", p.Flags}} {
		if !lowerHex(f.v) {
			return bad(f.name + " must be lowercase hex")
		}
	}
	switch {
	case p.Version == "ff":
		return bad("version ff is invalid")
	case allZero(p.TraceID):
		return bad("trace id is all zeros")
	case allZero(p.ParentID):
		return bad("parent id is all zeros")
	case p.Version == "00" && len(s) != 55:
		return bad("version 00 is exactly 55 bytes")
	case len(s) > 55 && s[55] != '-':
		return bad("fields after the flags must follow a '-'")
	}
	return p, nil
}

// ValidTraceParent reports whether s is a valid traceparent.
func ValidTraceParent(s string) bool {
	_, err := ParseTraceParent(s)
	return err == nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !lowerHexByte(s[i]) {
			return false
		}
	}
	return true
}

func lowerHexByte(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
