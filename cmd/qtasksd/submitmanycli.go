package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// maxNDJSONLine bounds one line of submit-many's input: a submission's
// arguments are at most events.MaxPayloadSize, with room for the rest.
const maxNDJSONLine = 2*events.MaxPayloadSize + 64<<10

// submitMany reads submissions from stdin, one JSON object a line
// (batchEntry: {"name":"add","kw":{"a":1},"key":"k","queue":"q",...}),
// submits them together (executor.App.SubmitMany) and prints one JSON
// result a line, in input order, each with its line number. Blank lines
// are skipped. The exit code is 0 when every one was queued (made or a
// duplicate), 10 when some were not (exitPartial), 6 when none failed
// but some outcomes are unknown (retry those lines with the key printed).
func (m *Main) submitMany(ctx context.Context, args []string) error {
	var conn connFlags
	fs := newFlagSet("qtasksd submit-many", m.Stderr, "qtasksd submit-many [flags] < tasks.ndjson")
	conn.register(fs, DefaultClientURL)
	const hint = `echo '{"name":"add","kw":{"a":1,"b":2}}' | qtasksd submit-many`
	if err := parse(fs, args, hint); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{Msg: fmt.Sprintf("submit-many takes no arguments (got %q): the submissions come on stdin", fs.Arg(0)), Hint: hint}
	}
	in := m.Stdin
	if in == nil {
		in = os.Stdin
	}
	lines, numbers, err := readNDJSON(in, maxNDJSONLine)
	if err != nil {
		return &usageError{Msg: err.Error() + " (nothing was submitted)", Hint: hint}
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
	results, sum := runBatch(ctx, app, lines)
	for i := range results {
		results[i].Line = numbers[i]
		if err := m.printLine(results[i]); err != nil {
			return err
		}
	}
	msg := fmt.Errorf("%d submitted: %d created, %d duplicates, %d failed (%d of them with their outcome unknown)",
		len(results), sum.Created, sum.Duplicates, sum.Failed, sum.Unknown)
	switch {
	case sum.Failed > sum.Unknown:
		return &exitError{Code: exitPartial, Err: msg}
	case sum.Unknown > 0:
		return &exitError{Code: exitUnknown, Err: msg}
	}
	return nil
}

// printLine prints v as one compact JSON line.
func (m *Main) printLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = m.Stdout.Write(b)
	return err
}
