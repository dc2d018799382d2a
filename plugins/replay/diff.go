package replay

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/qtasks/qtasks-go/internal/jsondiff"
)

// Diff operations.
const (
	OpAdd     = jsondiff.OpAdd
	OpRemove  = jsondiff.OpRemove
	OpReplace = jsondiff.OpReplace
)

// DiffOp is one difference between two JSON documents, written as the
// RFC 6902 operation that turns the first (recorded) into the second
// (candidate), with the first's value beside it for reading.
type DiffOp struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	// Value is the second document's value (add, replace).
	Value json.RawMessage `json:"value,omitempty"`
	// Old is the first document's value (remove, replace).
	Old json.RawMessage `json:"old,omitempty"`
}

func (d DiffOp) String() string {
	switch d.Op {
	case OpAdd:
		return fmt.Sprintf("add %s: %s", d.Path, d.Value)
	case OpRemove:
		return fmt.Sprintf("remove %s (was %s)", d.Path, d.Old)
	default:
		return fmt.Sprintf("replace %s: %s -> %s", d.Path, d.Old, d.Value)
	}
}

// Diff compares two JSON documents and returns their differences, in a
// stable order (object keys sorted, array indices ascending except
// removals at the end of an array, which come highest first so that the
// operations apply in order). Numbers are compared by value: 1 equals 1.0.
func Diff(a, b []byte) ([]DiffOp, error) {
	ops, err := jsondiff.Diff(a, b, jsondiff.Patch)
	if err != nil {
		return nil, err
	}
	return diffOps(ops), nil
}

func diffOps(ops []jsondiff.Op) []DiffOp {
	var out []DiffOp
	for _, o := range ops {
		out = append(out, DiffOp{Op: o.Op, Path: o.Path, Value: o.New, Old: o.Old})
	}
	return out
}

// splitPointer splits a JSON Pointer into its (still escaped) tokens.
func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(p, "/"), "/")
}

// mask decides which differences are noise.
type mask struct {
	// patterns are JSON Pointers where a token "*" matches any one token;
	// a pattern masks every difference at or below it.
	patterns [][]string
	// noise are the differences seen between two runs of the same
	// version: path → operation. A replace there is masked, and so is the
	// same operation; a field added or removed where the two runs only
	// disagreed on the value is a behaviour change and stays.
	noise map[string]string
}

func newMask(patterns []string) (*mask, error) {
	m := &mask{}
	for _, p := range patterns {
		if p != "" && !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("mask %q: must be a JSON Pointer (start with /)", p)
		}
		m.patterns = append(m.patterns, splitPointer(p))
	}
	return m, nil
}

// withNoise returns a mask that also masks the differences ops.
func (m *mask) withNoise(ops []DiffOp) *mask {
	if len(ops) == 0 {
		return m
	}
	n := &mask{patterns: m.patterns, noise: make(map[string]string, len(ops))}
	for _, o := range ops {
		n.noise[o.Path] = o.Op
	}
	return n
}

func (m *mask) masks(o DiffOp) bool {
	tokens := splitPointer(o.Path)
	for _, p := range m.patterns {
		if prefixMatch(p, tokens) {
			return true
		}
	}
	if m.noise == nil {
		return false
	}
	for p := o.Path; ; {
		if op, ok := m.noise[p]; ok && (op == o.Op || (p != o.Path && op == OpReplace)) {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

func prefixMatch(pattern, tokens []string) bool {
	if len(pattern) > len(tokens) {
		return false
	}
	for i, t := range pattern {
		if t != "*" && t != tokens[i] {
			return false
		}
	}
	return true
}

// split separates the differences that are noise from the rest.
func (m *mask) split(ops []DiffOp) (kept, masked []DiffOp) {
	for _, o := range ops {
		if m.masks(o) {
			masked = append(masked, o)
		} else {
			kept = append(kept, o)
		}
	}
	return kept, masked
}
