package events

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// qtasksTriggers is the full list of trigger names of QTasks (QTASKS-SPEC §1.1,
// 56 names). The catalog must carry every one of them, verbatim.
var qtasksTriggers = []string{
	// QueueTasks
	"qtasks_add_task_before_broker", "qtasks_add_task_after_broker", "qtasks_get",
	"qtasks_stop", "qtasks_ping", "qtasks_flush_all",
	// Broker
	"broker_start", "broker_listen_start", "broker_add_worker", "broker_add_before",
	"broker_add_after", "broker_get", "broker_update", "broker_remove_finished_task",
	"broker_running_older_tasks", "broker_stop", "broker_flush_all",
	// Storage
	"storage_start", "storage_delete_finished_tasks", "storage_running_older_tasks",
	"storage_add", "storage_add_process", "storage_get", "storage_get_all",
	"storage_update", "storage_remove_finished_task", "storage_stop", "storage_flush_all",
	// GlobalConfig
	"global_config_start", "global_config_set_status", "global_config_set",
	"global_config_get", "global_config_get_all", "global_config_get_match",
	"global_config_stop",
	// Worker
	"worker_start", "worker_add", "worker_execute_before", "worker_run_task_before",
	"worker_task_error_retry", "worker_remove_finished_task", "worker_execute_after",
	"worker_stop",
	// TaskExecutor
	"task_executor_middlewares_execute", "task_executor_args_replace",
	"task_executor_before_execute", "task_executor_run_task", "task_executor_run_task_gen",
	"task_executor_run_task_trigger_error", "task_executor_after_execute",
	"task_executor_after_execute_result_replace", "task_executor_decode",
	"task_executor_task_close",
	// Starter
	"starter_start", "starter_stop",
	// Stats
	"stats_inspect",
}

func TestCatalog(t *testing.T) {
	t.Parallel()

	cat := Catalog()

	t.Run("HasAllQTasksNames", func(t *testing.T) {
		t.Parallel()
		require.Len(t, qtasksTriggers, 56, "the reference list itself must hold the QTasks count")

		have := make(map[string]bool, len(cat))
		for _, tr := range cat {
			have[tr.Name] = true
		}
		var missing, extra []string
		for _, n := range qtasksTriggers {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		for _, tr := range cat {
			if !slices.Contains(qtasksTriggers, tr.Name) {
				extra = append(extra, tr.Name)
			}
		}
		require.Empty(t, missing, "QTasks triggers missing from the catalog")
		require.Empty(t, extra, "catalog names that QTasks does not have")
		require.Len(t, cat, 56)
	})

	t.Run("NamesUnique", func(t *testing.T) {
		t.Parallel()
		seen := map[string]int{}
		for i, tr := range cat {
			j, dup := seen[tr.Name]
			require.False(t, dup, "trigger %q at %d and %d", tr.Name, j, i)
			seen[tr.Name] = i
		}
	})

	t.Run("NamesAreSubjectTokens", func(t *testing.T) {
		t.Parallel()
		for _, tr := range cat {
			require.True(t, ValidToken(tr.Name), tr.Name)
			require.Equal(t, strings.ToLower(tr.Name), tr.Name)
		}
	})

	t.Run("ComponentPrefix", func(t *testing.T) {
		t.Parallel()
		// Every QTasks trigger name starts with its component's name.
		for _, tr := range cat {
			require.True(t, strings.HasPrefix(tr.Name, string(tr.Component)+"_"),
				"%s fired by %s", tr.Name, tr.Component)
		}
	})

	t.Run("KnownComponentAndScope", func(t *testing.T) {
		t.Parallel()
		components := []Component{
			ComponentQTasks, ComponentBroker, ComponentStorage, ComponentGlobalConfig,
			ComponentWorker, ComponentTaskExecutor, ComponentStarter, ComponentStats,
		}
		for _, tr := range cat {
			require.Contains(t, components, tr.Component, tr.Name)
			require.Contains(t, []Scope{ScopeTask, ScopeProcess, ScopeNone}, tr.Scope, tr.Name)
		}
	})

	t.Run("ReturnableTaskTriggersHavePaths", func(t *testing.T) {
		t.Parallel()
		n := 0
		for _, tr := range cat {
			if tr.Scope == ScopeTask && tr.Returnable {
				n++
				require.NotEmpty(t, tr.Paths, tr.Name)
			}
		}
		require.Positive(t, n)
	})

	t.Run("OnlyTaskTriggersAreReturnable", func(t *testing.T) {
		t.Parallel()
		for _, tr := range cat {
			if tr.Returnable {
				require.Equal(t, ScopeTask, tr.Scope, tr.Name)
			}
		}
	})

	t.Run("OneWayTriggersHaveNoPaths", func(t *testing.T) {
		t.Parallel()
		for _, tr := range cat {
			if !tr.Returnable {
				require.Empty(t, tr.Paths, tr.Name)
				require.False(t, tr.Allows("/"), tr.Name)
				require.False(t, tr.Allows(""), tr.Name)
			}
		}
	})

	t.Run("PathsAreJSONPointers", func(t *testing.T) {
		t.Parallel()
		for _, tr := range cat {
			seen := map[string]bool{}
			for _, p := range tr.Paths {
				require.True(t, strings.HasPrefix(p, "/"), "%s: %q", tr.Name, p)
				require.False(t, strings.HasSuffix(p, "/"), "%s: %q", tr.Name, p)
				require.NotContains(t, p, "//", "%s: %q", tr.Name, p)
				require.False(t, seen[p], "%s: duplicate path %q", tr.Name, p)
				seen[p] = true
				require.True(t, tr.Allows(p), "%s must allow its own path %q", tr.Name, p)
			}
		}
	})

	t.Run("ScopeNoneHasNote", func(t *testing.T) {
		t.Parallel()
		n := 0
		for _, tr := range cat {
			if tr.Scope == ScopeNone {
				n++
				require.NotEmpty(t, tr.Note, tr.Name)
				require.False(t, tr.Returnable, tr.Name)
				require.False(t, tr.Lifecycle, tr.Name)
				require.Zero(t, tr.Order, tr.Name)
			}
		}
		require.Positive(t, n)
	})

	t.Run("TaskOrderNonDecreasing", func(t *testing.T) {
		t.Parallel()
		prev := 0
		first := true
		for _, tr := range cat {
			if tr.Scope != ScopeTask {
				continue
			}
			require.Positive(t, tr.Order, tr.Name)
			if !first {
				require.GreaterOrEqual(t, tr.Order, prev, "%s comes after order %d", tr.Name, prev)
			}
			prev, first = tr.Order, false
		}
	})

	t.Run("TaskTriggersFirst", func(t *testing.T) {
		t.Parallel()
		// Task triggers in lifecycle order first, then process, then none.
		rank := map[Scope]int{ScopeTask: 0, ScopeProcess: 1, ScopeNone: 2}
		for i := 1; i < len(cat); i++ {
			require.LessOrEqual(t, rank[cat[i-1].Scope], rank[cat[i].Scope],
				"%s (%s) before %s (%s)", cat[i-1].Name, cat[i-1].Scope, cat[i].Name, cat[i].Scope)
		}
	})

	t.Run("ProcessTriggersHaveNoOrder", func(t *testing.T) {
		t.Parallel()
		for _, tr := range cat {
			if tr.Scope == ScopeProcess {
				require.Zero(t, tr.Order, tr.Name)
				require.False(t, tr.Lifecycle, tr.Name)
			}
		}
	})

	t.Run("LifecycleTriggers", func(t *testing.T) {
		t.Parallel()
		var got []string
		for _, tr := range cat {
			if tr.Lifecycle {
				require.Equal(t, ScopeTask, tr.Scope, tr.Name)
				got = append(got, tr.Name)
			}
		}
		// The status changes of a task: new, resumed, process, retry, final.
		require.ElementsMatch(t, []string{
			StorageAdd, BrokerRunningOlderTasks, StorageUpdate,
			WorkerTaskErrorRetry, StorageRemoveFinishedTask,
		}, got)
	})
}

func TestLookup(t *testing.T) {
	t.Parallel()

	t.Run("EveryCatalogEntry", func(t *testing.T) {
		t.Parallel()
		for _, want := range Catalog() {
			got, ok := Lookup(want.Name)
			require.True(t, ok, want.Name)
			require.Equal(t, want, got)
		}
	})

	t.Run("Known", func(t *testing.T) {
		t.Parallel()
		tr, ok := Lookup(TaskExecutorArgsReplace)
		require.True(t, ok)
		require.Equal(t, TaskExecutorArgsReplace, tr.Name)
		require.Equal(t, ComponentTaskExecutor, tr.Component)
		require.Equal(t, ScopeTask, tr.Scope)
		require.True(t, tr.Returnable)
		require.Equal(t, []string{"/args", "/kw"}, tr.Paths)
	})

	for _, name := range []string{"", "nope", "STORAGE_ADD", "storage_add ", "io.qtasks.trigger.storage_add"} {
		t.Run("Unknown/"+name, func(t *testing.T) {
			t.Parallel()
			_, ok := Lookup(name)
			require.False(t, ok)
		})
	}
}

func TestCatalogIsACopy(t *testing.T) {
	t.Parallel()

	a := Catalog()
	for i := range a {
		a[i].Name = "mutated"
		if len(a[i].Paths) > 0 {
			a[i].Paths[0] = "/mutated"
		}
	}
	b := Catalog()
	require.NotEqual(t, "mutated", b[0].Name)
	tr, ok := Lookup(TaskExecutorArgsReplace)
	require.True(t, ok)
	require.Equal(t, []string{"/args", "/kw"}, tr.Paths)
	for _, tr := range b {
		require.NotContains(t, tr.Paths, "/mutated")
	}
}

func TestTriggerAllows(t *testing.T) {
	t.Parallel()

	tr := Trigger{Name: "t", Returnable: true, Paths: []string{"/kw", "/model/extra"}}
	tests := []struct {
		path string
		want bool
	}{
		{"/kw", true},
		{"/kw/x", true},
		{"/kw/x/y", true},
		{"/kw/", true}, // the key "" inside kw
		{"/kwx", false},
		{"/kw~1x", false}, // the key "kw/x" at the top
		{"/k", false},
		{"kw", false},
		{"", false},
		{"/", false},
		{"/model", false},
		{"/model/extra", true},
		{"/model/extra/a", true},
		{"/model/extras", false},
		{"/model/ext", false},
		{"/Model/extra", false},
		{"/KW", false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tr.Allows(tc.path))
		})
	}
}
