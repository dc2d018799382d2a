package projections

// SchemaV1Objects are the tables, indexes and views of schema version 1, in
// creation order, for the migration fixture.
var SchemaV1Objects = []string{
	"schema_migrations", "meta", "task_keys", "tasks", "tasks_created", "tasks_status", "tasks_name", "task_tags", "attempts",
	"facts", "facts_task", "trigger_history", "plugin_calls", "plugin_events", "plugin_events_task",
	"dead_letters", "rejected_events",
}

// SchemaV2Objects are those of schema version 2, in creation order, for the
// migration fixture from version 2.
var SchemaV2Objects = append(append([]string(nil), SchemaV1Objects...), "field_blame", "plugin_calls_plugin", "plugin_calls_outcome")
