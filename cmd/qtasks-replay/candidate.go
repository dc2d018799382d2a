package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/qtasks/qtasks-go/plugins/replay"
)

// natsURLPlaceholder is what a candidate command names to be told the
// replay server's address.
const natsURLPlaceholder = "{nats_url}"

// candidateCmd parses the value of a candidate flag (--candidate-cmd,
// --baseline-cmd, --candidate NAME=...). The command must pass the replay
// server's address to the program: one that does not connects to whatever
// its default is (a live server, or none) and used to fail with a bare
// "exit status 1" once it had started. Its output goes to out.
func candidateCmd(flagName, line, hint string, out *candidateOutput) (*replay.Command, error) {
	cmd, err := replay.ParseCommand(line)
	if err != nil {
		return nil, &usageError{Msg: flagName + ": " + err.Error(), Hint: hint}
	}
	if !slices.ContainsFunc(cmd.Args, func(a string) bool { return strings.Contains(a, natsURLPlaceholder) }) {
		return nil, &usageError{
			Msg: fmt.Sprintf("%s %q: no %s: the candidate must connect to the replay server, whose URL replaces %s (the live server is never given to a candidate)",
				flagName, line, natsURLPlaceholder, natsURLPlaceholder),
			Hint: hint,
		}
	}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, nil
}

// candidateOutput collects what candidate processes print (their logs),
// which used to go to stderr mixed with the progress bar and the report:
// into --candidate-log when given, and the last tailMax bytes in memory,
// printed when the replay fails (a candidate that exits says why there).
type candidateOutput struct {
	mu   sync.Mutex
	file *os.File
	tail []byte
}

const tailMax = 4 << 10

// openLog creates (or truncates) --candidate-log's file, when path is set.
func (o *candidateOutput) openLog(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--candidate-log: %w", err)
	}
	o.file = f
	return nil
}

func (o *candidateOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_, _ = o.file.Write(b)
	}
	o.tail = append(o.tail, b...)
	if n := len(o.tail); n > tailMax {
		o.tail = append(o.tail[:0], o.tail[n-tailMax:]...)
	}
	return len(b), nil
}

// close closes the log file; after an error err, it adds to err what the
// candidates printed last.
func (o *candidateOutput) close(err error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_ = o.file.Close()
	}
	if err == nil || len(o.tail) == 0 {
		return err
	}
	tail := bytes.TrimRight(o.tail, "\n")
	return fmt.Errorf("%w\nthe candidate's last output:\n%s", err, tail)
}
