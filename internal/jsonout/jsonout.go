// Package jsonout writes JSON for people to read, indented only as deep as
// that helps, so that a deeply nested document cannot make the output grow
// with the square of its depth.
package jsonout

import (
	"bufio"
	"io"
)

// IndentDepth is how deep Write indents.
const IndentDepth = 16

// Write writes the compact JSON document b (as json.Marshal writes it)
// to w and a newline, indented by two spaces down to IndentDepth levels of
// nesting, as json.MarshalIndent would, and compact below.
//
// Why not json.Indent: every line it writes carries the whole indentation
// of its depth, so its output grows with the square of the nesting. A task
// whose kw nests 10,000 deep (40 KB, well inside the size limits) became a
// 800 MB record on GET /tasks/{id} and 1.8 GB of qtasksd's memory. Here
// the output is a bounded multiple of b.
func Write(w io.Writer, b []byte) error {
	bw := bufio.NewWriter(w)
	newline := func(depth int) {
		_ = bw.WriteByte('\n')
		for range depth {
			_, _ = bw.WriteString("  ")
		}
	}
	depth, inString, escaped := 0, false, false
	for i, c := range b {
		if inString {
			_ = bw.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			_ = bw.WriteByte(c)
		case '{', '[':
			_ = bw.WriteByte(c)
			depth++
			empty := i+1 < len(b) && (b[i+1] == '}' || b[i+1] == ']')
			if !empty && depth <= IndentDepth {
				newline(depth)
			}
		case '}', ']':
			empty := i > 0 && (b[i-1] == '{' || b[i-1] == '[')
			if !empty && depth <= IndentDepth {
				newline(depth - 1)
			}
			depth--
			_ = bw.WriteByte(c)
		case ',':
			_ = bw.WriteByte(c)
			if depth <= IndentDepth {
				newline(depth)
			}
		case ':':
			_ = bw.WriteByte(c)
			if depth <= IndentDepth {
				_ = bw.WriteByte(' ')
			}
		default:
			_ = bw.WriteByte(c)
		}
	}
	_ = bw.WriteByte('\n')
	return bw.Flush()
}
