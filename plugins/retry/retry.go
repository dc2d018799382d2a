// Package retry is the retry plugin of qtasks, the counterpart of QTasks'
// AsyncRetryPlugin: a mutator on worker_task_error_retry that sets the
// backoff before a failed task's next attempt and vetoes retries of errors
// it is not configured to retry.
//
// The executor decides in-process whether a failed attempt may be retried
// at all: the task has retries left (TaskOptions.Retry) and its error
// passes TaskOptions.RetryOn (errors.Is) / RetryIf (errors.As). Only then
// does worker_task_error_retry fire, with the retry record and the error
// chain:
//
//	{"model": {..., "status": "retry", "attempt": 1, "retry": 1, "retry_child": "<id>#2"},
//	 "error": "reading config: open /etc/x: no such file or directory",
//	 "errors": [{"type": "*fmt.wrapError", "message": "reading config: open /etc/x: ..."},
//	            {"type": "*fs.PathError", "message": "open /etc/x: no such file or directory"},
//	            {"type": "syscall.Errno", "message": "no such file or directory"}]}
//
// This plugin may run in any process, so it has no Go error values: it
// matches the chain's type names (exactly as fmt's %T prints them, the way
// errors.As matches by type) and message substrings. A retry it does not
// allow is vetoed (model.status becomes "error": the attempt ends in error
// with no further attempt); an allowed one gets model.delay_ms from the
// Backoff, and the executor queues attempt n+1 not before the failure time
// plus that delay.
//
//	p, err := retry.New(retry.Config{
//		Backoff:    retry.List{100 * time.Millisecond, time.Second},
//		NeverRetry: []retry.Match{{Type: "*json.SyntaxError"}},
//	})
//	runner, err := plugins.Local(ctx, b, p.Spec()) // or plugins.Start in a process of its own
//
// cmd/qtasks-retry runs it as a process of its own.
package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// Defaults of the plugin's registration (Spec).
const (
	DefaultName = "retry"
	Version     = "1"
)

// Match selects errors of a failed attempt's chain. An error matches when
// its type is Type (if set) and its message contains Message (if set); a
// Match with neither is rejected by New.
type Match struct {
	// Type is the error's dynamic type as fmt's %T prints it, compared
	// exactly: "*fs.PathError", "*net.OpError", "*mypkg.TempError".
	Type string `json:"type,omitempty"`
	// Message is a substring of the error's message.
	Message string `json:"message,omitempty"`
}

func (m Match) matches(e ChainedError) bool {
	return (m.Type == "" || m.Type == e.Type) && (m.Message == "" || strings.Contains(e.Message, m.Message))
}

func (m Match) String() string {
	switch {
	case m.Type != "" && m.Message != "":
		return fmt.Sprintf("%s containing %q", m.Type, m.Message)
	case m.Type != "":
		return m.Type
	}
	return fmt.Sprintf("message containing %q", m.Message)
}

// Config configures the plugin.
type Config struct {
	// Backoff gives model.delay_ms for each retry. Nil leaves the delay as
	// it is: the executor's default backoff (executor.Config.RetryBackoff,
	// events.DefaultRetryBackoff) unless an earlier plugin set another.
	Backoff Backoff
	// RetryOn lists the errors that may be retried: an attempt is retried
	// only if some error of its chain matches one of them. Empty: every
	// error the executor offers for a retry.
	RetryOn []Match
	// NeverRetry lists errors that are never retried, whatever RetryOn
	// says: an attempt with a matching error in its chain is vetoed.
	NeverRetry []Match
	// Logger receives a line for each veto, with its reason. Defaults to
	// discarding.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if err := validateBackoff(c.Backoff); err != nil {
		errs = append(errs, err)
	}
	for i, m := range c.RetryOn {
		if m == (Match{}) {
			errs = append(errs, fmt.Errorf("RetryOn[%d]: empty match; set Type or Message", i))
		}
	}
	for i, m := range c.NeverRetry {
		if m == (Match{}) {
			errs = append(errs, fmt.Errorf("NeverRetry[%d]: empty match; set Type or Message", i))
		}
	}
	return errors.Join(errs...)
}

// Plugin is the retry plugin. It is safe for concurrent use.
type Plugin struct {
	cfg Config
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns the plugin, or an error saying what is wrong with cfg
// (negative or empty backoffs, empty matches).
func New(cfg Config) (*Plugin, error) {
	cfg.RetryOn = append([]Match(nil), cfg.RetryOn...)
	cfg.NeverRetry = append([]Match(nil), cfg.NeverRetry...)
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("retry plugin: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Plugin{cfg: cfg}, nil
}

// Spec is the plugin's registration: name DefaultName, mutator on
// worker_task_error_retry, policy fail (a plugin that fails or does not
// answer in time vetoes the retry; use events.PolicyIgnore to retry
// without its backoff instead). Change fields before running it as needed.
func (p *Plugin) Spec() plugins.Spec {
	return plugins.Spec{
		Name: DefaultName, Version: Version, Triggers: []string{events.WorkerTaskErrorRetry},
		Mode: plugins.Mutator, Policy: events.PolicyFail, Plugin: p,
	}
}

// ChainedError is one entry of the "errors" list of worker_task_error_retry:
// an error of the failed attempt's chain, outermost first (errors.Unwrap
// and errors.Join, depth first).
type ChainedError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Payload is the payload of worker_task_error_retry as this plugin reads it.
type Payload struct {
	Model *events.Task `json:"model"`
	// Error is the attempt's error text.
	Error string `json:"error"`
	// Errors is the error chain; executors that do not send it leave only
	// Error, which is then matched as one entry of unknown type.
	Errors []ChainedError `json:"errors"`
}

// Decision is what the plugin makes of one failed attempt.
type Decision struct {
	// Retry reports whether the next attempt may run.
	Retry bool
	// Delay before it, when Retry and a Backoff is set.
	Delay time.Duration
	// Why a retry was vetoed.
	Reason string
}

// Decide applies the configuration to a payload of
// worker_task_error_retry. It is Trigger without the patch.
func (p *Plugin) Decide(pl Payload) Decision {
	chain := pl.Errors
	if len(chain) == 0 && pl.Error != "" {
		chain = []ChainedError{{Message: pl.Error}}
	}
	for _, m := range p.cfg.NeverRetry {
		for _, e := range chain {
			if m.matches(e) {
				return Decision{Reason: fmt.Sprintf("error %s (%q) matches NeverRetry %s", typeOr(e.Type), e.Message, m)}
			}
		}
	}
	if len(p.cfg.RetryOn) > 0 && !matchesAny(p.cfg.RetryOn, chain) {
		return Decision{Reason: "no error of the chain matches RetryOn"}
	}
	d := Decision{Retry: true}
	if p.cfg.Backoff != nil && pl.Model != nil {
		d.Delay = min(max(p.cfg.Backoff.Delay(pl.Model.Attempt), 0), MaxDelay)
	}
	return d
}

func matchesAny(ms []Match, chain []ChainedError) bool {
	for _, m := range ms {
		if slices.ContainsFunc(chain, m.matches) {
			return true
		}
	}
	return false
}

func typeOr(t string) string {
	if t == "" {
		return "of unknown type"
	}
	return t
}

// Trigger answers worker_task_error_retry: a merge patch setting
// model.delay_ms, or model.status "error" to veto. A payload it cannot read
// (no model, a model that is not a task record) is an error: the plugin's
// failure policy decides what the task gets.
func (p *Plugin) Trigger(ctx context.Context, call *plugins.Call) (*plugins.Patch, error) {
	if call.Trigger != events.WorkerTaskErrorRetry {
		return nil, nil //nolint:nilnil // no patch (the Plugin contract's "no change"): registered elsewhere by hand, not ours
	}
	var pl Payload
	if err := call.Decode(&pl); err != nil {
		return nil, err
	}
	if pl.Model == nil {
		return nil, errors.New("worker_task_error_retry payload has no model")
	}
	if pl.Model.Status != events.StatusRetry {
		return nil, nil //nolint:nilnil // no patch (the Plugin contract's "no change"): an earlier plugin already vetoed, leave it
	}
	if pl.Model.Attempt < 1 {
		return nil, fmt.Errorf("worker_task_error_retry model has attempt %d; want ≥ 1", pl.Model.Attempt)
	}
	d := p.Decide(pl)
	if !d.Retry {
		p.cfg.Logger.InfoContext(ctx, "retry vetoed", "task_id", call.TaskID, "task_name", call.TaskName,
			"attempt", pl.Model.Attempt, "reason", d.Reason)
		return plugins.MergePatch(map[string]any{"model": map[string]any{"status": events.StatusError}})
	}
	if p.cfg.Backoff == nil {
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}
	return plugins.MergePatch(map[string]any{"model": map[string]any{"delay_ms": d.Delay.Milliseconds()}})
}
