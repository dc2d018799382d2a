package projections

// SchemaV1Objects are the tables and indexes of schema version 1, for the
// migration fixture.
var SchemaV1Objects = []string{
	"schema_migrations", "meta", "tasks", "tasks_created", "tasks_status", "tasks_name", "task_tags", "attempts",
	"trigger_history", "trigger_history_task", "plugin_calls", "plugin_calls_task",
	"invocations", "dead_letters", "rejected_events",
}
