package events

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidToken(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		token string
		want  bool
	}{
		{"Simple", "abc", true},
		{"UUID", "0b9c3c2e-8a55-4a8e-9c2e-2f1d3b7a9e10", true},
		{"Underscore", "task_executor_args_replace", true},
		{"Colon", "a:b", true},
		{"Unicode", "задача", true},
		{"Max", strings.Repeat("a", 128), true},
		{"TooLong", strings.Repeat("a", 129), false},
		{"Empty", "", false},
		{"Dot", "a.b", false},
		{"Star", "*", false},
		{"StarInside", "a*b", false},
		{"GreaterThan", ">", false},
		{"Space", "a b", false},
		{"Tab", "a\tb", false},
		{"CR", "a\rb", false},
		{"LF", "a\nb", false},
		{"NUL", "a\x00b", false},
		{"Control", "a\x01b", false},
		{"DEL", "a\x7fb", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, ValidToken(tc.token))
		})
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		subject string
		want    ParsedSubject
	}{
		{
			"Fact", FactSubject(StorageAdd, "default"),
			ParsedSubject{Kind: "trigger", Trigger: StorageAdd, Key: "default"},
		},
		{
			"ProcessFact", FactSubject(WorkerStart, "node-7"),
			ParsedSubject{Kind: "trigger", Trigger: WorkerStart, Key: "node-7"},
		},
		{
			"Invoke", InvokeSubject("pydantic", TaskExecutorArgsReplace),
			ParsedSubject{Kind: "invoke", Plugin: "pydantic", Trigger: TaskExecutorArgsReplace},
		},
		{
			"Patch", PatchSubject("retry", WorkerTaskErrorRetry),
			ParsedSubject{Kind: "patch", Plugin: "retry", Trigger: WorkerTaskErrorRetry},
		},
		{
			"LegacyInvoke", "qtasks.invoke.pydantic.task_executor_args_replace.task-1",
			ParsedSubject{Kind: "invoke", Plugin: "pydantic", Trigger: TaskExecutorArgsReplace},
		},
		{
			"LegacyPatch", "qtasks.patch.retry.worker_task_error_retry.task-2",
			ParsedSubject{Kind: "patch", Plugin: "retry", Trigger: WorkerTaskErrorRetry},
		},
		{
			"Run", RunSubject("default"),
			ParsedSubject{Kind: "run", Key: "default"},
		},
		{
			"Dead", DeadSubject("audit"),
			ParsedSubject{Kind: "dead", Plugin: "audit"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSubject(tc.subject)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.True(t, strings.HasPrefix(tc.subject, SubjectRoot+"."))
		})
	}

	t.Run("Literal", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "qtasks.trigger.storage_add.q1", FactSubject(StorageAdd, "q1"))
		require.Equal(t, "qtasks.invoke.p.storage_add", InvokeSubject("p", StorageAdd))
		require.Equal(t, "qtasks.patch.p.storage_add", PatchSubject("p", StorageAdd))
		require.Equal(t, "qtasks.run.q", RunSubject("q"))
		require.Equal(t, "qtasks.dead.p", DeadSubject("p"))
	})

	t.Run("EveryTrigger", func(t *testing.T) {
		t.Parallel()
		for _, tr := range Catalog() {
			for _, s := range []string{
				FactSubject(tr.Name, "key"),
				InvokeSubject("p", tr.Name),
				PatchSubject("p", tr.Name),
			} {
				got, err := ParseSubject(s)
				require.NoError(t, err, s)
				require.Equal(t, tr.Name, got.Trigger, s)
			}
			got, err := ParseSubject(FactSubject(tr.Name, "key"))
			require.NoError(t, err)
			require.Equal(t, "key", got.Key)
		}
	})
}

func TestParseSubjectErrors(t *testing.T) {
	t.Parallel()

	for _, s := range []string{
		"",
		"qtasks",
		"qtasks.",
		"qtasks.trigger",
		"qtasks.trigger.storage_add",
		"qtasks.trigger.storage_add.t1.extra",
		"qtasks.trigger..t1",
		"qtasks.trigger.storage_add.",
		"qtasks.trigger.*.t1",
		"qtasks.trigger.storage_add.>",
		"qtasks.trigger.>",
		"qtasks.invoke.p",
		"qtasks.invoke.p.storage_add.t1.x",
		"qtasks.invoke..storage_add",
		"qtasks.patch.p",
		"qtasks.patch.p.storage_add.t1.x",
		"qtasks.patch.p.*",
		"qtasks.dead",
		"qtasks.dead.p.x",
		"qtasks.dead.",
		"qtasks.run",
		"qtasks.run.q.x",
		"qtasks.run.",
		"qtasks.other.a.b",
		"other.trigger.storage_add.t1",
		"QTASKS.trigger.storage_add.t1",
		"qtasks.Trigger.storage_add.t1",
		".qtasks.trigger.storage_add.t1",
		"qtasks.trigger.storage add.t1",
	} {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSubject(s)
			require.ErrorIs(t, err, ErrInvalidEvent)
			require.Contains(t, err.Error(), "not a qtasks subject")
			require.Equal(t, ParsedSubject{}, got)
		})
	}
}

func TestMsgIDs(t *testing.T) {
	t.Parallel()

	t.Run("Literal", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "t1:2:3:storage_add:0", FactMsgID("t1", 2, 3, StorageAdd, 0))
		require.Equal(t, "t1:2:final", FinalMsgID("t1", 2))
		require.Equal(t, "t1:2:3:storage_add:0:p", InvocationID("t1", 2, 3, StorageAdd, 0, "p"))
	})

	t.Run("Deterministic", func(t *testing.T) {
		t.Parallel()
		// The same call twice on purpose: an id must not depend on time or
		// chance, as JetStream's deduplication of a retried publish rests on it.
		require.Equal(t, FactMsgID("t", 1, 0, StorageAdd, 0), FactMsgID("t", 1, 0, StorageAdd, 0))                 //nolint:testifylint // useless-assert: see above
		require.Equal(t, InvocationID("t", 1, 0, StorageAdd, 0, "p"), InvocationID("t", 1, 0, StorageAdd, 0, "p")) //nolint:testifylint // useless-assert: see above
	})

	t.Run("Distinct", func(t *testing.T) {
		t.Parallel()
		seen := map[string]string{}
		add := func(id, what string) {
			prev, dup := seen[id]
			require.False(t, dup, "%s and %s share id %q", prev, what, id)
			seen[id] = what
		}
		for _, task := range []string{"t1", "t2"} {
			for attempt := range 3 {
				add(FinalMsgID(task, attempt), "final")
				for run := range 3 {
					for _, tr := range []string{StorageAdd, TaskExecutorMiddlewaresExecute} {
						for n := range 2 {
							add(FactMsgID(task, attempt, run, tr, n), "fact")
							for _, p := range []string{"a", "b"} {
								add(InvocationID(task, attempt, run, tr, n, p), "invocation")
							}
						}
					}
				}
			}
		}
	})

	t.Run("FinalIgnoresRun", func(t *testing.T) {
		t.Parallel()
		// Two runs of one attempt write one final record between them:
		// FinalMsgID takes no run, while the facts' ids differ by run.
		require.NotEqual(t, FactMsgID("t", 1, 0, StorageRemoveFinishedTask, 0), FactMsgID("t", 1, 1, StorageRemoveFinishedTask, 0))
	})
}

func TestValidatePatch(t *testing.T) {
	t.Parallel()
	ok := patchEvent()
	subject := PatchSubject(ok.Plugin, ok.Trigger)
	require.NoError(t, ValidatePatch(subject, &ok))
	// A log written before subjects lost their task ids.
	require.NoError(t, ValidatePatch(subject+"."+ok.TaskID, &ok))
	for name, c := range map[string]struct {
		subject string
		mod     func(*Event)
		reason  string
	}{
		"OtherPlugin":  {subject, func(e *Event) { e.Plugin = "other" }, `plugin attribute "other" does not match the subject's "pydantic"`},
		"OtherTrigger": {subject, func(e *Event) { e.Trigger = TaskExecutorRunTask }, `trigger attribute "task_executor_run_task" does not match`},
		"NoTrigger":    {subject, func(e *Event) { e.Trigger = "" }, "trigger attribute"},
		"NoTaskID":     {subject, func(e *Event) { e.TaskID = "" }, "no task id attribute"},
		"NotAPatch":    {subject, func(e *Event) { e.Type = TypeTask }, "type \"io.qtasks.task\" on patch subject"},
		"FactSubject":  {FactSubject(ok.Trigger, "q"), func(*Event) {}, "is not a patch subject"},
		"NoSubject":    {"nonsense", func(*Event) {}, "not a qtasks subject"},
	} {
		e := patchEvent()
		c.mod(&e)
		err := ValidatePatch(c.subject, &e)
		require.ErrorIs(t, err, ErrInvalidEvent, name)
		require.ErrorContains(t, err, c.reason, name)
	}
}

func TestPhaseSubject(t *testing.T) {
	for _, p := range Phases {
		s := PhaseSubject(p, "default")
		got, q, err := ParsePhaseSubject(s)
		if err != nil || got != p || q != "default" {
			t.Fatalf("ParsePhaseSubject(%q) = %q, %q, %v", s, got, q, err)
		}
	}
	for _, s := range []string{"qtasks.phase.nope.default", "qtasks.phase.submit", "qtasks.trigger.task_submit.default", "qtasks.phase.submit.a.b"} {
		if _, _, err := ParsePhaseSubject(s); err == nil {
			t.Errorf("ParsePhaseSubject(%q) accepted", s)
		}
	}
}
