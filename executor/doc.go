// Package executor is the task side of qtasks: registering Go task functions,
// submitting tasks, workers that pull tasks from JetStream, and the task
// executor that walks each task through QTasks' lifecycle, firing every
// trigger through the bus.
//
// # Tasks
//
// A task is a Go function with typed input and output, carried as JSON:
//
//	executor.MustRegister(app, "add", func(ctx context.Context, in AddArgs) (int, error) {
//		return in.A + in.B, nil
//	}, nil)
//
// A task's input is QTasks' positional args (a JSON array) and keyword
// arguments kw (a JSON object). The function's argument type T is decoded
// from args when T is a slice or array, from kw otherwise; a task that wants
// both takes an executor.Input.
//
// # Lifecycle
//
// Submission fires qtasks_add_task_before_broker, broker_add_before,
// storage_add (status new), broker_add_after and qtasks_add_task_after_broker
// in the client. A worker then fires the intake, execution and finish
// triggers in QTasks' order (see events.Catalog). Each firing is a fact in
// the event log; each returnable trigger first runs the mutator chain, whose
// patches change the payload the next step sees.
//
// # Keys, unique tasks and batches
//
// A submission with an idempotency key whose task exists makes nothing new:
// SubmitOne says it is a Duplicate; with other arguments it is a
// *KeyConflictError unless SubmitOptions.AllowKeyConflict. UniqueOpts
// derive the key from the name, arguments, queue and period, as River's
// unique jobs. SubmitMany submits a batch, one SubmitResult per request,
// publishing the records, task messages and facts of many submissions
// before awaiting their acks together. Every duplicate decision is an
// events.TypeDuplicate event in the log.
//
// A task function ends a task in one of the statuses of events: success;
// error (it returned an error, or a plugin with policy fail rejected a
// step); cancel (it returned Cancel); or retry (it failed with retries left
// and a retryable error: a new attempt of the same task is queued).
// Returning PluginError fires task_executor_run_task_trigger_error: a plugin
// that patches /result there decides the task's result; with none the task
// fails with the reason. A retried attempt waits Config.RetryBackoff
// (events.DefaultRetryBackoff) unless a plugin sets its delay.
//
// # Delayed and periodic tasks
//
// SubmitOptions.RunAt or RunIn delays a task: it waits in JetStream as a
// scheduled message, held by no worker, and runs at that time, never before.
// AddSchedule stores a periodic schedule (a cron expression in a time zone,
// or an interval); a Scheduler in each process fires its ticks, one task per
// tick however many run.
//
// # Shared state, chains and limits
//
// A task function reads and writes state shared across tasks and workers
// (QTasks' AsyncState) with State(ctx, scope), and its own state, kept
// across its attempts, with TaskState(ctx): JetStream KV, compare-and-set,
// every write a state event in the log (state.go); a task's own writes
// also land in its record's extra.state when the function returns.
//
// App.Chain runs tasks in sequence, each result appended to the next
// step's arguments (QTasks' AsyncTaskUtils.chain); a failed step ends the
// chain. Chains are advanced from the log by every started app (chain.go).
//
// App.SetLimit bounds how many tasks of a name or queue run at once
// cluster-wide and how many start per second (limit.go).
package executor
