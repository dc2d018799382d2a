package projections

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Dump writes the whole database in a canonical text form: the schema
// (every table and index, by name), then every table by name, each row as a
// JSON array on one line, rows ordered by all their columns. Two databases
// with the same content have the same dump, byte for byte; nothing is left
// out but the identity of the log projected (metaLogID: a stream's creation
// time, which differs between two runs of one scenario).
func (d *DB) Dump(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	conn, err := d.r.Conn(ctx)
	if err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	defer conn.Close()
	// One read transaction: a consistent snapshot even while a projector
	// writes.
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	type object struct{ typ, name, tbl, sql string }
	rows, err := tx.QueryContext(ctx, `SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
		WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name`)
	if err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	var objs []object
	for rows.Next() {
		var o object
		if err := rows.Scan(&o.typ, &o.name, &o.tbl, &o.sql); err != nil {
			_ = rows.Close() //nolint:sqlclosecheck // closed before the tables are read, on the same transaction; a defer would hold it open across them
			return fmt.Errorf("dumping: %w", err)
		}
		objs = append(objs, o)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	for _, o := range objs {
		fmt.Fprintf(bw, "-- %s %s: %s\n", o.typ, o.name, strings.Join(strings.Fields(o.sql), " "))
	}
	for _, o := range objs {
		if o.typ != "table" {
			continue
		}
		if err := dumpTable(ctx, tx, bw, o.name); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("dumping: %w", err)
	}
	return nil
}

func dumpTable(ctx context.Context, tx *sql.Tx, w *bufio.Writer, table string) error {
	cols, err := tableColumns(ctx, tx, table)
	if err != nil {
		return err
	}
	order := make([]string, len(cols))
	for i := range cols {
		order[i] = strconv.Itoa(i + 1)
	}
	fmt.Fprintf(w, "== %s (%s)\n", table, strings.Join(cols, ", "))
	where := ""
	if table == "meta" {
		where = " WHERE key != '" + metaLogID + "'"
	}
	//nolint:gosec // G202: a table of the schema, quoted; a constant clause; column numbers
	rows, err := tx.QueryContext(ctx, "SELECT * FROM "+quoteIdent(table)+where+" ORDER BY "+strings.Join(order, ", "))
	if err != nil {
		return fmt.Errorf("dumping %s: %w", table, err)
	}
	defer rows.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var line bytes.Buffer
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("dumping %s: %w", table, err)
		}
		line.Reset()
		line.WriteByte('[')
		for i, v := range vals {
			if i > 0 {
				line.WriteString(", ")
			}
			writeValue(&line, v)
		}
		line.WriteString("]\n")
		if _, err := w.Write(line.Bytes()); err != nil {
			return fmt.Errorf("dumping %s: %w", table, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dumping %s: %w", table, err)
	}
	return nil
}

func tableColumns(ctx context.Context, tx *sql.Tx, table string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT name FROM pragma_table_info(?) ORDER BY cid", table)
	if err != nil {
		return nil, fmt.Errorf("dumping %s: %w", table, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("dumping %s: %w", table, err)
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func writeValue(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		s, _ := json.Marshal(x) //nolint:errchkjson // a string always encodes
		b.Write(s)
	case []byte:
		b.WriteString("x'" + hex.EncodeToString(x) + "'")
	default:
		fmt.Fprintf(b, "%q", fmt.Sprint(x))
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Equal compares two databases row for row (their dumps, streamed: memory
// does not grow with their size). When they differ it returns false and the
// first difference, as "line N: a ... / b ...".
func Equal(ctx context.Context, a, b *DB) (equal bool, diff string, err error) {
	ra, wa := io.Pipe()
	rb, wb := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { err := a.Dump(ctx, wa); _ = wa.CloseWithError(err); errs <- err }()
	go func() { err := b.Dump(ctx, wb); _ = wb.CloseWithError(err); errs <- err }()
	defer func() {
		_ = ra.Close()
		_ = rb.Close()
		cancel()
		// Waits for both dumps to end; their errors reached the scanners
		// through the pipes.
		<-errs //nolint:errcheck // see above
		<-errs //nolint:errcheck // see above
	}()
	sa, sb := bufio.NewScanner(ra), bufio.NewScanner(rb)
	sa.Buffer(make([]byte, 64<<10), 64<<20)
	sb.Buffer(make([]byte, 64<<10), 64<<20)
	for n := 1; ; n++ {
		oka, okb := sa.Scan(), sb.Scan()
		if !oka || !okb {
			if err := sa.Err(); err != nil {
				return false, "", err
			}
			if err := sb.Err(); err != nil {
				return false, "", err
			}
			switch {
			case oka:
				return false, fmt.Sprintf("line %d: %s has more: %s", n, a.path, clip(sa.Text())), nil
			case okb:
				return false, fmt.Sprintf("line %d: %s has more: %s", n, b.path, clip(sb.Text())), nil
			}
			return true, "", nil
		}
		if !bytes.Equal(sa.Bytes(), sb.Bytes()) {
			return false, fmt.Sprintf("line %d:\n  %s: %s\n  %s: %s", n, a.path, clip(sa.Text()), b.path, clip(sb.Text())), nil
		}
	}
}

func clip(s string) string { return truncate(s, 600) }
