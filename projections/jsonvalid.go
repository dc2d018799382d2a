package projections

// validJSON reports whether b is one valid JSON value (with white space
// around it), exactly as json.Valid does, several times faster: the
// projection checks every fact's data. Like encoding/json it does not check
// that strings are UTF-8, and it refuses nesting deeper than 10000.
func validJSON(b []byte) bool {
	v := validator{b: b}
	i, ok := v.value(v.ws(0), 0)
	return ok && v.ws(i) == len(b)
}

// member is a member of a JSON object: its name as written (quotes and
// escapes included) at b[key:keyEnd], its value at b[val:valEnd].
type member struct{ key, keyEnd, val, valEnd int }

// validObject is validJSON that also appends to ms, in order, the members
// of b when b is an object, or its elements (as members without names)
// when b is an array. It reads the top level itself, so that the
// recursive value never holds ms: callers pass a buffer on their stack,
// which would otherwise move to the heap on every call (a kilobyte for
// each fact the task page reads).
func validObject(b []byte, ms []member) ([]member, bool) {
	v := validator{b: b}
	i := v.ws(0)
	if i >= len(b) || (b[i] != '{' && b[i] != '[') {
		i, ok := v.value(i, 0)
		return ms, ok && v.ws(i) == len(b)
	}
	obj, end := b[i] == '{', byte(']')
	if obj {
		end = '}'
	}
	i = v.ws(i + 1)
	if i < len(b) && b[i] == end {
		return ms, v.ws(i+1) == len(b)
	}
	for {
		var m member
		var ok bool
		if obj {
			if i >= len(b) || b[i] != '"' {
				return ms, false
			}
			m.key = i
			if i, ok = v.str(i); !ok {
				return ms, false
			}
			m.keyEnd = i
			i = v.ws(i)
			if i >= len(b) || b[i] != ':' {
				return ms, false
			}
			i = v.ws(i + 1)
		}
		m.val = i
		if i, ok = v.value(i, 1); !ok {
			return ms, false
		}
		m.valEnd = i
		ms = append(ms, m)
		i = v.ws(i)
		if i >= len(b) {
			return ms, false
		}
		switch b[i] {
		case ',':
			i = v.ws(i + 1)
		case end:
			return ms, v.ws(i+1) == len(b)
		default:
			return ms, false
		}
	}
}

// maxNesting is encoding/json's limit on nested arrays and objects.
const maxNesting = 10000

type validator struct {
	b []byte
}

func (v *validator) ws(i int) int {
	for i < len(v.b) {
		switch v.b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// value checks the value at i (no white space before it) and returns its
// end.
func (v *validator) value(i, depth int) (int, bool) {
	b := v.b
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return v.str(i)
	case c == '{':
		if depth++; depth > maxNesting {
			return i, false
		}
		i = v.ws(i + 1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			var ok bool
			if i, ok = v.str(i); !ok {
				return i, false
			}
			i = v.ws(i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = v.value(v.ws(i+1), depth); !ok {
				return i, false
			}
			i = v.ws(i)
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i = v.ws(i + 1)
			case '}':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '[':
		if depth++; depth > maxNesting {
			return i, false
		}
		i = v.ws(i + 1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = v.value(i, depth); !ok {
				return i, false
			}
			i = v.ws(i)
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i = v.ws(i + 1)
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return v.number(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	}
	return i, false
}

func (v *validator) literal(i int, lit string) (int, bool) {
	if len(v.b)-i < len(lit) || string(v.b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// str checks the string starting at i (a quote).
func (v *validator) str(i int) (int, bool) {
	b := v.b
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			i++
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i <= 4 {
					return i, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return i, false
					}
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number checks the number starting at i.
func (v *validator) number(i int) (int, bool) {
	b := v.b
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// splitValid is validObject for b that is known to be valid JSON (a
// validObject of a value that encloses it said so): it appends the members
// or elements of b without checking them again. Decoding a fact's calls or
// a fact's diffs validated the same bytes once per level, three times, and
// the task page decodes every fact of a task (BenchmarkConsole). On b
// that is not an object or array it appends nothing; on b that is not
// valid after all it stops where it cannot go on, without panicking.
func splitValid(b []byte, ms []member) []member {
	i := skipWS(b, 0)
	if i >= len(b) || (b[i] != '{' && b[i] != '[') {
		return ms
	}
	obj := b[i] == '{'
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != '}' && b[i] != ']' {
		var m member
		if obj {
			m.key = i
			i = skipString(b, i)
			m.keyEnd = i
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return ms
			}
			i = skipWS(b, i+1)
		}
		m.val = i
		i = skipValue(b, i)
		m.valEnd = i
		if m.valEnd <= m.val || m.valEnd > len(b) {
			return ms
		}
		ms = append(ms, m)
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return ms
}

// skipString returns the end of the string at b[i] (its opening quote).
// It steps over the bytes that end nothing by a table (stopString): the
// task page skips every string of every fact it writes.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		for i < len(b) && !stopString[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		if b[i] == '"' {
			return i + 1
		}
		i++ // the escaped byte
	}
	return len(b)
}

// stopString and stopNested are the bytes skipString and skipValue's
// loop over an object or array look at.
var stopString, stopNested = func() (str, nested [256]bool) {
	str['"'], str['\\'] = true, true
	for _, c := range []byte(`"{[]}`) {
		nested[c] = true
	}
	return str, nested
}()

// skipValue returns the end of the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			for i < len(b) && !stopNested[b[i]] {
				i++
			}
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			default: // '}', ']'
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
