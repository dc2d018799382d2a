package projections_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

var (
	update = flag.Bool("update", false, "rewrite the golden dump from the recorded log")
	record = flag.Bool("record", false, "with -update: record the log anew from a real run first")
)

// Fixtures: the event log of a real run of the scenario (recorded by
// `go test ./projections/ -run TestFixtures -update -record`), its
// projection as a golden dump (rewritten from the recorded log by
// `go test ./projections/ -run TestFixtures -update`), and databases of
// schema versions 1 and 2 holding the first half of the log, as projectors
// of those versions left them. The old databases were written by
// exportSchema when their version was the current one and are never
// rewritten: this package no longer writes those schemas. A new log needs
// them written anew by the versions of the package that wrote them.
const (
	logFixture    = "testdata/replay/scenario/events.jsonl" // projectionstest.ScenarioLog()
	goldenFixture = "testdata/replay/scenario/want.golden"
	v1Fixture     = "testdata/migrate/v1/db.sql"
	v2Fixture     = "testdata/migrate/v2/db.sql"
)

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	// Fixtures are files of the checkout (testdata), readable as the rest
	// of it is.
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755)) //nolint:gosec // G301: see above
	require.NoError(t, os.WriteFile(path, data, 0o644))        //nolint:gosec // G306: see above
}

// exportSchema writes the content of db's tables among objects (those of
// schema version, in creation order) as an SQL script: the database a
// projector of that version would have left.
func exportSchema(t *testing.T, path string, version int, objects []string) []byte {
	t.Helper()
	ctx := ctxFor(t)
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	var out bytes.Buffer
	fmt.Fprintf(&out, "-- A projection database of schema version %d, written by `go test ./projections/ -run TestFixtures -update`\n", version)
	fmt.Fprintf(&out, "-- when it was the current version: the first half of ../../replay/scenario/events.jsonl. Do not edit.\nBEGIN;\n")
	var tables []string
	for _, name := range objects {
		var typ, ddl string
		require.NoError(t, db.QueryRowContext(ctx, `SELECT type, sql FROM sqlite_master WHERE name = ?`, name).Scan(&typ, &ddl))
		out.WriteString(ddl + ";\n")
		if typ == "table" {
			tables = append(tables, name)
		}
	}
	for _, tbl := range tables {
		var quoted []string
		for _, c := range queryStrings(ctx, t, db, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, tbl) {
			quoted = append(quoted, "quote("+c+")")
		}
		q := fmt.Sprintf(`SELECT 'INSERT INTO %s VALUES (' || %s || ');' FROM %s`, tbl, strings.Join(quoted, " || ', ' || "), tbl)
		if tbl == "schema_migrations" {
			q += fmt.Sprintf(" WHERE version <= %d", version)
		}
		q += " ORDER BY 1"
		for _, line := range queryStrings(ctx, t, db, q) {
			out.WriteString(line + "\n")
		}
	}
	out.WriteString("COMMIT;\n")
	return out.Bytes()
}

// queryStrings reads the one text column of q's rows.
func queryStrings(ctx context.Context, t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(ctx, q, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestFixtures regenerates the fixtures with -update; without it, it checks
// that they are there.
func TestFixtures(t *testing.T) {
	if !*update {
		for _, f := range []string{logFixture, goldenFixture, v1Fixture, v2Fixture} {
			_, err := os.Stat(f)
			require.NoError(t, err, "missing fixture; run go test ./projections/ -run TestFixtures -update")
		}
		return
	}
	b := bustest.Open(t, nil)
	var msgs []projectionstest.Msg
	if *record {
		s := runScenario(t, b)
		s.stop(t)
		msgs = projectionstest.Capture(t, b)
		projectionstest.WriteFile(t, logFixture, msgs)
	} else {
		msgs = projectionstest.ReadFile(t, logFixture)
		projectionstest.Publish(t, b, projectionstest.All(msgs))
	}

	full := build(t, b, 0)
	writeFile(t, goldenFixture, dumpBytes(t, full))
	t.Logf("wrote the dump of %d events", len(msgs))
}

// The projection of a recorded log is the golden dump: Apply is
// deterministic and changes only on purpose (then run -update).
func TestReplayGolden(t *testing.T) {
	t.Parallel()
	if *update {
		t.Skip("fixtures being rewritten")
	}
	b := bustest.Open(t, nil)
	projectionstest.Publish(t, b, projectionstest.All(projectionstest.ReadFile(t, logFixture)))
	got := dumpBytes(t, build(t, b, 0))
	want, err := os.ReadFile(goldenFixture)
	require.NoError(t, err)
	if !bytes.Equal(want, got) {
		wl, gl := splitLines(want), splitLines(got)
		for i := range min(len(wl), len(gl)) {
			require.Equal(t, wl[i], gl[i], "dump line %d differs from %s (go test ./projections/ -run TestFixtures -update rewrites it)", i+1, goldenFixture)
		}
		require.Len(t, gl, len(wl), "dump length differs from %s", goldenFixture)
	}
}

// oldDatabase publishes the fixture log on a new bus and loads the SQL
// script fixture (a database of an older schema, stopped halfway through
// that log) into a new file; it returns the bus, the log, the file's path
// and the script.
func oldDatabase(t *testing.T, fixture string) (*bus.Bus, []projectionstest.Msg, string, []byte) {
	t.Helper()
	b := bustest.Open(t, nil)
	msgs := projectionstest.ReadFile(t, logFixture)
	projectionstest.Publish(t, b, projectionstest.All(msgs))
	path := filepath.Join(t.TempDir(), filepath.Base(filepath.Dir(fixture))+".db")
	script, err := os.ReadFile(fixture)
	require.NoError(t, err)
	raw, err := sql.Open("sqlite3", projections.DSN(path))
	require.NoError(t, err)
	_, err = raw.ExecContext(ctxFor(t), string(script))
	require.NoError(t, err)
	require.NoError(t, raw.Close())
	return b, msgs, path, script
}

// Issue test 4: a database created by the previous schema version migrates
// on start (field blame backfilled from the calls it holds) and the
// projector goes on from where the old one stopped; the result equals a
// fresh rebuild.
func TestMigrateFromV1(t *testing.T) {
	t.Parallel()
	if *update {
		t.Skip("fixtures being rewritten")
	}
	b, msgs, path, _ := oldDatabase(t, v1Fixture)

	// Read-only, the old schema is refused with a clear error.
	_, err := projections.Open(ctxFor(t), path, &projections.Options{ReadOnly: true})
	require.ErrorIs(t, err, projections.ErrSchemaOutdated)
	v1 := openV1(t, path)
	require.Equal(t, uint64(len(msgs)/2), v1.lastSeq)
	require.Equal(t, []int{1}, v1.versions)

	p := startProjector(t, b, path, nil)
	require.NoError(t, p.CatchUp(ctxFor(t)))
	require.Equal(t, uint64(len(msgs)), p.LastSeq())
	live := openDB(t, path, true)
	requireEqual(t, live, build(t, b, 0))
	migrated := openV1(t, path)
	require.Equal(t, allVersions(), migrated.versions)
	require.Positive(t, migrated.blameBefore, "blame backfilled for the facts the v1 database held")
}

// A database of schema version 2 (tasks, attempts, task tags and field
// blame keyed by task id) migrates to version 3 on start: its rows move to
// the tables keyed by task key, and the projector goes on from where the
// old one stopped; the result equals a fresh rebuild, row for row.
func TestMigrateFromV2(t *testing.T) {
	t.Parallel()
	if *update {
		t.Skip("fixtures being rewritten")
	}
	b, msgs, path, script := oldDatabase(t, v2Fixture)

	// The fixture is what exportSchema writes of it: nothing lost loading it.
	require.Equal(t, string(script), string(exportSchema(t, path, 2, projections.SchemaV2Objects)))
	_, err := projections.Open(ctxFor(t), path, &projections.Options{ReadOnly: true})
	require.ErrorIs(t, err, projections.ErrSchemaOutdated)
	v2 := openV1(t, path)
	require.Equal(t, uint64(len(msgs)/2), v2.lastSeq)
	require.Equal(t, []int{1, 2}, v2.versions)
	require.Positive(t, v2.blameBefore)
	counts := func() map[string]int {
		db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
		require.NoError(t, err)
		defer db.Close()
		m := map[string]int{}
		for _, tbl := range []string{"tasks", "task_tags", "attempts", "field_blame"} {
			var n int
			require.NoError(t, db.QueryRowContext(ctxFor(t), "SELECT count(*) FROM "+tbl).Scan(&n))
			require.Positive(t, n, tbl)
			m[tbl] = n
		}
		return m
	}
	before := counts()

	// Migrated, before the projector applies anything: the same rows,
	// and equal to a build of the same first half.
	db, err := projections.Open(ctxFor(t), path, nil)
	require.NoError(t, err)
	require.Equal(t, before, counts())
	requireEqual(t, db, build(t, b, uint64(len(msgs)/2)))
	require.NoError(t, db.Close())

	p := startProjector(t, b, path, nil)
	require.NoError(t, p.CatchUp(ctxFor(t)))
	require.Equal(t, uint64(len(msgs)), p.LastSeq())
	requireEqual(t, openDB(t, path, true), build(t, b, 0))
	migrated := openV1(t, path)
	require.Equal(t, allVersions(), migrated.versions)
	require.Equal(t, v2.blameBefore, migrated.blameBefore, "blame of the facts the v2 database held kept")
}

type v1State struct {
	lastSeq     uint64
	versions    []int
	blameBefore int // blame rows of facts at or below the v1 database's position
}

func openV1(t *testing.T, path string) v1State {
	t.Helper()
	ctx := ctxFor(t)
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	var st v1State
	require.NoError(t, db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&st.lastSeq))
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		st.versions = append(st.versions, v)
	}
	require.NoError(t, rows.Err())
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM field_blame WHERE seq <= ?`, len(projectionstest.ReadFile(t, logFixture))/2).Scan(&st.blameBefore)
	if err != nil && !strings.Contains(err.Error(), "no such table") {
		require.NoError(t, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		st.blameBefore = 0
	}
	return st
}

// Apply keeps the rows of tasks and attempts a batch changes in memory and
// writes them at the end of the batch: wherever the batches of the
// recorded log start and end, and whether the writer's caches survive
// between batches (a reopened database starts with none), and whether Apply
// prepares the events of a batch beside the writes (batches of more than a
// chunk) or before them, the projection is the golden dump; a batch applied
// again changes nothing.
func TestApplyBatchBoundaries(t *testing.T) {
	t.Parallel()
	if *update {
		t.Skip("fixtures being rewritten")
	}
	msgs := projectionstest.ReadFile(t, logFixture)
	want, err := os.ReadFile(goldenFixture)
	require.NoError(t, err)
	for _, tc := range []struct {
		size   int
		reopen bool
	}{{1, false}, {2, true}, {3, false}, {5, true}, {17, false}, {40, true}, {100, true}, {len(msgs), false}} {
		t.Run(fmt.Sprintf("size=%d,reopen=%t", tc.size, tc.reopen), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "p.db")
			db := openDB(t, path, false)
			for start := 0; start < len(msgs); start += tc.size {
				var batch []bus.Stored
				for i := start; i < min(start+tc.size, len(msgs)); i++ {
					batch = append(batch, msgs[i].Stored(uint64(i+1))...)
				}
				st, err := db.Apply(ctxFor(t), batch)
				require.NoError(t, err)
				require.Equal(t, len(batch), st.Applied)
				st, err = db.Apply(ctxFor(t), batch)
				require.NoError(t, err)
				require.Equal(t, len(batch), st.Skipped, "a batch applied again is skipped")
				if tc.reopen {
					require.NoError(t, db.Close())
					db = openDB(t, path, false)
				}
			}
			got := dumpBytes(t, db)
			if !bytes.Equal(want, got) {
				wl, gl := splitLines(want), splitLines(got)
				for i := range min(len(wl), len(gl)) {
					require.Equal(t, wl[i], gl[i], "dump line %d differs from %s", i+1, goldenFixture)
				}
				require.Len(t, gl, len(wl))
			}
		})
	}
}

// allVersions lists every schema version, 1 to projections.SchemaVersion.
func allVersions() []int {
	out := make([]int, projections.SchemaVersion)
	for i := range out {
		out[i] = i + 1
	}
	return out
}
