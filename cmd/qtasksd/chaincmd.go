package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// chain is "qtasksd chain STEP... [--wait]": it starts a chain and prints
// its status (as GET /chains/{id} answers), after its end with --wait.
func (m *Main) chain(ctx context.Context, args []string) error {
	const hint = `qtasksd chain 'echo' '{"name":"add","kw":{"a":1,"b":2}}' --wait`
	var conn connFlags
	fs := newFlagSet("qtasksd chain", m.Stderr, "qtasksd chain STEP... [flags]")
	conn.register(fs, DefaultClientURL)
	wait := fs.Bool("wait", false, "wait for the chain to end and print its status then")
	timeout := fs.Duration("timeout", 60*time.Second, "how long --wait waits")
	// Steps first, flags after (as submit takes its name).
	var specs []string
	rest := args
	for len(rest) > 0 && (len(rest[0]) == 0 || rest[0][0] != '-') {
		specs, rest = append(specs, rest[0]), rest[1:]
	}
	if err := parse(fs, rest, hint); err != nil {
		return err
	}
	specs = append(specs, fs.Args()...)
	if len(specs) == 0 {
		return &usageError{Msg: "chain needs at least one step", Hint: hint}
	}
	if *wait && *timeout <= 0 {
		return &usageError{Msg: fmt.Sprintf("--timeout %v: must be positive", *timeout), Hint: hint}
	}
	steps := make([]executor.ChainStep, len(specs))
	for i, s := range specs {
		if !strings.HasPrefix(strings.TrimSpace(s), "{") {
			steps[i] = executor.ChainStep{Name: s}
		} else {
			var st struct {
				Name     string            `json:"name"`
				Args     []json.RawMessage `json:"args"`
				Kw       map[string]any    `json:"kw"`
				Queue    string            `json:"queue"`
				Priority *int              `json:"priority"`
			}
			if err := json.Unmarshal([]byte(s), &st); err != nil {
				return &usageError{Msg: fmt.Sprintf("step %d: not a task name nor a JSON object: %v", i+1, err), Hint: hint}
			}
			steps[i] = executor.ChainStep{Name: st.Name, Queue: st.Queue, Priority: st.Priority}
			for _, a := range st.Args {
				steps[i].Args = append(steps[i].Args, a)
			}
			if st.Kw != nil {
				steps[i].Input = st.Kw
			}
		}
		if !events.ValidToken(steps[i].Name) {
			return &usageError{Msg: fmt.Sprintf("step %d: task name %q is not one NATS subject token", i+1, steps[i].Name), Hint: hint}
		}
	}
	b, err := openClient(ctx, &conn, false)
	if err != nil {
		return err
	}
	defer b.Close()
	app, err := executor.New(b, nil)
	if err != nil {
		return err
	}
	c, err := app.Chain(ctx, steps...)
	if errors.Is(err, executor.ErrOutcomeUnknown) {
		return &exitError{Code: exitUnknown, Err: err}
	}
	if errors.Is(err, executor.ErrInvalidInput) {
		return &usageError{Msg: err.Error(), Hint: hint}
	}
	if err != nil {
		return err
	}
	timedOut := false
	if *wait {
		wctx, cancel := context.WithTimeout(ctx, *timeout)
		_, werr := app.WaitChain(wctx, c.ID)
		cancel()
		timedOut = errors.Is(werr, context.DeadlineExceeded)
	}
	st, err := chainState(ctx, app, c.ID)
	if err != nil {
		return err
	}
	if err := m.printJSON(st); err != nil {
		return err
	}
	switch {
	case timedOut:
		return &exitError{Code: exitTimeout, Err: fmt.Errorf("chain %s still running after %v", c.ID, *timeout)}
	case st.Status == events.StatusError || st.Status == events.StatusCancel:
		return &exitError{Code: exitTask, Err: fmt.Errorf("chain %s ended in %s", c.ID, st.Status)}
	}
	return nil
}
