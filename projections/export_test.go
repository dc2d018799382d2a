package projections

// SchemaV1Objects are the tables, indexes and views of schema version 1, in
// creation order, for the migration fixture.
var SchemaV1Objects = []string{
	"schema_migrations", "meta", "task_keys", "tasks", "tasks_created", "tasks_status", "tasks_name", "task_tags", "attempts",
	"facts", "facts_task", "trigger_history", "plugin_calls", "plugin_events", "plugin_events_task",
	"dead_letters", "rejected_events",
}
