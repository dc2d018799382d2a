// Package validate is the argument validation plugin of qtasks, the
// counterpart of QTasks' Pydantic plugin: a task declares a JSON Schema for
// its input (or derives one from its Go input type with SchemaFor), and
//
//   - on qtasks_add_task_before_broker, in the submitting process, bad
//     arguments are refused: the plugin answers with an error naming each
//     failing field and why, its failure policy (fail) refuses the
//     submission, and Submit returns that error; nothing is queued;
//   - on task_executor_args_replace, in the worker, arguments are coerced
//     where the schema says so ("5" becomes 5 for an integer field, "true"
//     true for a boolean one) and missing properties with a default are
//     filled in, by a merge patch on /kw (or /args), so the task function
//     gets them typed. Arguments still invalid there (a client that
//     submitted without the plugin) fail the attempt with the same error.
//
// The schema describes the task's input as executor.Register decodes it:
// the keyword arguments (kw); or, for a schema of type array, the
// positional arguments (args); a single positional argument with no
// keyword arguments stands for the whole input, as for executor.Register.
// A task with no schema passes untouched.
//
//	p, err := validate.New(validate.Schemas{
//		"add":    validate.SchemaFor[AddArgs](),
//		"resize": json.RawMessage(`{"type":"object","properties":{"w":{"type":"integer","minimum":1}},"required":["w"]}`),
//	})
//	runner, err := plugins.Local(ctx, b, p.Spec()) // in every process that submits or runs these tasks
//
// Schemas are compiled when the plugin is made (JSON Schema 2020-12 unless
// $schema says otherwise; formats are asserted; external $refs are
// refused), so a bad schema is an error of New. cmd/qtasks-validate runs
// the plugin as a process of its own.
package validate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// Defaults of the plugin's registration (Spec).
const (
	DefaultName = "validate"
	Version     = "1"
)

// Schemas maps task names to the JSON Schema of their input.
type Schemas map[string]json.RawMessage

// ErrInvalidArguments is wrapped by the errors of arguments a schema
// refuses.
var ErrInvalidArguments = errors.New("invalid arguments")

// Plugin is the validation plugin. It is safe for concurrent use.
type Plugin struct {
	schemas map[string]*compiled
}

var _ plugins.Plugin = (*Plugin)(nil)

// New compiles the schemas; an invalid one is an error naming its task.
func New(schemas Schemas) (*Plugin, error) {
	c, err := compile(maps.Clone(schemas))
	if err != nil {
		return nil, fmt.Errorf("validate plugin: %w", err)
	}
	return &Plugin{schemas: c}, nil
}

// Spec is the plugin's registration: name DefaultName, mutator on
// qtasks_add_task_before_broker and task_executor_args_replace, policy
// fail (what makes a refusal refuse). Change fields before running it as
// needed.
func (p *Plugin) Spec() plugins.Spec {
	return plugins.Spec{
		Name: DefaultName, Version: Version, Mode: plugins.Mutator, Policy: events.PolicyFail, Plugin: p,
		Triggers: []string{events.QTasksAddTaskBeforeBroker, events.TaskExecutorArgsReplace},
	}
}

// Has reports whether task has a schema.
func (p *Plugin) Has(task string) bool {
	_, ok := p.schemas[task]
	return ok
}

// Check validates a task's arguments, coerced, against its schema. It
// returns the coerced arguments (args and kw as given when nothing
// changed, and changed false), or an error wrapping ErrInvalidArguments
// that names each failing location (/kw/a, /args/0) and why. A task without
// a schema is valid as it is.
func (p *Plugin) Check(task string, args, kw json.RawMessage) (newArgs, newKw json.RawMessage, changed bool, err error) {
	r, err := p.check(task, args, kw)
	if err != nil || !r.changed() {
		return args, kw, false, err
	}
	newArgs, newKw = args, kw
	if r.args != nil {
		if newArgs, err = json.Marshal(r.args); err != nil {
			return nil, nil, false, fmt.Errorf("encoding coerced args: %w", err)
		}
	}
	if r.kwPatch != nil {
		if newKw, err = json.Marshal(r.kw); err != nil {
			return nil, nil, false, fmt.Errorf("encoding coerced kw: %w", err)
		}
	}
	return newArgs, newKw, true, nil
}

// result is a successful check: args replaces the positional arguments
// when set; kwPatch is the merge patch of kw (whose coerced form is kw)
// when set. The zero result changes nothing.
type result struct {
	args    []any
	kw      map[string]any
	kwPatch map[string]any
}

// changed reports whether r changes the arguments.
func (r result) changed() bool { return r.args != nil || r.kwPatch != nil }

func (p *Plugin) check(task string, args, kw json.RawMessage) (result, error) {
	c, ok := p.schemas[task]
	if !ok {
		return result{}, nil
	}
	var list []any
	if len(args) > 0 && string(args) != "null" {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(args))
		if err != nil {
			return result{}, fmt.Errorf("%w for task %s: args: %w", ErrInvalidArguments, task, err)
		}
		if list, ok = v.([]any); !ok {
			return result{}, fmt.Errorf("%w for task %s: args is not an array", ErrInvalidArguments, task)
		}
	}
	obj := map[string]any{}
	if len(kw) > 0 && string(kw) != "null" {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(kw))
		if err != nil {
			return result{}, fmt.Errorf("%w for task %s: kw: %w", ErrInvalidArguments, task, err)
		}
		if obj, ok = v.(map[string]any); !ok {
			return result{}, fmt.Errorf("%w for task %s: kw is not an object", ErrInvalidArguments, task)
		}
	}
	switch {
	case c.array:
		orig := deepCopy(list)
		if list == nil {
			list = []any{}
		}
		v := coerce(c.schema, list, 0)
		if err := c.schema.Validate(v); err != nil {
			return result{}, fmt.Errorf("%w for task %s: %s", ErrInvalidArguments, task, describe(err, "/args"))
		}
		if equalJSON(orig, v) {
			return result{}, nil
		}
		return result{args: v.([]any)}, nil
	case len(obj) == 0 && len(list) == 1:
		// A single positional argument is the whole input.
		orig := deepCopy(list[0])
		v := coerce(c.schema, list[0], 0)
		if err := c.schema.Validate(v); err != nil {
			return result{}, fmt.Errorf("%w for task %s: %s", ErrInvalidArguments, task, describe(err, "/args/0"))
		}
		if equalJSON(orig, v) {
			return result{}, nil
		}
		return result{args: []any{v}}, nil
	default:
		orig := deepCopy(obj).(map[string]any)
		v := coerce(c.schema, obj, 0)
		if err := c.schema.Validate(v); err != nil {
			return result{}, fmt.Errorf("%w for task %s: %s", ErrInvalidArguments, task, describe(err, "/kw"))
		}
		m, _ := v.(map[string]any)
		diff := mergeDiff(orig, m)
		if len(diff) == 0 {
			return result{}, nil
		}
		return result{kw: m, kwPatch: diff}, nil
	}
}

func equalJSON(a, b any) bool {
	ab, err1 := json.Marshal(a)
	bb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}

// Trigger validates on qtasks_add_task_before_broker (refusing, never
// patching) and coerces on task_executor_args_replace (a merge patch of
// the changed keys of /kw, or /args replaced).
func (p *Plugin) Trigger(_ context.Context, call *plugins.Call) (*plugins.Patch, error) {
	var pl struct {
		TaskName string          `json:"task_name"`
		Args     json.RawMessage `json:"args"`
		Kw       json.RawMessage `json:"kw"`
	}
	if err := call.Decode(&pl); err != nil {
		return nil, err
	}
	switch call.Trigger {
	case events.QTasksAddTaskBeforeBroker:
		// An earlier plugin may have renamed the task: the payload says
		// what will be queued.
		task := pl.TaskName
		if task == "" {
			task = call.TaskName
		}
		_, err := p.check(task, pl.Args, pl.Kw)
		return nil, err
	case events.TaskExecutorArgsReplace:
		r, err := p.check(call.TaskName, pl.Args, pl.Kw)
		if err != nil || !r.changed() {
			return nil, err
		}
		patch := map[string]any{}
		if r.args != nil {
			patch["args"] = r.args
		}
		if r.kwPatch != nil {
			patch["kw"] = r.kwPatch
		}
		return plugins.MergePatch(patch)
	}
	return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
}
