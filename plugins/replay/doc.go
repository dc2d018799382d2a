// Package replay tests a new version of a plugin against recorded history
// before it ships, re-drives past task runs through today's plugin chain, and
// measures how often a shadow plugin disagrees with the live one.
//
// Every invocation a mutator ever received is in the event log on
// qtasks.invoke.<plugin>.<trigger>.<task> (its data is the payload the plugin
// saw), and every answer on qtasks.patch.<plugin>.<trigger>.<task> (its
// invocation attribute names the invocation). Run feeds a candidate version
// the recorded invocations of one plugin, in stream order, and compares its
// patches with the recorded ones. The invocations of tasks run under test
// (marked by plugins/qtesting) are left out unless Filter.IncludeTesting.
//
// # The replay namespace
//
// A candidate is never connected to the live server. Each candidate that runs
// as a process gets a replay namespace of its own: a fresh embedded
// JetStream server on a random loopback port, with its data in a temporary
// directory that is removed afterwards, provisioned by bus.Open exactly as
// production is (same stream names, same subjects, its own plugin registry
// and plugin state buckets). The candidate process is started with the
// replay server's URL and registers, consumes qtasks.invoke.<plugin>.> and
// answers on qtasks.patch.… there, with the same code it runs in production.
// The live log is only read (ordered consumers and direct gets, which change
// no stream state), so a replay cannot change it, its registry, its plugin
// state or its task records, whatever the candidate does. Replayed
// invocations keep their recorded ids, task ids and payloads; their time is
// the time of the replay (a plugin drops invocations older than their
// timeout) and their replay attribute (ce-replay) carries the replay id.
// Once the candidate has registered, the replay server's log is bounded
// (its last 10,000 messages, a 10 s duplicate window): nothing reads it
// after an invocation is answered, and bounded it keeps the memory of the
// replaying process flat however long the history. The live server should
// be opened with bus.Config.ReadOnly, which provisions nothing and writes
// nothing.
//
// The candidate command learns where to connect from its arguments and its
// environment: the placeholders {nats_url}, {replay_id} and {plugin} in
// Command.Args are replaced, and the environment gets
//
//	QTASKS_NATS_URL       the replay server, e.g. nats://127.0.0.1:40123
//	QTASKS_REPLAY         the replay id
//	QTASKS_REPLAY_PLUGIN  the plugin being replayed
//
// A plugin program that takes --nats-url (as examples/scaleplugin does) runs
// unchanged: --candidate-cmd 'scaleplugin --nats-url {nats_url}'.
//
// # Comparing answers
//
// Two patches are compared by their effect: each is judged as the executor
// judges it (events.Answer.Judge: applied to the recorded invocation payload
// with events.ApplyPatch under the trigger's contract), and the two
// resulting documents are diffed. A JSON Patch and a merge patch
// that do the same thing are identical. Each invocation ends as identical,
// different (with the diff, as RFC 6902 operations from the recorded
// document to the candidate's), error (the candidate reported an error,
// crashed or exited) or timeout.
//
// Fields that differ between two runs of the same version (times, random
// ids) are noise. Options.Baseline replays the recorded version too, beside
// the candidate: for each invocation, the paths where the baseline's result
// differs from the recorded one are masked from the candidate's diff (a value
// that changed at a noisy path is masked; a field the candidate adds or
// removes there is not). Options.Mask masks paths for every invocation.
//
// # Export format
//
// Export writes a plugin's recorded history as newline-delimited JSON: one
// CloudEvent per line in the CloudEvents JSON event format (structured
// mode, as the CloudEvents Go SDK writes it), in stream order. Each
// invocation event (type io.qtasks.invoke.<trigger>) is followed directly by
// the recorded patch event that answered it (type io.qtasks.patch, its
// invocation attribute equal to the invocation's id), or by the next
// invocation when none was recorded. Every extension attribute of the NATS
// binding (taskid, taskname, trigger, attempt, run, plugin, pluginversion,
// invocation, timeoutms, pluginerror, traceparent, replay) is written as a
// string attribute of the same name, and streamseq holds the event's stream
// sequence. An invocation's data (application/json) is a JSON value; a
// patch's data (application/json-patch+json or application/merge-patch+json)
// is a JSON string holding the patch, since the SDK writes data of any other
// media type as a string; a patch with no data means "no change". Example
// (wrapped here; one line each in the file):
//
//	{"specversion":"1.0","id":"T:1:1:task_executor_args_replace:0:stamp",
//	 "source":"qtasks/node-1","type":"io.qtasks.invoke.task_executor_args_replace",
//	 "subject":"T","datacontenttype":"application/json",
//	 "time":"2025-03-04T05:06:07.891Z","data":{"args":[],"kw":{"n":7}},
//	 "attempt":"1","plugin":"stamp","pluginversion":"1","run":"1",
//	 "streamseq":"42","taskid":"T","taskname":"calc",
//	 "timeoutms":"5000","trigger":"task_executor_args_replace"}
//	{"specversion":"1.0","id":"T:1:1:task_executor_args_replace:0:stamp:patch",
//	 "source":"qtasks/plugin/stamp","type":"io.qtasks.patch","subject":"T",
//	 "datacontenttype":"application/merge-patch+json",
//	 "time":"2025-03-04T05:06:07.893Z","data":"{\"kw\":{\"double\":14}}",
//	 "attempt":"1","invocation":"T:1:1:task_executor_args_replace:0:stamp",
//	 "plugin":"stamp","pluginversion":"1","run":"1","streamseq":"43",
//	 "taskid":"T","taskname":"calc","trigger":"task_executor_args_replace"}
//
// RunFile replays such a file against a candidate; with a Candidate.Spec it
// calls a plugins.Plugin value in-process, which is how a plugin author runs
// recorded history inside go test (the equivalent of Temporal's workflow
// replayer, for plugins) and gets the same report as the process path.
//
// # Re-driving runs and shadows
//
// Redrive takes recorded task runs and pushes the facts of each run's last
// run through today's chain (or chosen candidates) in a replay namespace,
// using the recorded task results: no task function runs. Shadow reads the
// facts of a shadow plugin's firings and computes how often its patches
// would have changed the outcome of the live plugin's.
//
// Nothing here prints or exits: the functions take options, io.Writers and a
// progress callback, and cmd/qtasks-replay wires them to flags.
package replay
