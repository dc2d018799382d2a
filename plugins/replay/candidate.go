package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // bus.Open starts an embedded server
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// Environment variables a candidate process is started with.
const (
	EnvNatsURL = "QTASKS_NATS_URL"
	EnvReplay  = "QTASKS_REPLAY"
	EnvPlugin  = "QTASKS_REPLAY_PLUGIN"
)

// Defaults of Candidate.
const (
	DefaultStartTimeout = 30 * time.Second
	DefaultStopGrace    = 5 * time.Second
)

// Command is a candidate plugin program, run as its own process exactly as
// in production, against a replay server.
type Command struct {
	// Path of the program; looked up in PATH when it has no slash.
	Path string
	// Args after the program name. {nats_url}, {replay_id} and {plugin}
	// are replaced by the replay server's URL, the replay id and the
	// plugin's name.
	Args []string
	// Env is added to the current environment, after QTASKS_NATS_URL,
	// QTASKS_REPLAY and QTASKS_REPLAY_PLUGIN.
	Env []string
	// Dir is the working directory; empty for the current one.
	Dir string
	// Stdout and Stderr receive the program's output; nil discards it.
	Stdout, Stderr io.Writer
}

// ParseCommand splits a command line on spaces, honouring single and
// double quotes, for a --candidate-cmd flag.
func ParseCommand(line string) (*Command, error) {
	var args []string
	var cur strings.Builder
	var quote rune
	inArg := false
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inArg = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("command %q: unterminated quote", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, errors.New("command is empty")
	}
	return &Command{Path: args[0], Args: args[1:]}, nil
}

// Candidate is a version of a plugin to feed recorded invocations. Set
// exactly one of Command and Spec.
type Candidate struct {
	// Name is the plugin the candidate registers as. Defaults to the
	// replayed plugin (Run), or Spec.Name; Redrive needs it for a Command.
	Name string
	// Command runs the candidate as its own process in a replay namespace
	// of its own: a fresh embedded JetStream server (see the package
	// documentation). This is the production path.
	Command *Command
	// Spec runs a plugin value in-process: Spec.Plugin is called directly,
	// with the Call the plugin runner would build, without NATS. For go
	// test. Spec.Name defaults to the replayed plugin's name; Spec.Version,
	// Spec.Timeout, Spec.Policy and Spec.Triggers are used as the runner
	// would (Triggers and Policy matter to Redrive only).
	Spec *plugins.Spec
	// State is the bus whose plugin state an in-process Spec's calls see
	// (Call.State); nil leaves Call.State nil. Use a test bus, never the
	// live one, unless the plugin only reads its state.
	State *bus.Bus
	// Timeout bounds one invocation. Defaults to the timeout the candidate
	// registers (Command) or Spec.Timeout, else plugins.DefaultTimeout.
	Timeout time.Duration
	// StartTimeout bounds the wait for a Command to register its plugin.
	// Defaults to DefaultStartTimeout.
	StartTimeout time.Duration
	// StopGrace is how long a Command gets to exit after SIGTERM before it
	// is killed. Defaults to DefaultStopGrace.
	StopGrace time.Duration
}

// ExitError is the error of invocations sent to a candidate process that
// has exited.
type ExitError struct {
	// Err is what exec.Cmd.Wait returned: nil for exit status 0.
	Err error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return "candidate exited (status 0)"
	}
	return "candidate exited: " + e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// answerer answers invocations for one candidate.
type answerer interface {
	// info is the candidate's registration.
	info() events.PluginInfo
	// answer sends inv and returns the patch event. The error is
	// bus.ErrPluginTimeout for no answer in time, an *ExitError when the
	// process is gone, or another failure to get an answer.
	answer(ctx context.Context, inv events.Event) (events.Event, error)
	close(ctx context.Context) error
	// kind describes the candidate for reports: process or in-process.
	kind() string
}

// start starts c as plugin name in replay namespace replayID.
func (c *Candidate) start(ctx context.Context, name, replayID string, log *slog.Logger) (answerer, error) {
	if c.Name != "" {
		name = c.Name
	}
	switch {
	case c.Command != nil && c.Spec != nil:
		return nil, errors.New("candidate: set Command or Spec, not both")
	case c.Command != nil:
		return startProcess(ctx, c, name, replayID, log)
	case c.Spec != nil:
		p, err := newInProcess(c, name)
		if err != nil {
			return nil, err
		}
		p.id = replayID
		if st, ok := p.spec.Plugin.(plugins.Starter); ok {
			if err := st.Start(ctx); err != nil {
				return nil, fmt.Errorf("starting plugin %s: %w", p.spec.Name, err)
			}
		}
		return p, nil
	}
	return nil, errors.New("candidate: set Command or Spec")
}

// prepare turns a recorded invocation into the one a candidate receives:
// the same id, task, trigger and payload; the candidate's plugin
// attributes and timeout; the time of the replay (a plugin drops an
// invocation older than its timeout) and the replay id.
func prepare(inv events.Event, info events.PluginInfo, replayID string) events.Event {
	inv.Type = events.TypeInvokePrefix + inv.Trigger
	inv.Plugin = info.Name
	inv.PluginVersion = info.Version
	inv.TimeoutMS = int(info.TimeoutMS)
	inv.Time = time.Now()
	inv.Replay = replayID
	if inv.DataContentType == "" {
		inv.DataContentType = events.ContentTypeJSON
	}
	return inv
}

// Bounds of a replay server's event log. Nothing reads it once an
// invocation is answered, and a JetStream server keeps an index entry per
// subject and per message id in memory: unbounded, a long replay would
// grow the replaying process with every invocation.
const (
	replayLogMsgs       = 10000
	replayLogDuplicates = 10 * time.Second
)

// boundReplayLog bounds the replay server's event log, once the candidate
// has connected (a candidate that provisions would reset it).
func boundReplayLog(ctx context.Context, rb *bus.Bus) error {
	s := rb.EventStream()
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("bounding the replay log: %w", err)
	}
	cfg := info.Config
	cfg.MaxMsgs, cfg.Duplicates, cfg.Discard = replayLogMsgs, replayLogDuplicates, jetstream.DiscardOld
	if _, err := rb.JetStream().UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bounding the replay log: %w", err)
	}
	return nil
}

// process is a candidate in its own process, on its own replay server.
type process struct {
	rb   *bus.Bus
	cmd  *exec.Cmd
	inf  events.PluginInfo
	id   string
	log  *slog.Logger
	ctx  context.Context // cancelled with an *ExitError when the process exits
	stop context.CancelCauseFunc

	exited   chan struct{}
	exitErr  *ExitError
	grace    time.Duration
	closeMu  sync.Mutex
	isClosed bool
}

func startProcess(ctx context.Context, c *Candidate, name, replayID string, log *slog.Logger) (*process, error) {
	rb, err := bus.Open(ctx, bus.Config{Name: "qtasks-replay-" + replayID, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("starting the replay server: %w", err)
	}
	url := rb.ClientURL()
	repl := strings.NewReplacer("{nats_url}", url, "{replay_id}", replayID, "{plugin}", name)
	args := make([]string, len(c.Command.Args))
	for i, a := range c.Command.Args {
		args[i] = repl.Replace(a)
	}
	// Not bound to ctx (the start's): the candidate outlives it, and close
	// ends it, SIGTERM first.
	cmd := exec.Command(c.Command.Path, args...) //nolint:gosec,noctx // gosec: running the candidate the user named is the point; noctx: see above
	cmd.Dir = c.Command.Dir
	cmd.Env = append(os.Environ(), EnvNatsURL+"="+url, EnvReplay+"="+replayID, EnvPlugin+"="+name)
	cmd.Env = append(cmd.Env, c.Command.Env...)
	cmd.Stdout, cmd.Stderr = c.Command.Stdout, c.Command.Stderr
	p := &process{
		rb: rb, cmd: cmd, id: replayID, exited: make(chan struct{}), grace: c.StopGrace,
		log: log.With("candidate", c.Command.Path),
	}
	if p.grace <= 0 {
		p.grace = DefaultStopGrace
	}
	p.ctx, p.stop = context.WithCancelCause(context.Background())
	if err := cmd.Start(); err != nil {
		rb.Close()
		return nil, fmt.Errorf("starting candidate %s: %w", c.Command.Path, err)
	}
	go func() {
		err := cmd.Wait()
		p.exitErr = &ExitError{Err: err}
		close(p.exited)
		p.stop(p.exitErr)
	}()
	st := c.StartTimeout
	if st <= 0 {
		st = DefaultStartTimeout
	}
	wctx, cancel := context.WithTimeoutCause(ctx, st, fmt.Errorf("candidate did not register plugin %s within %v", name, st))
	defer cancel()
	stopWatch := context.AfterFunc(p.ctx, func() { cancel() })
	defer stopWatch()
	if err := rb.Registry().WaitFor(wctx, name, ""); err != nil {
		if p.ctx.Err() != nil {
			err = fmt.Errorf("waiting for plugin %s to register: %w", name, context.Cause(p.ctx))
		} else if cause := context.Cause(wctx); cause != nil {
			err = cause
		}
		_ = p.close(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := boundReplayLog(ctx, rb); err != nil {
		_ = p.close(context.WithoutCancel(ctx))
		return nil, err
	}
	p.inf, _ = rb.Registry().Get(name)
	if p.inf.Mode == events.ModeObserver {
		_ = p.close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("candidate registered %s as an observer: only mutators and shadows answer invocations", name)
	}
	if c.Timeout > 0 {
		p.inf.TimeoutMS = c.Timeout.Milliseconds()
	}
	if p.inf.TimeoutMS <= 0 {
		p.inf.TimeoutMS = plugins.DefaultTimeout.Milliseconds()
	}
	return p, nil
}

func (p *process) info() events.PluginInfo { return p.inf }
func (p *process) kind() string            { return "process" }

func (p *process) answer(ctx context.Context, inv events.Event) (events.Event, error) {
	select {
	case <-p.exited:
		return events.Event{}, p.exitErr
	default:
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(p.ctx, func() { cancel(context.Cause(p.ctx)) })
	defer stop()
	reply, err := p.rb.Invoke(ctx, p.inf, prepare(inv, p.inf, p.id))
	if err != nil {
		if ee, ok := errors.AsType[*ExitError](context.Cause(ctx)); ok {
			return events.Event{}, ee
		}
		return events.Event{}, err
	}
	return reply.Patch, nil
}

// close stops the process (SIGTERM, then SIGKILL after the grace period)
// and its replay server.
func (p *process) close(ctx context.Context) error {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.isClosed {
		return nil
	}
	p.isClosed = true
	defer p.rb.Close()
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(p.grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	p.log.WarnContext(ctx, "candidate did not stop after SIGTERM; killing it", "grace", p.grace)
	_ = p.cmd.Process.Kill()
	<-p.exited
	return nil
}

// inProcess calls a plugin value directly, as the runner would.
type inProcess struct {
	spec  plugins.Spec
	inf   events.PluginInfo
	state *bus.PluginState
	id    string
}

func newInProcess(c *Candidate, name string) (*inProcess, error) {
	s := *c.Spec
	if s.Plugin == nil {
		return nil, errors.New("candidate: Spec.Plugin is nil")
	}
	if s.Name == "" {
		s.Name = name
	}
	if s.Mode == "" {
		s.Mode = plugins.Mutator
	}
	if s.Mode == plugins.Observer {
		return nil, fmt.Errorf("candidate %s is an observer: only mutators and shadows answer invocations", s.Name)
	}
	if s.Policy == "" {
		s.Policy = events.PolicyFail
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = s.Timeout
	}
	if timeout <= 0 {
		timeout = plugins.DefaultTimeout
	}
	p := &inProcess{spec: s, inf: events.PluginInfo{
		Name: s.Name, Version: s.Version, Triggers: s.Triggers, Mode: s.Mode, Policy: s.Policy,
		ShadowOf: s.ShadowOf, TimeoutMS: timeout.Milliseconds(), Local: true,
	}}
	if c.State != nil {
		p.state = c.State.PluginState(s.Name)
	}
	return p, nil
}

func (p *inProcess) info() events.PluginInfo { return p.inf }
func (p *inProcess) kind() string            { return "in-process" }

func (p *inProcess) answer(ctx context.Context, inv events.Event) (events.Event, error) {
	inv = prepare(inv, p.inf, p.id)
	ctx, cancel := context.WithTimeoutCause(ctx, time.Duration(p.inf.TimeoutMS)*time.Millisecond, bus.ErrPluginTimeout)
	defer cancel()
	call := &plugins.Call{
		Trigger: inv.Trigger, TaskID: inv.TaskID, TaskName: inv.TaskName, Attempt: inv.Attempt,
		Run: inv.Run, Payload: inv.Data, Event: inv, State: p.state,
	}
	type result struct {
		p   *plugins.Patch
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if x := recover(); x != nil {
				// The runner's words, so that both paths report alike.
				done <- result{err: fmt.Errorf("plugin %s panicked: %v", p.spec.Name, x)}
			}
		}()
		patch, err := p.spec.Plugin.Trigger(ctx, call)
		done <- result{patch, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return events.Event{}, context.Cause(ctx)
	}
	// As plugins.Runner answers: an error travels as pluginerror, a nil or
	// empty patch as no data.
	ev := events.Event{PluginVersion: p.spec.Version}
	switch {
	case r.err != nil:
		ev.PluginError = r.err.Error()
	case r.p != nil && len(r.p.Body) > 0:
		ev.DataContentType, ev.Data = r.p.ContentType, r.p.Body
	}
	bus.FillPatch(&ev, p.inf, inv)
	return ev, nil
}

func (p *inProcess) close(context.Context) error {
	if s, ok := p.spec.Plugin.(plugins.Stopper); ok {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStopGrace)
		defer cancel()
		return s.Stop(ctx)
	}
	return nil
}
