// Package testplugin is the plugin the replay tests record history with
// and replay: a mutator on task_executor_args_replace that stamps the
// task's kw with the time and doubles kw.n. Version 2 answers with a JSON
// Patch instead of a merge patch (the same effect) and changes its answer
// for tasks whose kw.n is a multiple of 7.
package testplugin

import (
	"context"
	"slices"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// Name and Trigger of the plugin.
const (
	Name    = "stamp"
	Trigger = events.TaskExecutorArgsReplace
)

// Plugin is the test plugin.
type Plugin struct {
	// Version is "1" or "2".
	Version string
	// CrashAt calls Crash when kw.n is one of these.
	CrashAt []int
	Crash   func()
	// HangAt blocks until the call's context ends when kw.n is one of
	// these, and answers nothing.
	HangAt []int
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
}

// Changed reports whether version 2 answers differently for n.
func Changed(n int) bool { return n%7 == 0 }

// Trigger implements plugins.Plugin.
func (p *Plugin) Trigger(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
	var in struct {
		Kw struct {
			N int `json:"n"`
		} `json:"kw"`
	}
	if err := c.Decode(&in); err != nil {
		return nil, err
	}
	n := in.Kw.N
	if slices.Contains(p.CrashAt, n) && p.Crash != nil {
		p.Crash()
	}
	if slices.Contains(p.HangAt, n) {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	stamp := now().UTC().Format(time.RFC3339Nano)
	double := 2 * n
	if p.Version == "2" {
		if Changed(n) {
			double++
		}
		return plugins.JSONPatch(
			plugins.Op{Op: "add", Path: "/kw/stamp", Value: stamp},
			plugins.Op{Op: "add", Path: "/kw/double", Value: double},
		)
	}
	return plugins.MergePatch(map[string]any{"kw": map[string]any{"stamp": stamp, "double": double}})
}

// Spec returns the plugin's spec.
func Spec(p *Plugin) plugins.Spec {
	return plugins.Spec{Name: Name, Version: p.Version, Triggers: []string{Trigger}, Plugin: p}
}
