package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/projections"
)

func (m *Main) history(ctx context.Context, args []string) error {
	var c common
	var payloads bool
	fs := newFlagSet("qtasks-replay history", m.Stderr, "qtasks-replay history TASK_ID [--json] [--payloads]")
	c.register(fs, true)
	fs.BoolVar(&payloads, "payloads", false, "print each fact's input and output")
	pos, err := parse(fs, args, "qtasks-replay history TASK_ID")
	if err != nil {
		return err
	}
	id, err := taskArg(pos, "history")
	if err != nil {
		return err
	}
	return query(ctx, m, &c, func(db *projections.DB) (projections.Timeline, error) { return db.Timeline(ctx, id) },
		func(tl projections.Timeline) error {
			printTimeline(m.Stdout, tl, payloads)
			return nil
		})
}

// query is the shape of every read command: open the projection, ask it,
// and print the answer as JSON (--json) or as text. An unknown task and a
// cursor this program did not write get their own exit codes here, once.
func query[T any](ctx context.Context, m *Main, c *common, ask func(*projections.DB) (T, error), text func(T) error) error {
	db, err := c.openRead(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	v, err := ask(db)
	switch {
	case errors.Is(err, projections.ErrNotFound):
		return &exitError{Code: ExitNotFound, Err: err}
	case errors.Is(err, projections.ErrBadCursor):
		return &usageError{Msg: err.Error(), Hint: "pass the next cursor a previous page printed"}
	case err != nil:
		return err
	}
	if c.json {
		return writeJSON(m.Stdout, v)
	}
	return text(v)
}

func printTimeline(w io.Writer, tl projections.Timeline, payloads bool) {
	t := tl.Task
	fmt.Fprintf(w, "task %s  %s  queue %s  priority %d\n", t.ID, t.Name, t.Queue, t.Priority)
	fmt.Fprintf(w, "status %s  attempt %d  retries left %d", t.Status, t.Attempt, t.RetriesLeft)
	if t.Worker != "" {
		fmt.Fprintf(w, "  worker %s", t.Worker)
	}
	fmt.Fprintln(w)
	if len(t.Tags) > 0 {
		fmt.Fprintf(w, "tags %s\n", strings.Join(t.Tags, ", "))
	}
	fmt.Fprintf(w, "created %s  queued %s  started %s  executed %s  finished %s\n",
		fmtTime(t.CreatedAt), fmtTime(t.QueuedAt), fmtTime(t.StartedAt), fmtTime(t.ExecutedAt), fmtTime(t.FinishedAt))
	fmt.Fprintf(w, "submitted  args %s  kw %s\n", orDash(t.ArgsSubmitted), orDash(t.KwSubmitted))
	if len(t.ArgsExecuted) > 0 || len(t.KwExecuted) > 0 {
		fmt.Fprintf(w, "executed   args %s  kw %s\n", orDash(t.ArgsExecuted), orDash(t.KwExecuted))
	}
	if len(t.Result) > 0 {
		fmt.Fprintf(w, "result %s\n", compact(t.Result, 200))
	}
	if t.Error != "" {
		fmt.Fprintf(w, "error %s\n", t.Error)
	}
	if t.Reason != "" && t.Reason != t.Error {
		fmt.Fprintf(w, "reason %s\n", t.Reason)
	}
	for _, a := range t.Attempts {
		fmt.Fprintf(w, "attempt %d: %s", a.Attempt, a.Status)
		if a.Runs > 1 {
			fmt.Fprintf(w, " after %d runs", a.Runs)
		}
		if a.RetryParent != "" {
			fmt.Fprintf(w, "  retry of %s", a.RetryParent)
		}
		if a.RetryChild != "" {
			fmt.Fprintf(w, "  retried as %s", a.RetryChild)
		}
		if a.Error != "" {
			fmt.Fprintf(w, "  error: %s", a.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%8s  %-24s  %-7s  %s\n", "SEQ", "TIME", "ATT.RUN", "TRIGGER")
	for _, e := range tl.Entries {
		fmt.Fprintf(w, "%8s  %-24s  %-7s  %s", position(e.Seq, e.Index), fmtTime(e.Time), fmt.Sprintf("%d.%d", e.Attempt, e.Run), e.Trigger)
		if e.Replay != "" {
			fmt.Fprintf(w, "  (replay %s)", e.Replay)
		}
		fmt.Fprintln(w)
		if payloads {
			fmt.Fprintf(w, "%10s input  %s\n", "", compact(e.Input, 400))
			if len(e.Output) > 0 {
				fmt.Fprintf(w, "%10s output %s\n", "", compact(e.Output, 400))
			}
		}
		for _, c := range e.Calls {
			kind := ""
			switch c.ContentType {
			case events.ContentTypeMergePatch:
				kind = "merge patch"
			case events.ContentTypeJSONPatch:
				kind = "JSON patch"
			}
			fmt.Fprintf(w, "%10s %s", "", c.Plugin)
			if c.Version != "" {
				fmt.Fprintf(w, "@%s", c.Version)
			}
			fmt.Fprintf(w, "  %s  %s", c.Outcome, fmtLatency(c.LatencyUS))
			if kind != "" {
				fmt.Fprintf(w, "  %s", kind)
			}
			if c.Policy != "" && c.Outcome != string(events.OutcomeApplied) && c.Outcome != string(events.OutcomeNoChange) {
				fmt.Fprintf(w, "  policy %s", c.Policy)
			}
			fmt.Fprintln(w)
			if c.Reason != "" {
				fmt.Fprintf(w, "%12s reason: %s\n", "", c.Reason)
			}
			for _, ch := range c.Changes {
				fmt.Fprintf(w, "%12s %s\n", "", compact([]byte(ch.String()), 300))
			}
			if len(c.Changes) == 0 && len(c.Patch) > 0 && c.Outcome != string(events.OutcomeApplied) {
				fmt.Fprintf(w, "%12s patch %s\n", "", compact(c.Patch, 300))
			}
		}
		if e.Failed != "" {
			fmt.Fprintf(w, "%10s failed: %s\n", "", e.Failed)
		}
	}
}

// position is where a fact is in the log: its message's stream sequence,
// and for a fact packed in a phase message its index there (seq.index).
func position(seq uint64, index int) string {
	if index == 0 {
		return strconv.FormatUint(seq, 10)
	}
	return strconv.FormatUint(seq, 10) + "." + strconv.Itoa(index)
}

func orDash(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	return compact(b, 200)
}

func (m *Main) tasks(ctx context.Context, args []string) error {
	var c common
	var f projections.TaskFilter
	var since, until string
	fs := newFlagSet("qtasks-replay tasks", m.Stderr, "qtasks-replay tasks [--status S] [--name N] [--tag T] [--since T] [--until T] [--limit N] [--cursor C] [--json]")
	c.register(fs, true)
	fs.StringVar(&f.Status, "status", "", "only tasks in this status: new, process, success, error, cancel, retry")
	fs.StringVar(&f.Name, "name", "", "only tasks of this name")
	fs.StringVar(&f.Tag, "tag", "", "only tasks with this tag")
	fs.StringVar(&since, "since", "", "created at or after: RFC 3339, YYYY-MM-DD, or a duration ago (2h)")
	fs.StringVar(&until, "until", "", "created before: RFC 3339, YYYY-MM-DD, or a duration ago")
	fs.IntVar(&f.Limit, "limit", projections.DefaultLimit, fmt.Sprintf("tasks per page (at most %d)", projections.MaxLimit))
	fs.StringVar(&f.Cursor, "cursor", "", "continue after a previous page (its next cursor)")
	pos, err := parse(fs, args, "qtasks-replay tasks --status error")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: "qtasks-replay tasks --name NAME"}
	}
	if f.Limit < 0 {
		return &usageError{Msg: fmt.Sprintf("--limit %d: must not be negative", f.Limit), Hint: "qtasks-replay tasks --limit 100"}
	}
	switch f.Status {
	case "", events.StatusNew, events.StatusProcess, events.StatusSuccess, events.StatusError, events.StatusCancel, events.StatusRetry:
	default:
		return &usageError{Msg: fmt.Sprintf("--status %q: want new, process, success, error, cancel or retry", f.Status), Hint: "qtasks-replay tasks --status error"}
	}
	if f.Since, f.Until, err = timeRange(since, until, time.Now(), "qtasks-replay tasks --since 2h --until 1h"); err != nil {
		return err
	}
	return query(ctx, m, &c, func(db *projections.DB) (projections.TaskPage, error) { return db.Tasks(ctx, f) },
		func(page projections.TaskPage) error {
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tATTEMPT\tCREATED\tFINISHED\tERROR")
			for _, t := range page.Tasks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.ID, t.Name, t.Status, t.Attempt, fmtTime(t.CreatedAt), fmtTime(t.FinishedAt), compact([]byte(t.Error), 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(m.Stderr, "more: qtasks-replay tasks --cursor %s (with the same filters)\n", page.Next)
			}
			return nil
		})
}

func (m *Main) blame(ctx context.Context, args []string) error {
	var c common
	fs := newFlagSet("qtasks-replay blame", m.Stderr, "qtasks-replay blame TASK_ID [--json]")
	c.register(fs, true)
	pos, err := parse(fs, args, "qtasks-replay blame TASK_ID")
	if err != nil {
		return err
	}
	id, err := taskArg(pos, "blame")
	if err != nil {
		return err
	}
	return query(ctx, m, &c, func(db *projections.DB) ([]projections.Blame, error) { return db.Blame(ctx, id) },
		func(bl []projections.Blame) error {
			if len(bl) == 0 {
				fmt.Fprintf(m.Stdout, "no plugin changed task %s\n", id)
				return nil
			}
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FIELD\tPLUGIN\tVERSION\tSEQ\tATTEMPT\tTRIGGER\tCHANGE")
			for _, b := range bl {
				change := b.Op
				if len(b.Value) > 0 {
					change += " " + compact(b.Value, 80)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", b.Path, b.Plugin, orDash([]byte(b.Version)), b.Seq, b.Attempt, b.Trigger, change)
			}
			return tw.Flush()
		})
}

func (m *Main) calls(ctx context.Context, args []string) error {
	var c common
	var f projections.CallFilter
	fs := newFlagSet("qtasks-replay calls", m.Stderr, "qtasks-replay calls [--plugin P] [--version V] [--outcome O] [--trigger T] [--task ID] [--limit N] [--cursor C] [--json]")
	c.register(fs, true)
	fs.StringVar(&f.Plugin, "plugin", "", "only calls of this plugin")
	fs.StringVar(&f.Version, "version", "", "only calls of this plugin version")
	fs.StringVar(&f.Outcome, "outcome", "", "only calls with this outcome: applied, nochange, rejected, timeout, error, shadow")
	fs.StringVar(&f.Trigger, "trigger", "", "only calls on this trigger")
	fs.StringVar(&f.TaskID, "task", "", "only calls for this task")
	fs.IntVar(&f.Limit, "limit", projections.DefaultLimit, fmt.Sprintf("calls per page (at most %d)", projections.MaxLimit))
	fs.StringVar(&f.Cursor, "cursor", "", "continue after a previous page (its next cursor)")
	pos, err := parse(fs, args, "qtasks-replay calls --plugin NAME --outcome rejected")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: "qtasks-replay calls --plugin NAME"}
	}
	if f.Limit < 0 {
		return &usageError{Msg: fmt.Sprintf("--limit %d: must not be negative", f.Limit), Hint: "qtasks-replay calls --limit 100"}
	}
	switch events.Outcome(f.Outcome) {
	case "", events.OutcomeApplied, events.OutcomeNoChange, events.OutcomeRejected, events.OutcomeTimeout, events.OutcomeError, events.OutcomeShadow:
	default:
		return &usageError{Msg: fmt.Sprintf("--outcome %q: want applied, nochange, rejected, timeout, error or shadow", f.Outcome), Hint: "qtasks-replay calls --outcome rejected"}
	}
	return query(ctx, m, &c, func(db *projections.DB) (projections.CallPage, error) { return db.PluginCalls(ctx, f) },
		func(page projections.CallPage) error {
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTASK\tTRIGGER\tPLUGIN\tVERSION\tOUTCOME\tLATENCY\tREASON")
			for _, cl := range page.Calls {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", position(cl.FactSeq, cl.FactIdx), cl.TaskID, cl.Trigger, cl.Plugin, orDash([]byte(cl.Version)), cl.Outcome, fmtLatency(cl.LatencyUS), compact([]byte(cl.Reason), 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(m.Stderr, "more: qtasks-replay calls --cursor %s (with the same filters)\n", page.Next)
			}
			return nil
		})
}

// rejected lists the messages of the log the projection could not take as
// events of ours: a rogue or buggy publisher's, with the reason.
func (m *Main) rejected(ctx context.Context, args []string) error {
	var c common
	var after uint64
	var limit int
	fs := newFlagSet("qtasks-replay rejected", m.Stderr, "qtasks-replay rejected [--after SEQ] [--limit N] [--json]")
	c.register(fs, true)
	fs.Uint64Var(&after, "after", 0, "only messages after this stream sequence")
	fs.IntVar(&limit, "limit", projections.DefaultLimit, fmt.Sprintf("messages per page (at most %d)", projections.MaxLimit))
	pos, err := parse(fs, args, "qtasks-replay rejected --after 0")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: "qtasks-replay rejected --after SEQ"}
	}
	if limit < 0 {
		return &usageError{Msg: fmt.Sprintf("--limit %d: must not be negative", limit), Hint: "qtasks-replay rejected --limit 100"}
	}
	return query(ctx, m, &c, func(db *projections.DB) ([]projections.Rejected, error) { return db.RejectedEvents(ctx, after, limit) },
		func(page []projections.Rejected) error {
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tSUBJECT\tTYPE\tID\tREASON")
			for _, r := range page {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", position(r.Seq, r.Index), r.Subject, orDash([]byte(r.Type)), orDash([]byte(r.EventID)), compact([]byte(r.Reason), 100))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// A page holds the limit and the rest of its last message's.
			if n := len(page); n > 0 && n >= cmp.Or(min(limit, projections.MaxLimit), projections.DefaultLimit) {
				fmt.Fprintf(m.Stderr, "more: qtasks-replay rejected --after %d\n", page[n-1].Seq)
			}
			return nil
		})
}
