// Package plugins is the plugin SDK of qtasks, the Go face of QTasks'
// BasePlugin, and the runner that hosts a plugin as JetStream consumers.
//
// A plugin is a value with one method, Trigger, called for each invocation
// (a mutator on a returnable trigger) or fact (an observer). A mutator
// returns a *Patch to change the trigger's payload, or nil to change
// nothing; an error is a plugin failure, decided by the plugin's failure
// policy. Start runs the plugin in its own process, as durable JetStream
// consumers; Local runs a mutator inside the executor's process for the
// lowest latency, still recording every invocation and patch in the log.
//
// The plugin protocol is plain NATS and CloudEvents; docs/PROTOCOL.md
// describes it for plugins written in other languages.
package plugins
