package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/internal/taskrec"
)

// Func reads and changes a task's state on one invocation: s is the state
// the payload carries (never nil); what fn sets in s or deletes from it
// becomes the plugin's patch. An error fails the call (outcome error), and
// the plugin's failure policy decides the task's fate.
type Func func(ctx context.Context, c *plugins.Call, s State) error

// Plugin adapts fn to a mutator: it reads the state from the invocation's
// payload, calls fn, and answers with the JSON Patch of what fn changed, or
// no change. A payload that carries no task record, or whose extra.state
// is not a JSON object, is an error, as is a change on a trigger that does
// not allow extra to be patched.
func Plugin(fn Func) plugins.Plugin {
	return plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
		before, err := FromCall(c)
		if err != nil {
			return nil, err
		}
		after := maps.Clone(before)
		if err := fn(ctx, c, after); err != nil {
			return nil, err
		}
		return Diff(c.Trigger, c.Payload, before, after)
	})
}

// NewSpec returns spec running fn (Plugin(fn)) after checking that it can
// work: spec names its triggers (a global plugin would be invoked on
// triggers that carry no state), each of them lets a patch change the task
// record's extra, and spec is a mutator or a shadow (an observer reads state
// with FromCall and changes nothing).
func NewSpec(spec plugins.Spec, fn Func) (plugins.Spec, error) {
	writable := strings.Join(taskrec.WritableTriggers("extra"), ", ")
	var errs []error
	if fn == nil {
		errs = append(errs, errors.New("the state function is nil"))
	}
	if spec.Mode == plugins.Observer {
		errs = append(errs, errors.New("an observer cannot change state: read it with state.FromCall in a plugins.Spec of its own"))
	}
	if len(spec.Triggers) == 0 {
		errs = append(errs, fmt.Errorf("no triggers: name the triggers to handle, among %s", writable))
	}
	for _, t := range spec.Triggers {
		tr, ok := events.Lookup(t)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("unknown trigger %q", t))
		case tr.Scope != events.ScopeTask:
			errs = append(errs, fmt.Errorf("trigger %s is not about a task (scope %s)", t, tr.Scope))
		case !taskrec.Writable(t, "extra"):
			errs = append(errs, fmt.Errorf("trigger %s does not let a patch change the task's extra; use one of %s", t, writable))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return plugins.Spec{}, fmt.Errorf("state plugin %s: %w", spec.Name, err)
	}
	spec.Plugin = Plugin(fn)
	return spec, nil
}
