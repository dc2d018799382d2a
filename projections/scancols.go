package projections

import (
	"bytes"
	"database/sql"
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

// textNull scans a nullable TEXT column into *p as sql.NullString does,
// without database/sql's second conversion (sql.NullString.Scan converts
// the driver's value again through convertAssign): the tasks page scans
// seven such columns per task, the task page two per fact.
// TestTextNull holds it to sql.NullString.
type textNull struct{ p *sql.NullString }

func (c textNull) Scan(src any) error {
	switch v := src.(type) {
	case string:
		*c.p = sql.NullString{String: v, Valid: true}
	case nil:
		*c.p = sql.NullString{}
	default:
		return c.p.Scan(src) // what sql.NullString makes of anything else
	}
	return nil
}
