package projections

import (
	"bytes"
	"fmt"
	"unsafe"
)

// intCol scans an INTEGER column into *p. database/sql converts a
// driver's int64 into an int by formatting it and parsing it again, and
// into an int64 by reflection; the task page scans three or four such
// columns per fact (BenchmarkConsole). NULL is an error, as it is for
// database/sql.
type intCol[T int | int64] struct{ p *T }

func (c intCol[T]) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("converting %T to an integer is unsupported", src)
	}
	*c.p = T(v)
	return nil
}

// textCol scans a TEXT column into *p as bytes without copying them:
// go-sqlite3 hands over each row's text as a new string, which
// sql.RawBytes would copy again. The bytes are those of a string, so they
// stay valid after the next row but must not be changed. A BLOB is
// copied (a driver may reuse its bytes); NULL is nil.
type textCol struct{ p *[]byte }

func (c textCol) Scan(src any) error {
	switch v := src.(type) {
	case string:
		*c.p = unsafe.Slice(unsafe.StringData(v), len(v))
	case []byte:
		*c.p = bytes.Clone(v)
	case nil:
		*c.p = nil
	default:
		return fmt.Errorf("converting %T to text is unsupported", src)
	}
	return nil
}
