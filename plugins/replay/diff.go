package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Diff operations.
const (
	OpAdd     = "add"
	OpRemove  = "remove"
	OpReplace = "replace"
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
	va, err := decodeJSON(a)
	if err != nil {
		return nil, fmt.Errorf("diff: first document: %w", err)
	}
	vb, err := decodeJSON(b)
	if err != nil {
		return nil, fmt.Errorf("diff: second document: %w", err)
	}
	var ops []DiffOp
	diffValues("", va, vb, &ops)
	return ops, nil
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func raw(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(strconv.Quote(fmt.Sprint(v)))
	}
	return b
}

func diffValues(path string, a, b any, ops *[]DiffOp) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := slices.Sorted(maps.Keys(x))
		for _, k := range keys {
			p := path + "/" + escape(k)
			if yv, ok := y[k]; ok {
				diffValues(p, x[k], yv, ops)
			} else {
				*ops = append(*ops, DiffOp{Op: OpRemove, Path: p, Old: raw(x[k])})
			}
		}
		for _, k := range slices.Sorted(maps.Keys(y)) {
			if _, ok := x[k]; !ok {
				*ops = append(*ops, DiffOp{Op: OpAdd, Path: path + "/" + escape(k), Value: raw(y[k])})
			}
		}
		return
	case []any:
		y, ok := b.([]any)
		if !ok {
			break
		}
		n := min(len(x), len(y))
		for i := range n {
			diffValues(path+"/"+strconv.Itoa(i), x[i], y[i], ops)
		}
		for i := len(x) - 1; i >= n; i-- {
			*ops = append(*ops, DiffOp{Op: OpRemove, Path: path + "/" + strconv.Itoa(i), Old: raw(x[i])})
		}
		for i := n; i < len(y); i++ {
			*ops = append(*ops, DiffOp{Op: OpAdd, Path: path + "/" + strconv.Itoa(i), Value: raw(y[i])})
		}
		return
	}
	if !equalScalar(a, b) {
		*ops = append(*ops, DiffOp{Op: OpReplace, Path: path, Old: raw(a), Value: raw(b)})
	}
}

func equalScalar(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, ex := x.Float64()
		fy, ey := y.Float64()
		return ex == nil && ey == nil && fx == fy
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	}
	return false // objects against non-objects, arrays against non-arrays
}

func escape(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
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
