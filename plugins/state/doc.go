// Package state is the counterpart of QTasks' State plugin: per-task state
// that a task and its plugins share across triggers, kept in the event log
// like everything else.
//
// # Where the state lives
//
// A task's state is the JSON object under the key "state" of its record's
// extra (extra.state). Nothing else holds it: it travels with the task
// record through every payload that carries the record, it is in the task
// message a worker pulls and in the task record (qtasks_tasks), and every
// change to it is a plugin's patch recorded in a fact of the log. So,
// unlike QTasks (one in-memory dictionary per worker process, shared by
// every task it runs and lost on restart):
//
//   - state is per task, never shared between tasks;
//   - it is carried to the next attempt of a retried task, and a run
//     resumed after a worker crash starts from the state in the task
//     message (what submission set) and sees its intake triggers again;
//   - every change shows in the task's timeline: the fact of the trigger,
//     the plugin call that changed it, and its patch (one JSON Patch
//     operation per key, on /<record>/extra/state/<key>).
//
// # Who changes it
//
// Plugins, by patching the record's extra on the triggers whose contract
// allows it (PROTOCOL.md §6): qtasks_add_task_before_broker (/extra),
// broker_add_before (/model/extra), storage_add (/task_status/extra) at
// submission; storage_get (/result/extra), broker_get (/task/extra),
// worker_execute_before (/model/extra), broker_update and storage_update
// (/kw/mapping/extra) at intake; worker_remove_finished_task and
// broker_remove_finished_task (/model/extra) when the attempt ends. Set,
// Delete and Diff build those patches; Func and NewSpec make a mutator out
// of a function that changes a State:
//
//	spec, err := state.NewSpec(plugins.Spec{Name: "visits", Version: "1",
//		Triggers: []string{events.StorageAdd, events.StorageGet}},
//		func(ctx context.Context, c *plugins.Call, s state.State) error {
//			n, _, err := state.Get[int](s, "visits")
//			if err != nil {
//				return err
//			}
//			return s.Set("visits", n+1)
//		})
//	r, err := plugins.Start(ctx, b, spec) // or plugins.Local
//
// The submitter may give a task its initial state:
// executor.SubmitOptions{Extra: state.Initial(map[string]any{"step": 1})}.
//
// The task function reads the state with From(ctx); a finished task's
// record with FromTask; any plugin, observers included, with FromCall.
//
// Today's executor takes the record's extra back from storage_get and
// broker_get into the run, but not from worker_execute_before,
// broker_update and storage_update: changes made there are in the facts
// and in the record while the task runs, but the task function does not
// see them and the final record does not keep them. Change the state at
// intake on storage_get or broker_get.
//
// The task function changes the state with executor.TaskState(ctx): each
// write is a state event in the log (and a value in the state bucket), and
// when the function returns its writes are applied to the record's
// extra.state, key by key, before task_executor_run_task: the plugins of
// the later triggers, the final record and the projection see them.
package state
