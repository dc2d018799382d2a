package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proc is a running command. Its stdout and stderr are collected together;
// its stdout lines can also be waited for (WaitLine).
type Proc struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   bytes.Buffer
	part  []byte      // stdout after its last newline
	lines chan string // stdout lines, the oldest dropped when nobody reads
	done  chan struct{}
}

// StartProc starts bin with args in directory dir ("" for the test's own).
// The process is killed at the end of the test if it is still running, and
// its output is logged if the test failed.
func StartProc(tb testing.TB, dir, bin string, args ...string) *Proc {
	tb.Helper()
	cmd := Command(bin, args...)
	cmd.Dir = dir
	return StartProcCmd(tb, cmd)
}

// Command is exec.Command for a process that a Cleanup kills if it is
// still running, as StartProcCmd's does. It is not bound to the test's
// context on purpose: that context ends before the test's cleanups, some
// of which signal the process to stop on its own and check how it did.
func Command(bin string, args ...string) *exec.Cmd {
	return exec.Command(bin, args...) //nolint:noctx // see above: a Cleanup ends it
}

// StartProcCmd is StartProc for a command the caller has set up (environment,
// standard input); its Stdout and Stderr are the Proc's.
func StartProcCmd(tb testing.TB, cmd *exec.Cmd) *Proc {
	tb.Helper()
	p := &Proc{t: tb, name: filepath.Base(cmd.Path), cmd: cmd, lines: make(chan string, 100), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = (*stdoutWriter)(p), (*lockedWriter)(p)
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("%s %s output:\n%s", p.name, strings.Join(cmd.Args[1:], " "), p.Output())
		}
	})
	return p
}

type lockedWriter Proc

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

// stdoutWriter keeps stdout with stderr and hands out its lines.
type stdoutWriter Proc

func (w *stdoutWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.Write(b)
	w.part = append(w.part, b...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		select {
		case w.lines <- line:
		default: // nobody is waiting for lines: keep the process running
		}
	}
}

// WaitLine waits up to limit for a stdout line containing s; the test
// fails if the process exits first or the time runs out.
func (p *Proc) WaitLine(s string, limit time.Duration) {
	p.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, s) {
				return
			}
		case <-p.done:
			// Wait has copied all the output by now: what is buffered
			// was printed just before the exit.
			for len(p.lines) > 0 {
				if strings.Contains(<-p.lines, s) {
					return
				}
			}
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.cmd.ProcessState, s)
		case <-deadline:
			p.t.Fatalf("%s printed no line %q within %v", p.name, s, limit)
		}
	}
}

// Output is what the process has printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// Wait waits up to limit for the process to exit and returns its exit
// code; the test fails if it is still running then.
func (p *Proc) Wait(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.t.Fatalf("%s did not exit within %v", p.name, limit)
		return -1
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
