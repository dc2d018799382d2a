package console_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3" // the raw queries beside the API's

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/console"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// benchTasks is how many tasks the console benchmarks' projection holds.
var benchTasks = flag.Int("console.tasks", 1_000_000, "tasks in the console benchmarks' projection")

// benchDB is a projection of *benchTasks synthetic tasks (statuses,
// names, queues and creation times spread as a busy system's), built once
// per run: the rows the projector would write, inserted directly, since
// applying ~27 M events would take the benchmark's whole budget. One task
// in a thousand has its 27 facts, for the task page.
var benchDB struct {
	once   sync.Once
	path   string
	taskID string // a task with facts
	err    error
}

// benchStart is when the benchmark's first task was created; one more
// every 2 s.
var benchStart = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

var benchStatuses = []string{"success", "success", "success", "success", "success", "success", "error", "process", "new", "cancel"}

func buildBenchDB(b *testing.B) (string, string) {
	b.Helper()
	benchDB.once.Do(func() {
		dir, err := filepathTemp()
		if err != nil {
			benchDB.err = err
			return
		}
		benchDB.path = filepath.Join(dir, "console-bench.db")
		ctx := context.Background()
		db, err := projections.Open(ctx, benchDB.path, nil)
		if err != nil {
			benchDB.err = err
			return
		}
		_ = db.Close()
		benchDB.taskID, benchDB.err = fillBenchDB(ctx, benchDB.path, *benchTasks)
	})
	if benchDB.err != nil {
		b.Fatal(benchDB.err)
	}
	return benchDB.path, benchDB.taskID
}

// filepathTemp is where the benchmark's projection is kept between runs.
func filepathTemp() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("qtasks-console-bench-v2-%d", *benchTasks))
	return dir, os.MkdirAll(dir, 0o750)
}

func fillBenchDB(ctx context.Context, path string, n int) (string, error) {
	db, err := sql.Open("sqlite3", projections.DSN(path))
	if err != nil {
		return "", err
	}
	defer db.Close()
	var have int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM tasks`).Scan(&have); err != nil {
		return "", err
	}
	filled := have < n
	if filled {
		if err := fillTasks(ctx, db, n); err != nil {
			return "", err
		}
	}
	var calls int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM plugin_calls`).Scan(&calls); err != nil {
		return "", err
	}
	if calls == 0 {
		if err := fillCalls(ctx, db, n); err != nil {
			return "", err
		}
		filled = true
	}
	if filled {
		if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
			return "", err
		}
	}
	// The first task with its 27 facts.
	var withFacts string
	err = db.QueryRowContext(ctx, `SELECT id FROM task_keys WHERE key = 1`).Scan(&withFacts)
	return withFacts, err
}

// fillTasks writes n tasks, with one attempt each, and the 27 facts of
// one task in a thousand (the first, then every thousandth).
func fillTasks(ctx context.Context, db *sql.DB, n int) error {
	if _, err := db.ExecContext(ctx, `DELETE FROM plugin_calls; DELETE FROM facts; DELETE FROM attempts; DELETE FROM tasks;
		DELETE FROM task_keys`); err != nil {
		return err
	}
	// The facts' diffs column, as the projector stores it (one element per
	// call: its changes): the fact below's one call replaces /result.
	changes, err := projections.Diff([]byte(`{"result":3}`), []byte(`{"result":30}`))
	if err != nil {
		return err
	}
	diffs, err := json.Marshal([][]projections.Change{changes})
	if err != nil {
		return err
	}
	start := benchStart
	const batch = 20000
	seq := int64(0)
	for lo := 0; lo < n; lo += batch {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for i := lo; i < min(lo+batch, n); i++ {
			key := int64(i + 1)
			id := uuid.Must(uuid.NewV7()).String()
			status := benchStatuses[i%len(benchStatuses)]
			name := fmt.Sprintf("task%d", i%20)
			queue := []string{"default", "default", "default", "mail", "reports"}[i%5]
			created := start.Add(time.Duration(i) * 2 * time.Second).Format("2006-01-02T15:04:05.000000000Z")
			finished := any(nil)
			if status == "success" || status == "error" || status == "cancel" {
				finished = start.Add(time.Duration(i)*2*time.Second + 40*time.Millisecond).Format("2006-01-02T15:04:05.000000000Z")
			}
			seq += 27
			if _, err := tx.ExecContext(ctx, `INSERT INTO task_keys (key, id) VALUES (?, ?)`, key, id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO tasks (key, id, name, queue, priority, status, attempt, retries_left,
				args_submitted, kw_submitted, args_executed, kw_executed, result, worker, created_at, queued_at, started_at,
				finished_at, updated_at, first_seq, last_seq)
				VALUES (?, ?, ?, ?, 0, ?, 1, 0, '[]', '{"a":1,"b":2}', '[]', '{"a":1,"b":2}', '3', 'node-1', ?, ?, ?, ?, ?, ?, ?)`,
				key, id, name, queue, status, created, created, created, finished, created, seq-26, seq); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO attempts (task_key, attempt, status, worker, runs, queued_at, started_at,
				finished_at, result) VALUES (?, 1, ?, 'node-1', 1, ?, ?, ?, '3')`, key, status, created, created, finished); err != nil {
				return err
			}
			if i%1000 == 0 {
				for j := range 27 {
					if _, err := tx.ExecContext(ctx, `INSERT INTO facts (seq, task_key, trigger, component, attempt, run, time, event_id,
						source, data, diffs) VALUES (?, ?, 'task_executor_run_task', 'task_executor', 1, 1, ?, ?, 'qtasks/node-1',
						'{"input":{"result":3},"output":{"result":30},"calls":[{"plugin":"scale","version":"1","invocation":"x",
						"outcome":"applied","content_type":"application/json-patch+json",
						"patch":[{"op":"replace","path":"/result","value":30}],"latency_us":300}]}', ?)`,
						seq-26+int64(j), key, created, fmt.Sprintf("%s:1:1:t:%d", id, j), string(diffs)); err != nil {
						return err
					}
				}
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	_, err = db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, seq)
	return err
}

// fillCalls adds the plugin calls of a busy system, for the plugins and
// shadows pages (which read the newest projections.StatsWindow calls):
// one task in ten has a run_task fact with a call of the live plugin
// "scale", and one of those in two a call of its shadow "scale-next" too,
// whose patch agrees with the live one's in three firings of four. The
// rows are those the projector writes: the fact, its stored diffs, a
// plugin_calls row per call.
func fillCalls(ctx context.Context, db *sql.DB, n int) error {
	const batch = 20000
	for lo := 0; lo < n; lo += batch {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for i := lo; i < min(lo+batch, n); i++ {
			if i%10 != 5 {
				continue
			}
			key := int64(i + 1)
			seq := int64(27*(i+1) - 13) // inside the task's own range of sequences
			created := benchStart.Add(time.Duration(i) * 2 * time.Second).Format("2006-01-02T15:04:05.000000000Z")
			latency := int64(200 + i%700)
			calls := []string{fmt.Sprintf(`{"plugin":"scale","version":"1","invocation":"i%d-0","outcome":"applied",`+
				`"content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":30}],"latency_us":%d}`, i, latency)}
			diffs := `[[{"op":"replace","path":"/result","old":3,"new":30}]]`
			shadowValue := 30
			if i/20%4 == 0 {
				shadowValue = 36
			}
			shadow := i%20 == 5
			if shadow {
				calls = append(calls, fmt.Sprintf(`{"plugin":"scale-next","version":"2","invocation":"i%d-1","outcome":"shadow",`+
					`"content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":%d}],"latency_us":%d,"shadow":true}`,
					i, shadowValue, latency+100))
				diffs = fmt.Sprintf(`[[{"op":"replace","path":"/result","old":3,"new":30}],[{"op":"replace","path":"/result","old":30,"new":%d}]]`, shadowValue)
			}
			data := `{"input":{"result":3},"output":{"result":30},"calls":[` + strings.Join(calls, ",") + `]}`
			if _, err := tx.ExecContext(ctx, `INSERT INTO facts (pos, seq, idx, task_key, trigger, component, attempt, run, time, event_id,
				source, data, diffs) VALUES (?, ?, 0, ?, 'task_executor_run_task', 'task_executor', 1, 1, ?, ?, 'qtasks/node-1', ?, ?)`,
				seq<<16, seq, key, created, fmt.Sprintf("e%d:1:1:run", i), data, diffs); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO plugin_calls (fact_seq, fact_idx, idx, task_key, trigger, attempt, plugin, version,
				invocation, outcome, content_type, patch, latency_us, shadow) VALUES (?, 0, 0, ?, 'task_executor_run_task', 1, 'scale', '1', ?,
				'applied', 'application/json-patch+json', '[{"op":"replace","path":"/result","value":30}]', ?, 0)`,
				seq, key, fmt.Sprintf("i%d-0", i), latency); err != nil {
				return err
			}
			if shadow {
				if _, err := tx.ExecContext(ctx, `INSERT INTO plugin_calls (fact_seq, fact_idx, idx, task_key, trigger, attempt, plugin, version,
					invocation, outcome, content_type, patch, latency_us, shadow) VALUES (?, 0, 1, ?, 'task_executor_run_task', 1, 'scale-next', '2', ?,
					'shadow', 'application/json-patch+json', ?, ?, 1)`,
					seq, key, fmt.Sprintf("i%d-1", i), fmt.Sprintf(`[{"op":"replace","path":"/result","value":%d}]`, shadowValue), latency+100); err != nil {
					return err
				}
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// timed runs fn b.N times and reports the p50 and p99 of one call, and
// the process's CPU time per call (all threads: the garbage collector's
// work included), which a loaded machine disturbs less than the latencies.
func timed(b *testing.B, fn func()) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		fn()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(len(lat)), "cpu-us/op")
	slices.Sort(lat)
	q := func(p int) float64 {
		return float64(lat[min(len(lat)-1, len(lat)*p/100)].Microseconds()) / 1000
	}
	b.ReportMetric(q(50), "p50-ms")
	b.ReportMetric(q(99), "p99-ms")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConsole times the pages' API calls (handler time, JSON
// included, on a real bus for the lag) beside the raw SQLite query each
// runs, on a projection of -console.tasks tasks (1 M by default; built once
// under the system's temporary directory, kept for the next run):
//
//	go test -run NONE -bench Console -benchtime 200x ./internal/console
func BenchmarkConsole(b *testing.B) {
	path, taskID := buildBenchDB(b)
	ctx := context.Background()
	view, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer view.Close()
	raw, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	bb := bustest.Open(b, nil)
	h := console.New(console.Config{Bus: bb, Projection: view, Applied: func() uint64 { return 0 }})
	get := func(url string) func() {
		return func() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, url, nil))
			if w.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", url, w.Code, w.Body.String())
			}
		}
	}
	// scan reads every row that query returns into any, as a one-off
	// query would (one set of destinations for all the rows), and returns
	// the first row's first column.
	scan := func(query func() (*sql.Rows, error)) any {
		rows, err := query()
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			b.Fatal(err)
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		var first any
		for n := 0; rows.Next(); n++ {
			if err := rows.Scan(ptrs...); err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				first = vals[0]
			}
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		return first
	}
	query := func(q string, args ...any) func() {
		return func() { scan(func() (*sql.Rows, error) { return raw.QueryContext(ctx, q, args...) }) }
	}
	// prepare prepares q on raw once, as the projection's readers do.
	prepare := func(q string) *sql.Stmt {
		s, err := raw.PrepareContext(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	const cols = `t.id, t.name, t.queue, t.priority, t.status, t.attempt, t.retries_left, t.args_submitted, t.kw_submitted,
		t.args_executed, t.kw_executed, t.result, t.error, t.reason, t.retry_parent, t.retry_child, t.worker, t.tags, t.extra,
		t.idempotency_key, t.trace, t.created_at, t.queued_at, t.started_at, t.executed_at, t.finished_at, t.updated_at,
		t.first_seq, t.last_seq`
	taskCols := strings.ReplaceAll(cols, "\t", "")
	b.Run("tasks-page/api", func(b *testing.B) { timed(b, get("/api/v1/tasks?limit=25")) })
	b.Run("tasks-page/raw", func(b *testing.B) {
		timed(b, query(`SELECT `+cols+` FROM tasks t ORDER BY t.created_at DESC, t.id DESC LIMIT 26`))
	})
	b.Run("tasks-page-error/api", func(b *testing.B) { timed(b, get("/api/v1/tasks?limit=25&status=error")) })
	b.Run("tasks-page-error/raw", func(b *testing.B) {
		timed(b, query(`SELECT `+cols+` FROM tasks t WHERE t.status = 'error' ORDER BY t.created_at DESC, t.id DESC LIMIT 26`))
	})
	b.Run("tasks-page-queue/api", func(b *testing.B) { timed(b, get("/api/v1/tasks?limit=25&queue=reports")) })
	b.Run("tasks-page-queue/raw", func(b *testing.B) {
		timed(b, query(`SELECT `+cols+` FROM tasks t WHERE t.queue = 'reports' ORDER BY t.created_at DESC, t.id DESC LIMIT 26`))
	})
	b.Run("task-page/api", func(b *testing.B) { timed(b, get("/api/v1/tasks/"+taskID+"/timeline")) })
	// The task page's raw side is the four statements the page runs
	// (projections.DB.AppendTimelineJSON: the task with its attempts, the
	// plugin events, the facts, the operators' actions), their text as
	// the projection has it, prepared once as its readers prepare them,
	// the task's key from the first passed to the other three.
	taskStmt := prepare(`SELECT t.key, ` + taskCols + `, a.attempt, a.status, a.worker, a.runs,
		a.queued_at, a.started_at, a.executed_at, a.finished_at, a.result, a.error, a.reason, a.retry_parent, a.retry_child,
		a.final_seq FROM tasks t LEFT JOIN attempts a ON a.task_key = t.key
		WHERE t.key = (SELECT key FROM task_keys WHERE id = ?) ORDER BY a.attempt`)
	eventsStmt := prepare(`SELECT kind, invocation, min(seq) FROM plugin_events
		WHERE task_key = +? GROUP BY kind, invocation`)
	factsStmt := prepare(`SELECT seq, idx, time, trigger, component, attempt, run, event_id, source, data,
		replay, diffs FROM facts WHERE task_key = +? ORDER BY pos`)
	actionsStmt := prepare(`SELECT o.seq, o.action, coalesce(k.id, ''), o.attempt, o.queue, o.by_whom, o.reason, o.time
		FROM operator_actions o LEFT JOIN task_keys k ON k.key = o.task_key WHERE o.task_key = +? ORDER BY o.seq`)
	b.Run("task-page/raw", func(b *testing.B) {
		timed(b, func() {
			key := scan(func() (*sql.Rows, error) { return taskStmt.QueryContext(ctx, taskID) })
			for _, s := range []*sql.Stmt{eventsStmt, factsStmt, actionsStmt} {
				scan(func() (*sql.Rows, error) { return s.QueryContext(ctx, key) })
			}
		})
	})
	// The facts query alone, as a one-off query: the raw side of the
	// figures before 2026-12-07 (docs/BENCHMARKS.md).
	b.Run("task-page/raw-facts", func(b *testing.B) {
		timed(b, query(`SELECT seq, idx, time, trigger, component, attempt, run, event_id, source, data, coalesce(replay, ''), diffs
			FROM facts WHERE task_key = (SELECT key FROM task_keys WHERE id = ?) ORDER BY pos`, taskID))
	})
	// The plugins and shadows pages, with the live plugin and its shadow
	// registered (the calls are in the projection: fillCalls).
	noPatch := plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	})
	for _, spec := range []plugins.Spec{
		{Name: "scale", Version: "1", Triggers: []string{events.TaskExecutorRunTask}, Plugin: noPatch},
		{Name: "scale-next", Version: "2", Mode: plugins.Shadow, ShadowOf: "scale", Triggers: []string{events.TaskExecutorRunTask}, Plugin: noPatch},
	} {
		r, err := plugins.Start(ctx, bb, spec)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = r.Stop(ctx) }()
	}
	const statsQuery = `SELECT plugin, version, shadow, outcome, latency_us, fact_seq
		FROM (SELECT * FROM plugin_calls ORDER BY fact_seq DESC, fact_idx DESC LIMIT ?)`
	const shadowQuery = `SELECT f.seq, f.trigger, f.data FROM facts f WHERE f.pos IN
		(SELECT w.fact_seq * 65536 + w.fact_idx FROM (SELECT fact_seq, fact_idx, plugin, shadow FROM plugin_calls ORDER BY fact_seq DESC, fact_idx DESC LIMIT ?) w
		 WHERE w.plugin = ? AND w.shadow = 1) ORDER BY f.pos`
	b.Run("plugins-page/api", func(b *testing.B) { timed(b, get("/api/v1/plugins")) })
	b.Run("plugins-page/raw", func(b *testing.B) { timed(b, query(statsQuery, projections.StatsWindow)) })
	b.Run("shadows-page/api", func(b *testing.B) { timed(b, get("/api/v1/shadows")) })
	b.Run("shadows-page/raw", func(b *testing.B) {
		stats, shadow := query(statsQuery, projections.StatsWindow), query(shadowQuery, projections.StatsWindow, "scale-next")
		timed(b, func() { stats(); shadow() })
	})
	b.Run("throughput/api", func(b *testing.B) { timed(b, get("/api/v1/throughput?window=1h&step=1m")) })
}
