package events

import (
	"slices"
	"strings"
)

// Component names the part of a task queue that fires a trigger, as in QTasks.
type Component string

// Components, with the QTasks class each stands for.
const (
	ComponentQTasks       Component = "qtasks"        // the client / app (QueueTasks)
	ComponentBroker       Component = "broker"        // task transport (AsyncRedisBroker)
	ComponentStorage      Component = "storage"       // task records (AsyncRedisStorage)
	ComponentGlobalConfig Component = "global_config" // shared configuration (AsyncRedisGlobalConfig)
	ComponentWorker       Component = "worker"        // the worker (AsyncWorker)
	ComponentTaskExecutor Component = "task_executor" // one task run (AsyncTaskExecutor)
	ComponentStarter      Component = "starter"       // process start/stop (AsyncStarter)
	ComponentStats        Component = "stats"         // inspection (AsyncStats)
)

// Scope says what a trigger firing is about.
type Scope string

const (
	// ScopeTask triggers fire once (or a fixed number of times) per task run;
	// their subject's last token is the task id.
	ScopeTask Scope = "task"
	// ScopeProcess triggers fire when a component starts or stops; their
	// subject's last token is the node id of the process.
	ScopeProcess Scope = "process"
	// ScopeNone triggers are kept in the catalog for completeness but have no
	// meaning in this port; Trigger.Note says why. They are never fired.
	ScopeNone Scope = "none"
)

// Trigger describes one QTasks plugin trigger as this port fires it.
type Trigger struct {
	// Name is the QTasks trigger name, kept verbatim because users know it.
	Name string
	// Component fires the trigger.
	Component Component
	// Scope is task, process, or none (not fired here).
	Scope Scope
	// Returnable triggers invoke the mutator chain: each mutator may answer
	// with a patch to the payload. One-way triggers only record a fact.
	Returnable bool
	// Paths lists the JSON Pointers (RFC 6901) under which a patch may change
	// the payload. A path allows itself and everything below it. Empty for
	// one-way triggers.
	Paths []string
	// Lifecycle facts are recorded even when recording is reduced to the
	// minimum (bus.RecordLifecycle): they carry the task's status changes.
	Lifecycle bool
	// Order is the position in a task's life (QTASKS-SPEC §2), 0 for
	// process-scope triggers.
	Order int
	// Note explains how the port departs from QTasks for this trigger, or
	// why it is not fired.
	Note string
}

// JSONType is the JSON type a patch must leave at an allowed path: types are
// part of the patch contract, so that a plugin's wrong type is its patch's
// rejection (its policy decides) and not a task failing later on arguments
// it cannot decode.
type JSONType string

// The types of allowed paths. Object and array types take null too (Go
// reads it as empty, and payloads carry "extra": null).
const (
	JSONAny         JSONType = "any"
	JSONObject      JSONType = "object"
	JSONArray       JSONType = "array"
	JSONStringArray JSONType = "array of strings"
	JSONString      JSONType = "string"
	// JSONInteger is a number written without fraction or exponent that
	// fits 64 bits, as Go's int reads it.
	JSONInteger JSONType = "integer"
	// JSONNonNegative is a JSONInteger ≥ 0.
	JSONNonNegative JSONType = "integer >= 0"
	// JSONStatus is one of the task statuses (events.Status*).
	JSONStatus JSONType = "task status"
)

// pathTypes declares the type of every allowed path by its last token: each
// name means one thing wherever a payload has it (args of the task record
// or of a trigger's own payload alike). TestCatalogPathTypes checks that
// every allowed path has one.
var pathTypes = map[string]JSONType{
	"task_name": JSONString,
	"priority":  JSONInteger,
	"args":      JSONArray,
	"kw":        JSONObject,
	"extra":     JSONObject,
	"tags":      JSONStringArray,
	"result":    JSONAny,
	"results":   JSONArray,
	"status":    JSONStatus,
	"delay_ms":  JSONNonNegative,
}

// PathType returns the type a patch must leave at p, one of t's allowed
// paths; "" when p is not one of them.
func (t Trigger) PathType(p string) JSONType {
	if !slices.Contains(t.Paths, p) {
		return ""
	}
	return pathTypes[p[strings.LastIndexByte(p, '/')+1:]]
}

// Allows reports whether a patch may touch the JSON Pointer p under this
// trigger's contract.
func (t Trigger) Allows(p string) bool {
	for _, a := range t.Paths {
		if p == a || strings.HasPrefix(p, a+"/") {
			return true
		}
	}
	return false
}

// Trigger names, as in QTasks.
const (
	QTasksAddTaskBeforeBroker = "qtasks_add_task_before_broker"
	BrokerAddBefore           = "broker_add_before"
	StorageAdd                = "storage_add"
	BrokerAddAfter            = "broker_add_after"
	QTasksAddTaskAfterBroker  = "qtasks_add_task_after_broker"

	StorageAddProcess   = "storage_add_process"
	StorageGet          = "storage_get"
	BrokerGet           = "broker_get"
	BrokerAddWorker     = "broker_add_worker"
	WorkerAdd           = "worker_add"
	WorkerExecuteBefore = "worker_execute_before"
	BrokerUpdate        = "broker_update"
	StorageUpdate       = "storage_update"
	WorkerRunTaskBefore = "worker_run_task_before"

	TaskExecutorMiddlewaresExecute        = "task_executor_middlewares_execute"
	TaskExecutorArgsReplace               = "task_executor_args_replace"
	TaskExecutorBeforeExecute             = "task_executor_before_execute"
	TaskExecutorRunTask                   = "task_executor_run_task"
	TaskExecutorRunTaskGen                = "task_executor_run_task_gen"
	TaskExecutorRunTaskTriggerError       = "task_executor_run_task_trigger_error"
	TaskExecutorAfterExecute              = "task_executor_after_execute"
	TaskExecutorAfterExecuteResultReplace = "task_executor_after_execute_result_replace"
	TaskExecutorDecode                    = "task_executor_decode"
	TaskExecutorTaskClose                 = "task_executor_task_close"

	WorkerTaskErrorRetry      = "worker_task_error_retry"
	WorkerRemoveFinishedTask  = "worker_remove_finished_task"
	BrokerRemoveFinishedTask  = "broker_remove_finished_task"
	StorageRemoveFinishedTask = "storage_remove_finished_task"
	WorkerExecuteAfter        = "worker_execute_after"

	BrokerRunningOlderTasks  = "broker_running_older_tasks"
	StorageRunningOlderTasks = "storage_running_older_tasks"
	QTasksGet                = "qtasks_get"

	StarterStart          = "starter_start"
	WorkerStart           = "worker_start"
	BrokerStart           = "broker_start"
	StorageStart          = "storage_start"
	GlobalConfigStart     = "global_config_start"
	GlobalConfigSetStatus = "global_config_set_status"
	BrokerListenStart     = "broker_listen_start"
	QTasksStop            = "qtasks_stop"
	StarterStop           = "starter_stop"
	BrokerStop            = "broker_stop"
	WorkerStop            = "worker_stop"
	StorageStop           = "storage_stop"
	GlobalConfigStop      = "global_config_stop"

	QTasksPing                 = "qtasks_ping"
	QTasksFlushAll             = "qtasks_flush_all"
	BrokerFlushAll             = "broker_flush_all"
	StorageFlushAll            = "storage_flush_all"
	StorageDeleteFinishedTasks = "storage_delete_finished_tasks"
	StorageGetAll              = "storage_get_all"
	GlobalConfigSet            = "global_config_set"
	GlobalConfigGet            = "global_config_get"
	GlobalConfigGetAll         = "global_config_get_all"
	GlobalConfigGetMatch       = "global_config_get_match"
	StatsInspect               = "stats_inspect"
)

// catalog lists the triggers in the order a task meets them (QTASKS-SPEC §2),
// then the process-scope ones in start-up and shutdown order, then the ones
// this port does not fire.
var catalog = []Trigger{
	// Submission, in the client process (§2.3).
	{
		Name: QTasksAddTaskBeforeBroker, Component: ComponentQTasks, Scope: ScopeTask, Returnable: true, Order: 1,
		Paths: []string{"/task_name", "/priority", "/args", "/kw", "/extra"},
		Note:  "A patch that leaves args or kw out keeps them (QTasks quirk Q1 fixed).",
	},
	{
		Name: BrokerAddBefore, Component: ComponentBroker, Scope: ScopeTask, Returnable: true, Order: 2,
		Paths: []string{"/model/priority", "/model/args", "/model/kw", "/model/extra", "/model/tags"},
		Note:  "Returnable as documented (QTasks breaks on any return, Q2).",
	},
	{
		Name: StorageAdd, Component: ComponentStorage, Scope: ScopeTask, Returnable: true, Order: 3, Lifecycle: true,
		Paths: []string{"/task_status/extra", "/task_status/tags"},
		Note:  "Records the task as new. The task id cannot be patched: it would desynchronise the record from the queued message.",
	},
	{Name: BrokerAddAfter, Component: ComponentBroker, Scope: ScopeTask, Order: 4},
	{
		Name: QTasksAddTaskAfterBroker, Component: ComponentQTasks, Scope: ScopeTask, Order: 5,
		Note: "Carries kw under the key kw, not kwargs (Q11 fixed), and the task id.",
	},

	// Intake, in the worker process (§2.4).
	{
		Name: StorageAddProcess, Component: ComponentStorage, Scope: ScopeTask, Order: 6,
		Note: "One-way: QTasks reads keys it never passes (Q11); here it records that a worker took the task.",
	},
	{
		Name: BrokerRunningOlderTasks, Component: ComponentBroker, Scope: ScopeTask, Order: 7, Lifecycle: true,
		Note: "Fires when a task whose previous run was interrupted (worker crash, ack wait expired) is resumed; dead in QTasks (Q12).",
	},
	{
		Name: StorageGet, Component: ComponentStorage, Scope: ScopeTask, Returnable: true, Order: 8,
		Paths: []string{"/result/args", "/result/kw", "/result/priority", "/result/extra"},
		Note:  "Fires when the worker reads the task record at intake, not on every result poll.",
	},
	{
		Name: BrokerGet, Component: ComponentBroker, Scope: ScopeTask, Returnable: true, Order: 9,
		Paths: []string{"/task/args", "/task/kw", "/task/priority", "/task/extra"},
	},
	{
		Name: BrokerAddWorker, Component: ComponentBroker, Scope: ScopeTask, Returnable: true, Order: 10,
		Paths: []string{"/priority", "/args", "/kw"},
		Note:  "The task name and id cannot be patched by a worker-side plugin.",
	},
	{
		Name: WorkerAdd, Component: ComponentWorker, Scope: ScopeTask, Returnable: true, Order: 11,
		Paths: []string{"/priority", "/args", "/kw"},
		Note:  "Reads the same keys it passes (Q11 fixed).",
	},
	{
		Name: WorkerExecuteBefore, Component: ComponentWorker, Scope: ScopeTask, Returnable: true, Order: 12,
		Paths: []string{"/model/extra"},
	},
	{
		Name: BrokerUpdate, Component: ComponentBroker, Scope: ScopeTask, Returnable: true, Order: 13,
		Paths: []string{"/kw/mapping/extra"},
	},
	{
		Name: StorageUpdate, Component: ComponentStorage, Scope: ScopeTask, Returnable: true, Order: 14, Lifecycle: true,
		Paths: []string{"/kw/mapping/extra"},
		Note:  "Records the task as process.",
	},
	{
		Name: WorkerRunTaskBefore, Component: ComponentWorker, Scope: ScopeTask, Returnable: true, Order: 15,
		Paths: []string{"/task_broker/args", "/task_broker/kw"},
		Note:  "task_func is a Go function and cannot travel; the task's registered options are passed read-only.",
	},

	// Execution (§2.5 step 8).
	{
		Name: TaskExecutorMiddlewaresExecute, Component: ComponentTaskExecutor, Scope: ScopeTask, Order: 16,
		Note: "Fires twice per run, with phase before and phase after, as in QTasks.",
	},
	{
		Name: TaskExecutorArgsReplace, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 17,
		Paths: []string{"/args", "/kw"},
	},
	{Name: TaskExecutorBeforeExecute, Component: ComponentTaskExecutor, Scope: ScopeTask, Order: 18},
	{
		Name: TaskExecutorRunTask, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 19,
		Paths: []string{"/result"},
		Note:  "Returnable as documented (broken in QTasks, Q2). Not fired for sequence tasks.",
	},
	{
		Name: TaskExecutorRunTaskGen, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 19,
		Paths: []string{"/results"},
		Note:  "For tasks that yield a sequence; returnable as documented (Q2 fixed).",
	},
	{
		Name: TaskExecutorRunTaskTriggerError, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 20,
		Paths: []string{"/result"},
		Note:  "Fires when the task returns a TaskPluginTriggerError. Any patch from any plugin handles it: /result becomes the task's result.",
	},
	{Name: TaskExecutorAfterExecute, Component: ComponentTaskExecutor, Scope: ScopeTask, Order: 21},
	{
		Name: TaskExecutorAfterExecuteResultReplace, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 22,
		Paths: []string{"/result"},
	},
	{
		Name: TaskExecutorDecode, Component: ComponentTaskExecutor, Scope: ScopeTask, Returnable: true, Order: 23,
		Paths: []string{"/result"},
		Note:  "Returnable as documented (Q2 fixed).",
	},
	{
		Name: TaskExecutorTaskClose, Component: ComponentTaskExecutor, Scope: ScopeTask, Order: 24,
		Note: "Fires on every outcome: success, error, cancel, timeout (Q13 fixed).",
	},
	{
		Name: WorkerTaskErrorRetry, Component: ComponentWorker, Scope: ScopeTask, Returnable: true, Order: 25, Lifecycle: true,
		Paths: []string{"/model/status", "/model/delay_ms"},
		Note:  "Fires only when the task has retries left and the error is retryable (errors.Is/As, Q10 fixed). A plugin may set the backoff (delay_ms) or veto the retry (status error).",
	},
	{
		Name: WorkerRemoveFinishedTask, Component: ComponentWorker, Scope: ScopeTask, Returnable: true, Order: 26,
		Paths: []string{"/model/result", "/model/extra"},
	},
	{
		Name: BrokerRemoveFinishedTask, Component: ComponentBroker, Scope: ScopeTask, Returnable: true, Order: 27,
		Paths: []string{"/model/result", "/model/extra"},
	},
	{
		Name: StorageRemoveFinishedTask, Component: ComponentStorage, Scope: ScopeTask, Order: 28, Lifecycle: true,
		Note: "Records the final status; one per task attempt (deduplicated by Nats-Msg-Id; PROTOCOL.md §5 says when a forgery can make two, of which the first counts). Carries the priority and arguments the attempt ran with (as submitted or as intake plugins changed them), never reset or wiped (Q9 fixed).",
	},
	{Name: WorkerExecuteAfter, Component: ComponentWorker, Scope: ScopeTask, Order: 29},

	// Process start-up and shutdown (§2.2, §2.11).
	{Name: StarterStart, Component: ComponentStarter, Scope: ScopeProcess},
	{Name: WorkerStart, Component: ComponentWorker, Scope: ScopeProcess},
	{Name: BrokerStart, Component: ComponentBroker, Scope: ScopeProcess},
	{Name: StorageStart, Component: ComponentStorage, Scope: ScopeProcess},
	{Name: GlobalConfigStart, Component: ComponentGlobalConfig, Scope: ScopeProcess},
	{
		Name: GlobalConfigSetStatus, Component: ComponentGlobalConfig, Scope: ScopeProcess,
		Note: "Fires once when the process starts announcing itself, as in QTasks.",
	},
	{Name: BrokerListenStart, Component: ComponentBroker, Scope: ScopeProcess},
	{Name: QTasksStop, Component: ComponentQTasks, Scope: ScopeProcess},
	{Name: StarterStop, Component: ComponentStarter, Scope: ScopeProcess},
	{Name: BrokerStop, Component: ComponentBroker, Scope: ScopeProcess},
	{Name: WorkerStop, Component: ComponentWorker, Scope: ScopeProcess},
	{Name: StorageStop, Component: ComponentStorage, Scope: ScopeProcess},
	{Name: GlobalConfigStop, Component: ComponentGlobalConfig, Scope: ScopeProcess},

	// Not fired here.
	{
		Name: StorageRunningOlderTasks, Component: ComponentStorage, Scope: ScopeNone,
		Note: "Resumption is JetStream redelivery; broker_running_older_tasks marks it, once per resumed task.",
	},
	{
		Name: QTasksGet, Component: ComponentQTasks, Scope: ScopeNone,
		Note: "Reading a task's status is a query of the task record, not a step of its life; recording every poll would flood the log.",
	},
	{
		Name: QTasksPing, Component: ComponentQTasks, Scope: ScopeNone,
		Note: "Liveness is the NATS connection itself.",
	},
	{
		Name: QTasksFlushAll, Component: ComponentQTasks, Scope: ScopeNone,
		Note: "The log is append-only; purging it is an operator action on the stream, outside the task lifecycle.",
	},
	{Name: BrokerFlushAll, Component: ComponentBroker, Scope: ScopeNone, Note: "See qtasks_flush_all."},
	{Name: StorageFlushAll, Component: ComponentStorage, Scope: ScopeNone, Note: "See qtasks_flush_all."},
	{
		Name: StorageDeleteFinishedTasks, Component: ComponentStorage, Scope: ScopeNone,
		Note: "Finished tasks age out of the stream by its retention limits; nothing deletes them one by one.",
	},
	{
		Name: StorageGetAll, Component: ComponentStorage, Scope: ScopeNone,
		Note: "Listing tasks is a query of the SQLite projection.",
	},
	{
		Name: GlobalConfigSet, Component: ComponentGlobalConfig, Scope: ScopeNone,
		Note: "Never called by QTasks itself (Q12); shared configuration lives in JetStream KV.",
	},
	{Name: GlobalConfigGet, Component: ComponentGlobalConfig, Scope: ScopeNone, Note: "See global_config_set."},
	{Name: GlobalConfigGetAll, Component: ComponentGlobalConfig, Scope: ScopeNone, Note: "See global_config_set."},
	{Name: GlobalConfigGetMatch, Component: ComponentGlobalConfig, Scope: ScopeNone, Note: "See global_config_set."},
	{
		Name: StatsInspect, Component: ComponentStats, Scope: ScopeNone,
		Note: "Inspection is served by the projection's queries and qtasksd's HTTP endpoint.",
	},
}

var byName = func() map[string]Trigger {
	m := make(map[string]Trigger, len(catalog))
	for _, t := range catalog {
		m[t.Name] = t
	}
	return m
}()

// Lookup returns the catalog entry for a trigger name.
func Lookup(name string) (Trigger, bool) {
	t, ok := byName[name]
	return t, ok
}

// Catalog returns every trigger of QTasks, task triggers in lifecycle order
// first. The slice is a copy.
func Catalog() []Trigger {
	out := slices.Clone(catalog)
	for i := range out {
		out[i].Paths = slices.Clone(out[i].Paths)
	}
	return out
}
