// Package jsondiff lists the differences between two JSON documents as
// add, remove and replace operations at JSON Pointers: for the places that
// show what a plugin's patch did (the projection's field blame, replay
// diffs, the verdicts of package verdict). It imports nothing of ours.
package jsondiff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Operations.
const (
	OpAdd     = "add"
	OpRemove  = "remove"
	OpReplace = "replace"
)

// Op is one difference: at Path, Old (remove, replace) became New (add,
// replace).
type Op struct {
	Op   string
	Path string
	Old  json.RawMessage
	New  json.RawMessage
}

// Style says how differences are listed.
type Style int

const (
	// Leaves lists the changed leaves, object keys in sorted order; an
	// array whose length changed is one replace.
	Leaves Style = iota
	// Patch lists operations that apply in order as an RFC 6902 patch
	// turning the first document into the second: in each object the
	// changes and removals in key order, then the additions in key order;
	// arrays element by element, then the removals at the end (highest
	// index first) and the additions.
	Patch
)

// Diff returns the differences between JSON documents a and b, in a
// deterministic order. Numbers are compared by value: 1 equals 1.0.
func Diff(a, b []byte, style Style) ([]Op, error) {
	va, err := Decode(a)
	if err != nil {
		return nil, fmt.Errorf("diff: first document: %w", err)
	}
	vb, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("diff: second document: %w", err)
	}
	var ops []Op
	diff(style, "", va, vb, &ops)
	return ops, nil
}

// Decode decodes one JSON document, numbers as json.Number.
func Decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func diff(style Style, path string, a, b any, ops *[]Op) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			break
		}
		if style == Patch {
			for _, k := range slices.Sorted(maps.Keys(x)) {
				p := path + "/" + Escape(k)
				if yv, ok := y[k]; ok {
					diff(style, p, x[k], yv, ops)
				} else {
					*ops = append(*ops, Op{Op: OpRemove, Path: p, Old: encode(x[k])})
				}
			}
			for _, k := range slices.Sorted(maps.Keys(y)) {
				if _, ok := x[k]; !ok {
					*ops = append(*ops, Op{Op: OpAdd, Path: path + "/" + Escape(k), New: encode(y[k])})
				}
			}
			return
		}
		keys := slices.Collect(maps.Keys(x))
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + Escape(k)
			xv, inx := x[k]
			yv, iny := y[k]
			switch {
			case !iny:
				*ops = append(*ops, Op{Op: OpRemove, Path: p, Old: encode(xv)})
			case !inx:
				*ops = append(*ops, Op{Op: OpAdd, Path: p, New: encode(yv)})
			default:
				diff(style, p, xv, yv, ops)
			}
		}
		return
	case []any:
		y, ok := b.([]any)
		if !ok || (style == Leaves && len(x) != len(y)) {
			break
		}
		n := min(len(x), len(y))
		for i := range n {
			diff(style, path+"/"+strconv.Itoa(i), x[i], y[i], ops)
		}
		for i := len(x) - 1; i >= n; i-- {
			*ops = append(*ops, Op{Op: OpRemove, Path: path + "/" + strconv.Itoa(i), Old: encode(x[i])})
		}
		for i := n; i < len(y); i++ {
			*ops = append(*ops, Op{Op: OpAdd, Path: path + "/" + strconv.Itoa(i), New: encode(y[i])})
		}
		return
	}
	if !Equal(a, b) {
		*ops = append(*ops, Op{Op: OpReplace, Path: path, Old: encode(a), New: encode(b)})
	}
}

// Equal reports whether two decoded JSON values are equal, numbers by
// value.
func Equal(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !Equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !Equal(x[i], y[i]) {
				return false
			}
		}
		return true
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
	return false
}

// encode writes a decoded value back as JSON (it cannot fail for what
// Decode returns).
func encode(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(strconv.Quote(fmt.Sprint(v)))
	}
	return b
}

// Escape escapes an object key as a JSON Pointer token (RFC 6901).
func Escape(k string) string {
	if !strings.ContainsAny(k, "~/") {
		return k
	}
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
