package projections

import (
	"context"
	"database/sql"
	"fmt"
)

// queryAll runs q on the read pool and returns every row, each read by
// scan; its errors name what is read. It is the loop each list read would
// otherwise write again (rows closed, rows.Err checked). A read with no
// rows returns an empty slice, not nil: the API answers [] for it.
func queryAll[T any](ctx context.Context, db *sql.DB, what, q string, args []any, scan func(*sql.Rows, *T) error) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return out, nil
}
