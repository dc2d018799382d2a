package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// updateShots writes the screenshots into docs/screenshots, for the README.
var updateShots = flag.Bool("update-screenshots", false, "write the console's screenshots to docs/screenshots")

const waitLimit = 2 * time.Minute

var qtasksd, scaleplugin string

func TestMain(m *testing.M) {
	flag.Parse()
	testkit.Main(m, testkit.Bin{Path: &qtasksd, Pkg: "../../cmd/qtasksd"}, testkit.Bin{Path: &scaleplugin, Pkg: "../../examples/scaleplugin"})
}

// daemon is a qtasksd process with its HTTP and NATS addresses.
type daemon struct {
	proc *testkit.Proc
	http string // http://127.0.0.1:port
	nats string
}

var (
	httpRE = regexp.MustCompile(`"msg":"HTTP listening"[^\n]*"addr":"([0-9.:]+)"`)
	natsRE = regexp.MustCompile(`nats://127\.0\.0\.1:[0-9]+`)
)

// startDaemon runs qtasksd with its demo tasks, HTTP on a free port.
func startDaemon(t *testing.T, dir string, more ...string) daemon {
	t.Helper()
	args := append([]string{
		"run", "--data-dir", filepath.Join(dir, "data"), "--db", filepath.Join(dir, "p.db"),
		"--port", "0", "--http", "127.0.0.1:0", "--log-level", "info", "--demo",
	}, more...)
	p := testkit.StartProc(t, dir, qtasksd, args...)
	bustest.WaitFor(t, waitLimit, "qtasksd to be ready", func() bool {
		require.False(t, p.Exited(), "qtasksd exited: %s", p.Output())
		return strings.Contains(p.Output(), `"qtasksd ready"`)
	})
	m := httpRE.FindStringSubmatch(p.Output())
	require.NotNil(t, m, "no HTTP address in %s", p.Output())
	return daemon{proc: p, http: "http://" + m[1], nats: natsRE.FindString(p.Output())}
}

// startPlugin runs examples/scaleplugin as plugin name, multiplying results
// by factor (more: its other flags), and waits until it is registered.
func startPlugin(t *testing.T, d daemon, name, factor string, more ...string) {
	t.Helper()
	p := testkit.StartProc(t, "", scaleplugin, append([]string{"--nats-url", d.nats, "--name", name, "--factor", factor}, more...)...)
	bustest.WaitFor(t, waitLimit, "plugin "+name+" to be ready", func() bool {
		require.False(t, p.Exited(), "plugin exited: %s", p.Output())
		return strings.Contains(p.Output(), "ready")
	})
}

// submit posts a task over HTTP and waits for it to end.
func submit(t *testing.T, d daemon, name, kw string) map[string]any {
	t.Helper()
	return post(t, d, "/tasks/"+name+"?wait=30s", kw)
}

// post posts body to path and decodes the answer.
func post(t *testing.T, d daemon, path, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, d.http+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Less(t, resp.StatusCode, 300, string(out))
	var rec map[string]any
	require.NoError(t, json.Unmarshal(out, &rec), string(out))
	return rec
}

// getJSON reads an API answer.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.NoError(t, json.Unmarshal(body, v), string(body))
}

// browser starts headless Chromium, or skips when the machine has none
// (CI installs it and sets QTASKS_REQUIRE_CHROMIUM=1, which turns the skip
// into a failure).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if lp, err := exec.LookPath(p); err == nil {
			path = lp
			break
		}
	}
	if path == "" {
		if os.Getenv("QTASKS_REQUIRE_CHROMIUM") != "" {
			t.Fatal("QTASKS_REQUIRE_CHROMIUM is set but no chromium is installed")
		}
		t.Skip("no chromium on this machine (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first action starts the browser, which lives as long as the
	// context of that call: no deadline on it, one on what follows.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	return ctx
}

// shot saves a screenshot of the page as a test artifact (in
// $QTASKS_ARTIFACTS when set), and into docs/screenshots with
// -update-screenshots.
func shot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	dir := os.Getenv("QTASKS_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	// G703: the directory is the one whoever runs the tests named in
	// $QTASKS_ARTIFACTS; writing there is the point.
	require.NoError(t, os.MkdirAll(dir, 0o750))                                   //nolint:gosec // G703: see above
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o600)) //nolint:gosec // G703: see above
	if *updateShots {
		//nolint:gosec // G306: a file of the checkout (docs/screenshots), readable as the rest of it is
		require.NoError(t, os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", name+".png"), png, 0o644))
	}
}

// textOf reads the text of the first element matching sel.
func textOf(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err)
	return s
}

// waitText waits until the first element matching sel shows want.
func waitText(ctx context.Context, t *testing.T, sel, want string) {
	t.Helper()
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)
	bustest.WaitFor(t, waitLimit, sel+" to show "+want, func() bool {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		require.NoError(t, err)
		return strings.Contains(got, want)
	})
}

// publishRogue stores a message that is not an event on a fact subject of
// the log, and returns its sequence.
func publishRogue(t *testing.T, d daemon) uint64 {
	t.Helper()
	nc, err := nats.Connect(d.nats)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ack, err := js.Publish(ctx, events.FactSubject(events.StorageAdd, "default"), []byte("not an event"))
	require.NoError(t, err)
	return ack.Sequence
}

// markPage sets a mark on the page's window, which a reload would lose.
func markPage(ctx context.Context, t *testing.T) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.qtasksMark = true`))
	require.NoError(t, err)
}

// requireMarked fails unless the page still has markPage's mark: it was
// updated in place, not reloaded.
func requireMarked(ctx context.Context, t *testing.T) {
	t.Helper()
	marked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.qtasksMark === true`))
	require.NoError(t, err)
	require.True(t, marked, "the page was reloaded")
}

// The console in a real browser against a real qtasksd with two plugins in
// processes of their own: the tasks page lists and filters, updates without
// a reload, the task page shows both plugins' patches as diffs and the
// blame, the plugins, queues and problems pages show what the log holds.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	dir := t.TempDir()
	d := startDaemon(t, dir)
	startPlugin(t, d, "scale", "10")
	startPlugin(t, d, "double", "2")
	// A candidate for scale, as a shadow: its ×12 differs from scale's ×10
	// wherever the result is a number.
	startPlugin(t, d, "scale-next", "12", "--shadow-of", "scale")

	// A message on the log that no qtasks component wrote: the problems
	// page lists it.
	rogueSeq := publishRogue(t, d)

	add := submit(t, d, "add", `{"a":1,"b":2}`)
	require.Equal(t, "success", add["status"])
	require.EqualValues(t, 60, add["result"], "(1+2)×10×2")
	addID := add["id"].(string)
	failed := submit(t, d, "fail", `{}`)
	require.Equal(t, "error", failed["status"])
	for i := range 3 {
		submit(t, d, "echo", fmt.Sprintf(`{"n":%d}`, i))
	}
	// The pages read the projection: wait until it holds the last task.
	bustest.WaitFor(t, waitLimit, "the projection to catch up", func() bool {
		var st struct {
			Projection struct{ Lag uint64 } `json:"projection"`
			Tasks      map[string]int       `json:"tasks"`
		}
		getJSON(t, d.http+"/api/v1/status", &st)
		return st.Projection.Lag == 0 && st.Tasks["success"]+st.Tasks["error"] == 5
	})

	// Tasks page: every task, newest first.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+addID+`"]`)),
	))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#tasks tbody tr").length`))
	require.NoError(t, err)
	require.Equal(t, 5, rows)
	require.Contains(t, textOf(ctx, t, `#lag`), "up to date")
	// The chart: throughput and outcomes over time, one bar segment per
	// status and step; 4 successes and 1 error in the last hour.
	chartSums := func() map[string]int {
		sums, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`(() => {
			const m = {};
			for (const r of document.querySelectorAll("svg#throughput rect[data-status]")) m[r.dataset.status] = (m[r.dataset.status] || 0) + Number(r.dataset.n);
			return m; })()`))
		require.NoError(t, err)
		return sums
	}
	require.Equal(t, map[string]int{"success": 4, "error": 1}, chartSums())
	require.Equal(t, "5 finished · 1 error (20.0%)", textOf(ctx, t, `#chart-summary`))
	require.Contains(t, textOf(ctx, t, `#chart-title`), "per minute, last hour")
	// Another window: the same tasks in 15-minute bars.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`.chart-windows button[data-window="24h"]`)),
	))
	waitText(ctx, t, `#chart-title`, "per 15 minutes, last 24 hours")
	require.Equal(t, map[string]int{"success": 4, "error": 1}, chartSums())
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`.chart-windows button[data-window="1h"]`)),
	))
	waitText(ctx, t, `#chart-title`, "per minute, last hour")
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+addID+`"]`))))
	shot(ctx, t, "tasks")

	// Live: a task submitted now appears without a reload.
	live := submit(t, d, "echo", `{"n":99}`)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+live["id"].(string)+`"]`))))

	// Filter by status: only the failed task. The failed task is on the
	// unfiltered page too, so wait for the filtered page itself: the URL
	// says the filter, and the list holds one row.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#f-status`), "error"),
		chromedp.Click(chromedp.CSS(`#f-apply`)),
	))
	bustest.WaitFor(t, waitLimit, "the list filtered by status", func() bool {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](
			`location.hash.includes("status=error") ? document.querySelectorAll("#tasks tbody tr").length : -1`))
		require.NoError(t, err)
		return n == 1
	})
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+failed["id"].(string)+`"]`))))

	// The task page: both plugins' calls, each with its patch as a diff.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#tasks tr[data-id="`+failed["id"].(string)+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#task-status`)),
	))
	require.Contains(t, textOf(ctx, t, `#task-status`), "error")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/task/"+addID),
		chromedp.WaitVisible(chromedp.CSS(`.call[data-plugin="double"] .diff`)),
	))
	scale := textOf(ctx, t, `.call[data-plugin="scale"]`)
	require.Contains(t, scale, "applied")
	require.Contains(t, scale, "/result: 3 → 30")
	double := textOf(ctx, t, `.call[data-plugin="double"]`)
	require.Contains(t, double, "/result: 30 → 60")
	// The shadow of scale saw what scale saw (3), not what the chain made
	// of it (60).
	require.Contains(t, textOf(ctx, t, `.call[data-plugin="scale-next"]`), "/result: 3 → 36")
	require.Contains(t, textOf(ctx, t, `#blame`), "double")
	require.Contains(t, textOf(ctx, t, `#task-result`), "60")
	shot(ctx, t, "task")

	// Plugins: both registered, with their calls.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/plugins"),
		chromedp.WaitVisible(chromedp.CSS(`#plugins tr[data-plugin="double"]`)),
	))
	require.Contains(t, textOf(ctx, t, `#plugins tr[data-plugin="scale"]`), "task_executor_run_task")
	// Its shadow, under the live plugin, with how often it differed: only
	// add's result is a number, so 1 of its calls differs.
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#shadows tr[data-shadow="scale-next"][data-of="scale"]`))))
	shadowRow := textOf(ctx, t, `#shadows tr[data-shadow="scale-next"]`)
	require.Regexp(t, `\b1 of \d+ differ`, shadowRow)
	require.Contains(t, textOf(ctx, t, `#plugins tr[data-plugin="scale"]`), "shadowed by scale-next")
	shot(ctx, t, "plugins")

	// Retry the failed task from its page: attempt 2 is queued (and fails
	// again, as the demo task does), the action is in its timeline.
	failedID := failed["id"].(string)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/task/"+failedID),
		chromedp.WaitVisible(chromedp.CSS(`#retry`)),
		chromedp.SetValue(chromedp.CSS(`#action-reason`), "try once more"),
		chromedp.Click(chromedp.CSS(`#retry`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li.operator[data-action="retry"]`)),
	))
	require.Contains(t, textOf(ctx, t, `#timeline li.operator[data-action="retry"]`), "try once more")
	bustest.WaitFor(t, waitLimit, "attempt 2 to end", func() bool {
		var td struct {
			Task struct {
				Attempt int
				Status  string
			}
		}
		getJSON(t, d.http+"/api/v1/tasks/"+failedID, &td)
		return td.Task.Attempt == 2 && td.Task.Status == "error"
	})

	// Cancel a running task from its page: its status changes without a
	// reload.
	sleeping := post(t, d, "/tasks/sleep", `{"ms":600000}`)
	sleepID := sleeping["id"].(string)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/task/"+sleepID),
		chromedp.WaitVisible(chromedp.CSS(`#task-status .s-process`)),
		chromedp.SetValue(chromedp.CSS(`#action-reason`), "runaway"),
		chromedp.Click(chromedp.CSS(`#cancel`)),
		chromedp.WaitVisible(chromedp.CSS(`#task-status .s-cancel`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li.operator[data-action="cancel"]`)),
	))
	shot(ctx, t, "task-cancelled")

	// A running task cancelled from elsewhere (the API, as the CLI or
	// another operator would): the open page shows it without a reload
	// (the mark set on the page's window survives).
	sleeping = post(t, d, "/tasks/sleep", `{"ms":600000}`)
	sleepID = sleeping["id"].(string)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/task/"+sleepID),
		chromedp.WaitVisible(chromedp.CSS(`#task-status .s-process`)),
	))
	markPage(ctx, t)
	post(t, d, "/api/v1/tasks/"+sleepID+"/cancel", `{"reason":"from the API"}`)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#task-status .s-cancel`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline li.operator[data-action="cancel"]`)),
	))
	require.Contains(t, textOf(ctx, t, `#timeline li.operator[data-action="cancel"]`), "from the API")
	requireMarked(ctx, t)

	// Pause the queue from its page: a submission waits, queued, on the
	// queues page and as new on the tasks page; resumed (from elsewhere),
	// it runs, and the tasks page shows it without a reload.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/queues"),
		chromedp.Click(chromedp.CSS(`#queues tr[data-queue="default"] button[data-action="pause"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#queues tr[data-queue="default"] .q-paused`)),
	))
	waiting := post(t, d, "/tasks/echo", `{"n":7}`)
	waitingID := waiting["id"].(string)
	waitText(ctx, t, `#queues tr[data-queue="default"] td:nth-child(3)`, "1")
	shot(ctx, t, "queues")
	var td struct{ Task struct{ Status string } }
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/"),
		chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+waitingID+`"] .s-new`)),
	))
	getJSON(t, d.http+"/api/v1/tasks/"+waitingID, &td)
	require.Equal(t, "new", td.Task.Status, "a paused queue's task waits")
	markPage(ctx, t)
	post(t, d, "/api/v1/queues/default/resume", `{"reason":"deployed"}`)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#tasks tr[data-id="`+waitingID+`"] .s-success`))))
	requireMarked(ctx, t)

	// Pause again (from elsewhere) and resume from the queues page.
	post(t, d, "/api/v1/queues/default/pause", `{}`)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/queues"),
		chromedp.WaitVisible(chromedp.CSS(`#queues tr[data-queue="default"] .q-paused`)),
		chromedp.Click(chromedp.CSS(`#queues tr[data-queue="default"] button[data-action="resume"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#queues tr[data-queue="default"] .q-running`)),
	))
	resumed := submit(t, d, "echo", `{"n":8}`)
	require.Equal(t, "success", resumed["status"])

	// Problems: the message that is not an event, with the reason.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/problems"),
		chromedp.WaitVisible(chromedp.CSS(`#rejected tr[data-seq="`+fmt.Sprint(rogueSeq)+`"]`)),
	))
	require.Contains(t, textOf(ctx, t, `#rejected tr[data-seq="`+fmt.Sprint(rogueSeq)+`"]`), "storage_add")
	shot(ctx, t, "problems")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/problems?tab=dead"),
		chromedp.WaitVisible(chromedp.CSS(`.tabs a.active[href="#/problems?tab=dead"]`)),
	))

	// Dark mode renders too.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(d.http+"/#/task/"+addID),
		chromedp.WaitVisible(chromedp.CSS(`.call[data-plugin="double"] .diff`)),
		chromedp.Click(chromedp.CSS(`#theme`)),
		chromedp.WaitVisible(chromedp.CSS(`html[data-theme="dark"]`)),
	))
	shot(ctx, t, "task-dark")
}
