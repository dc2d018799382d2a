// Package qtesting is the counterpart of QTasks' testing plugin
// (AsyncTestPlugin): it marks the tasks that run under test, so that they
// can be told apart in history and left out of replays.
//
// # The mark
//
// A task runs under test when its record's extra has "testing": true
// (ExtraKey). The mark is part of the record, so it is in every payload
// and fact that carries the record, in the task record (qtasks_tasks), in
// the SQLite projection's tasks (their extra), and it goes on to every
// attempt. A submitter can set it directly:
//
//	app.Submit(ctx, "charge", in, &executor.SubmitOptions{Extra: qtesting.Extra()})
//
// The plugin (New) sets it on storage_add, where a task is recorded as
// new, for the tasks its Config selects (by task name, by tag, or because
// the submitter marked them), and adds a tag (Config.Tag, "testing" by
// default) so that the projection lists them:
// qtasks-replay tasks --tag testing. Replays (plugins/replay) leave marked
// tasks out unless Filter.IncludeTesting is set.
//
// QTasks marks tasks registered with test=True on worker_execute_before and
// worker_remove_finished_task by rebuilding the model with an is_testing
// field, and on worker_execute_before it returns the bare model instead of
// a dict, which crashes the dispatch and leaves the task at new (QTASKS-SPEC
// §4.6). Here the plugin answers with a JSON Patch that touches only
// /task_status/extra/testing and /task_status/tags, once per task, at the
// submission; the mark then travels with the record.
package qtesting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/internal/taskrec"
)

// ExtraKey is the key of a task record's extra that marks it as run under
// test, with the value true.
const ExtraKey = "testing"

// Defaults of Config.
const (
	DefaultName = "testing"
	DefaultTag  = "testing"
)

// ErrMalformed wraps a payload the plugin cannot read, such as an
// extra.testing that is neither a boolean nor "true"/"false".
var ErrMalformed = taskrec.ErrMalformed

// Config selects the tasks that run under test.
type Config struct {
	// Name of the plugin. Defaults to DefaultName.
	Name string
	// Version of the plugin, recorded with each call. Defaults to "1".
	Version string
	// TaskNames are always run under test (fixtures, smoke tasks).
	TaskNames []string
	// Tags mark a task as run under test when it carries any of them
	// (registered in TaskOptions.Tags or given in SubmitOptions.Tags).
	Tags []string
	// Tag is added to the tags of every marked task. Defaults to
	// DefaultTag.
	Tag string
	// Policy on failure (a malformed payload): events.PolicyFail (the
	// default) refuses the submission, events.PolicyIgnore lets it go on
	// unmarked.
	Policy string
	// Timeout of one invocation. Defaults to plugins.DefaultTimeout.
	Timeout time.Duration
}

// Plugin marks tasks run under test. Use Spec to run it.
type Plugin struct {
	cfg   Config
	names map[string]bool
	tags  map[string]bool
}

var _ plugins.Plugin = (*Plugin)(nil)

// New checks cfg and returns the plugin.
func New(cfg Config) (*Plugin, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.Tag == "" {
		cfg.Tag = DefaultTag
	}
	if cfg.Policy == "" {
		cfg.Policy = events.PolicyFail
	}
	var errs []error
	if !events.ValidName(cfg.Name) {
		errs = append(errs, fmt.Errorf("name %q: use letters, digits, '-' and '_' (at most 64)", cfg.Name))
	}
	if !validTag(cfg.Tag) {
		errs = append(errs, fmt.Errorf("tag %q: must be a non-empty single-line string without surrounding blanks", cfg.Tag))
	}
	for _, n := range cfg.TaskNames {
		if !events.ValidToken(n) {
			errs = append(errs, fmt.Errorf("task name %q: not a valid task name (a NATS subject token)", n))
		}
	}
	for _, tg := range cfg.Tags {
		if !validTag(tg) {
			errs = append(errs, fmt.Errorf("tag %q: must be a non-empty single-line string without surrounding blanks", tg))
		}
	}
	if cfg.Policy != events.PolicyFail && cfg.Policy != events.PolicyIgnore {
		errs = append(errs, fmt.Errorf("policy %q: use %s or %s", cfg.Policy, events.PolicyFail, events.PolicyIgnore))
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: must not be negative", cfg.Timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("testing plugin: %w", err)
	}
	p := &Plugin{cfg: cfg, names: map[string]bool{}, tags: map[string]bool{}}
	for _, n := range cfg.TaskNames {
		p.names[n] = true
	}
	for _, tg := range cfg.Tags {
		p.tags[tg] = true
	}
	return p, nil
}

func validTag(s string) bool {
	return s != "" && strings.TrimSpace(s) == s && !strings.ContainsAny(s, "\r\n\x00")
}

// Spec is the plugin's registration: a mutator on storage_add. Give it to
// plugins.Start (in any process that reaches the NATS server) or
// plugins.Local (in every process that submits tasks).
func (p *Plugin) Spec() plugins.Spec {
	return plugins.Spec{
		Name: p.cfg.Name, Version: p.cfg.Version, Triggers: []string{events.StorageAdd},
		Mode: plugins.Mutator, Policy: p.cfg.Policy, Timeout: p.cfg.Timeout, Plugin: p,
	}
}

// Trigger marks the task of a storage_add invocation if it runs under test.
func (p *Plugin) Trigger(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
	if c.Trigger != events.StorageAdd {
		return nil, fmt.Errorf("testing plugin: invoked on %s, handles only %s", c.Trigger, events.StorageAdd)
	}
	rec, err := taskrec.Record(c.Trigger, c.Payload)
	if err != nil {
		return nil, err
	}
	var t struct {
		Name  string
		Tags  []string
		Extra map[string]json.RawMessage
	}
	for _, f := range []struct {
		key string
		dst any
	}{{"task_name", &t.Name}, {"tags", &t.Tags}, {"extra", &t.Extra}} {
		if raw, ok := rec[f.key]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, fmt.Errorf("%w: storage_add payload: /task_status/%s: %w", ErrMalformed, f.key, err)
			}
		}
	}
	marked, err := markedExtra(t.Extra, "/task_status/extra")
	if err != nil {
		return nil, err
	}
	marked = marked || p.names[t.Name] || slices.ContainsFunc(t.Tags, func(tg string) bool { return p.tags[tg] })
	if !marked {
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}
	var ops []plugins.Op
	switch {
	case t.Extra == nil:
		ops = append(ops, plugins.Op{Op: "add", Path: "/task_status/extra", Value: map[string]bool{ExtraKey: true}})
	case string(t.Extra[ExtraKey]) != "true":
		ops = append(ops, plugins.Op{Op: "add", Path: "/task_status/extra/" + ExtraKey, Value: true})
	}
	switch {
	case slices.Contains(t.Tags, p.cfg.Tag):
	case len(t.Tags) == 0:
		// Tags are omitted when empty; "add" does not create parents.
		ops = append(ops, plugins.Op{Op: "add", Path: "/task_status/tags", Value: []string{p.cfg.Tag}})
	default:
		ops = append(ops, plugins.Op{Op: "add", Path: "/task_status/tags/-", Value: p.cfg.Tag})
	}
	if len(ops) == 0 {
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}
	return plugins.JSONPatch(ops...)
}

// markedExtra reads the mark from extra: true, or the strings "true" /
// "True" (QTasks' is_testing is the string "True"); false, null, absent or
// "false" mean unmarked.
func markedExtra(extra map[string]json.RawMessage, where string) (bool, error) {
	raw, ok := extra[ExtraKey]
	if !ok {
		return false, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, fmt.Errorf("%w: %s/%s: %w", ErrMalformed, where, ExtraKey, err)
	}
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(x) {
		case "true":
			return true, nil
		case "false", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("%w: %s/%s is %s: want true or false", ErrMalformed, where, ExtraKey, raw)
}

// Extra returns the extra that marks a task as run under test, for
// executor.SubmitOptions.Extra or executor.TaskOptions.Extra.
func Extra() map[string]any { return map[string]any{ExtraKey: true} }

// Marked reports whether task record t runs under test.
func Marked(t events.Task) bool {
	m, _ := markedExtra(t.Extra, "extra")
	return m
}

// MarkedPayload reports whether a payload of trigger carries a task record
// marked as run under test. It is false for a payload without a record
// (task_executor_args_replace, ...): look the task up instead (its
// storage_add fact, or its record).
func MarkedPayload(trigger string, payload []byte) bool {
	extra, err := taskrec.Extra(trigger, payload)
	if err != nil {
		return false
	}
	m, _ := markedExtra(extra, "extra")
	return m
}
