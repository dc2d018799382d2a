// Package auditsink is an observer plugin that writes the facts of the
// event log to newline-delimited CloudEvents JSON files, for users who ship
// audit logs elsewhere (a log shipper, object storage, a SIEM).
//
// # Files
//
// Each line is one fact as a CloudEvent in the JSON event format
// (structured mode), as the CloudEvents Go SDK writes it: the attributes
// of the NATS binding's headers, one for one (every extension as a string
// attribute, as in the headers), streamseq holding the fact's stream
// sequence, and data the fact (docs/PROTOCOL.md §7.3) as a JSON value. It
// is the export format of plugins/replay, for facts:
//
//	{"specversion":"1.0","id":"T:1:1:storage_get:0","source":"qtasks/node-1",
//	 "type":"io.qtasks.trigger.storage_get","subject":"T",
//	 "datacontenttype":"application/json","time":"2025-03-04T05:06:07.891Z",
//	 "data":{"input":{...},"output":{...}},"attempt":"1","run":"1",
//	 "streamseq":"42","taskid":"T","taskname":"calc","trigger":"storage_get"}
//
// Lines are in stream order (see below for a restart). Files are named
// after Config.Pattern in Config.Dir: {n} is a counter that grows with
// each file (zero-padded to six digits), {time} the UTC time the file was
// opened (20060102T150405Z). A file is closed and the next one opened when
// the next line would take it past Config.MaxSize (a line larger than that
// gets a file of its own), when it is older than Config.MaxAge (checked as
// facts arrive), and at each start of the sink. The file with the highest
// {n} may be being written; every other one is complete, and was fsynced
// before it was closed.
//
// # Delivery
//
// The sink is a durable JetStream consumer (plugins.Start): facts written
// while it is down are written when it comes back, from where it stopped;
// a new sink starts at the beginning of the log (Config.FromNow: at its
// end). A fact is acknowledged only after its line has been written with
// one write(2), so a crash of the process loses nothing. Delivery is at
// least once: a crash between the write and the acknowledgement makes
// JetStream deliver the fact again (after the consumer's ack wait, 30 s).
// On start the sink reads the last lines it wrote (up to DedupWindow, from
// the newest files), cuts off a line that a crash left half-written, and
// skips a fact whose ce-id it finds there; while it runs it remembers the
// ids of its last DedupWindow lines. A duplicate can still appear if the
// files were removed (shipped) in between; consumers should key on the id.
// Redelivered facts come after the facts that arrived meanwhile, so across
// a crash the order of lines can differ from the stream order: streamseq
// (and streamindex, for facts packed in one phase message) gives it back.
//
// The sink reads facts however they are stored, alone or packed in phase
// messages: it registers with reads_batches (docs/PROTOCOL.md §10), which
// a users file allows only to a plugin granted every trigger.
//
// Lines reach the disk when the operating system writes them; with
// Config.Sync each line is fsynced before its fact is acknowledged, which
// also survives a power loss (at the cost of one fsync per fact).
//
// A fact that cannot be written (a full disk) fails the call; the plugin
// runner retries it (plugins.Spec.MaxDeliver times) and then records a dead
// letter (qtasks.dead.<name>) pointing at it and goes on. A message of the
// log that is not a valid fact is dead-lettered the same way, unwritten.
package auditsink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/internal/cejson"
)

// Defaults and limits of Config.
const (
	DefaultName    = "auditsink"
	DefaultPattern = "qtasks-audit-{time}-{n}.jsonl"
	DefaultMaxSize = 64 << 20
	// MinMaxSize is the smallest MaxSize: a file must hold a few facts.
	MinMaxSize = 4096
	// DedupWindow is how many of the last lines written the sink
	// remembers, to skip a fact delivered again.
	DedupWindow = 4096
)

// ExtStreamSeq is the extension attribute holding a fact's stream
// sequence (as in plugins/replay's export format).
const ExtStreamSeq = cejson.ExtStreamSeq

// ExtStreamIndex is the extension attribute holding the position of a fact
// packed in a phase message (docs/PROTOCOL.md §3), whose facts share the
// message's streamseq: (streamseq, streamindex) orders the lines. Absent
// for a fact alone (index 0).
const ExtStreamIndex = "streamindex"

// timeLayout formats {time}.
const timeLayout = "20060102T150405Z"

// maxLine bounds a line read back on start.
const maxLine = 8 << 20

// Config configures a Sink.
type Config struct {
	// Name of the plugin and of its durable consumer. Run one sink per
	// name. Defaults to DefaultName.
	Name string
	// Version of the plugin, in its registration. Defaults to "1".
	Version string
	// Dir receives the files; it is created if missing and must be
	// writable. Required.
	Dir string
	// Pattern names the files: {n} (required) is the file counter, {time}
	// the time the file was opened. No path separators. Defaults to
	// DefaultPattern.
	Pattern string
	// MaxSize in bytes of one file. Defaults to DefaultMaxSize; at least
	// MinMaxSize.
	MaxSize int64
	// MaxAge closes a file this long after it was opened, at the next fact.
	// Zero: files are rotated by size only.
	MaxAge time.Duration
	// Triggers whose facts are written; empty writes every fact.
	Triggers []string
	// FromNow starts a new sink at the end of the log instead of its
	// beginning. It has no effect on a sink whose consumer exists.
	FromNow bool
	// Sync fsyncs each line before its fact is acknowledged.
	Sync bool
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// Sink writes facts to files. It is a plugins.Plugin (an observer) with
// Start and Stop; run it with plugins.Start(ctx, b, sink.Spec()).
type Sink struct {
	cfg     Config
	pattern *regexp.Regexp
	log     *slog.Logger

	mu      sync.Mutex
	f       *os.File
	path    string
	size    int64
	opened  time.Time
	next    int // {n} of the next file
	started bool
	seen    map[string]bool
	ring    []string // ids of the last lines, oldest first once full
	ringPos int
}

var (
	_ plugins.Plugin  = (*Sink)(nil)
	_ plugins.Starter = (*Sink)(nil)
	_ plugins.Stopper = (*Sink)(nil)
)

// New checks cfg, makes sure its directory exists and is writable, and
// returns the sink.
func New(cfg Config) (*Sink, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.Pattern == "" {
		cfg.Pattern = DefaultPattern
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if !events.ValidName(cfg.Name) {
		errs = append(errs, fmt.Errorf("name %q: use letters, digits, '-' and '_' (at most 64)", cfg.Name))
	}
	re, err := compilePattern(cfg.Pattern)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.MaxSize < MinMaxSize {
		errs = append(errs, fmt.Errorf("max size %d: must be at least %d bytes", cfg.MaxSize, MinMaxSize))
	}
	if cfg.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("max age %v: must not be negative", cfg.MaxAge))
	}
	for _, t := range cfg.Triggers {
		tr, ok := events.Lookup(t)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("unknown trigger %q", t))
		case tr.Scope == events.ScopeNone:
			errs = append(errs, fmt.Errorf("trigger %s is never fired: %s", t, tr.Note))
		}
	}
	if cfg.Dir == "" {
		errs = append(errs, errors.New("no directory: set Dir"))
	} else if err := checkDir(cfg.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("audit sink: %w", err)
	}
	return &Sink{
		cfg: cfg, pattern: re,
		log:  cfg.Logger.With("component", "auditsink", "plugin", cfg.Name, "dir", cfg.Dir),
		seen: map[string]bool{},
		ring: make([]string, 0, DedupWindow),
	}, nil
}

// compilePattern checks a file name pattern and returns the regular
// expression that matches its files, with {n} as the first group.
func compilePattern(p string) (*regexp.Regexp, error) {
	if strings.ContainsAny(p, `/\`) || strings.ContainsRune(p, os.PathSeparator) {
		return nil, fmt.Errorf("pattern %q: a file name, without path separators", p)
	}
	if strings.Count(p, "{n}") != 1 {
		return nil, fmt.Errorf("pattern %q: must contain {n} once (the file counter)", p)
	}
	var re strings.Builder
	re.WriteByte('^')
	rest := p
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		re.WriteString(regexp.QuoteMeta(rest[:i]))
		rest = rest[i:]
		switch {
		case strings.HasPrefix(rest, "{n}"):
			re.WriteString(`(\d+)`)
			rest = rest[3:]
		case strings.HasPrefix(rest, "{time}"):
			re.WriteString(`\d{8}T\d{6}Z`)
			rest = rest[6:]
		default:
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				j = len(rest) - 1
			}
			return nil, fmt.Errorf("pattern %q: unknown placeholder %s (use {n} and {time})", p, rest[:j+1])
		}
	}
	re.WriteByte('$')
	if name := fileName(p, 1, time.Time{}); name == "." || name == ".." || strings.TrimSpace(name) != name {
		return nil, fmt.Errorf("pattern %q: not a usable file name", p)
	}
	return regexp.MustCompile(re.String()), nil
}

func fileName(pattern string, n int, t time.Time) string {
	return strings.NewReplacer("{n}", fmt.Sprintf("%06d", n), "{time}", t.UTC().Format(timeLayout)).Replace(pattern)
}

// checkDir creates dir if needed and proves it writable.
func checkDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".auditsink-probe-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	name := f.Name()
	_ = f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	return nil
}

// Spec is the sink's registration: an observer of Config.Triggers (or of
// every trigger). Give it to plugins.Start, or plugins.Local, which starts
// observers the same way.
func (s *Sink) Spec() plugins.Spec {
	return plugins.Spec{
		Name: s.cfg.Name, Version: s.cfg.Version, Mode: plugins.Observer,
		Triggers: slices.Clone(s.cfg.Triggers), DeliverNew: s.cfg.FromNow, Plugin: s,
	}
}

// ListFiles returns the paths of the files in dir that pattern names, by
// their counter, oldest first.
func ListFiles(dir, pattern string) ([]string, error) {
	re, err := compilePattern(pattern)
	if err != nil {
		return nil, err
	}
	files, _, err := list(dir, re)
	return files, err
}

// list returns the files re matches in dir by counter, and the highest
// counter (0 when none).
func list(dir string, re *regexp.Regexp) ([]string, int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", dir, err)
	}
	type file struct {
		n    int
		name string
	}
	var fs []file
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		fs = append(fs, file{n, e.Name()})
	}
	slices.SortFunc(fs, func(a, b file) int {
		if a.n != b.n {
			return a.n - b.n
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = filepath.Join(dir, f.name)
	}
	top := 0
	if len(fs) > 0 {
		top = fs[len(fs)-1].n
	}
	return out, top, nil
}

// Start recovers from the files of a previous run: it cuts off a line that
// was left half-written, and reads the ids of the last lines written so
// that a fact delivered again is not written twice. The first fact opens a
// new file.
func (s *Sink) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recover()
}

// recover is Start's work. Call with s.mu held.
func (s *Sink) recover() error {
	files, top, err := list(s.cfg.Dir, s.pattern)
	if err != nil {
		return err
	}
	s.next = top + 1
	if len(files) == 0 {
		s.started = true
		return nil
	}
	if err := repairTail(files[len(files)-1]); err != nil {
		return err
	}
	// The ids of the last lines, newest files first.
	var ids []string
	for i := len(files) - 1; i >= 0 && len(ids) < DedupWindow; i-- {
		got, err := readIDs(files[i])
		if err != nil {
			return err
		}
		if skip := len(got) + len(ids) - DedupWindow; skip > 0 {
			got = got[skip:]
		}
		ids = append(got, ids...)
	}
	for _, id := range ids {
		s.remember(id)
	}
	s.started = true
	s.log.Info("audit sink started", "files", len(files), "remembered", len(ids), "next", s.next)
	return nil
}

// repairTail cuts a half-written last line off path.
func repairTail(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	// Look back for the last newline, a block at a time.
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		start := max(end-int64(len(buf)), 0)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			keep := start + int64(i) + 1
			if keep == size {
				return nil
			}
			return truncate(f, path, keep)
		}
		end = start
	}
	return truncate(f, path, 0)
}

func truncate(f *os.File, path string, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cutting the half-written line off %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return nil
}

// readIDs returns the ce-ids of path's lines, in order.
func readIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	var ids []string
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: read the rest of it.
			rest, err2 := r.ReadBytes('\n')
			line = append(slices.Clone(line), rest...)
			err = err2
			if len(line) > maxLine {
				return nil, fmt.Errorf("reading %s: a line of %d bytes", path, len(line))
			}
		}
		if len(bytes.TrimSpace(line)) > 0 {
			var l struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(line, &l) == nil && l.ID != "" {
				ids = append(ids, l.ID)
			}
		}
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
}

func (s *Sink) remember(id string) {
	if len(s.ring) < DedupWindow {
		s.ring = append(s.ring, id)
	} else {
		delete(s.seen, s.ring[s.ringPos])
		s.ring[s.ringPos] = id
		s.ringPos = (s.ringPos + 1) % DedupWindow
	}
	s.seen[id] = true
}

// Trigger writes one fact.
func (s *Sink) Trigger(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
	line, err := EncodeAt(&c.Event, c.Seq, c.Index)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		if err := s.recover(); err != nil {
			return nil, err
		}
	}
	if s.seen[c.Event.ID] {
		s.log.DebugContext(ctx, "fact already written", "id", c.Event.ID, "seq", c.Seq)
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}
	now := s.cfg.Now()
	if s.f != nil && ((s.size > 0 && s.size+int64(len(line)) > s.cfg.MaxSize) ||
		(s.cfg.MaxAge > 0 && now.Sub(s.opened) >= s.cfg.MaxAge)) {
		if err := s.closeFile(); err != nil {
			return nil, err
		}
	}
	if s.f == nil {
		if err := s.openFile(now); err != nil {
			return nil, err
		}
	}
	if _, err := s.f.Write(line); err != nil {
		// Leave no half line behind: the fact is written again on retry.
		_ = s.f.Truncate(s.size)
		return nil, fmt.Errorf("writing %s: %w", s.path, err)
	}
	if s.cfg.Sync {
		if err := s.f.Sync(); err != nil {
			_ = s.f.Truncate(s.size)
			return nil, fmt.Errorf("syncing %s: %w", s.path, err)
		}
	}
	s.size += int64(len(line))
	s.remember(c.Event.ID)
	return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
}

// openFile opens the next file. Call with s.mu held.
func (s *Sink) openFile(now time.Time) error {
	for range 100 {
		path := filepath.Join(s.cfg.Dir, fileName(s.cfg.Pattern, s.next, now))
		s.next++
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640) //nolint:gosec // G302: audit files are for the owner's group to read too (auditors, log shippers), as audit logs are; no one else
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("opening audit file: %w", err)
		}
		// Make the new name durable before lines are acknowledged in it.
		if err := syncDir(s.cfg.Dir); err != nil {
			_ = f.Close()
			return err
		}
		s.f, s.path, s.size, s.opened = f, path, 0, now
		s.log.Debug("audit file opened", "file", path)
		return nil
	}
	return fmt.Errorf("opening audit file in %s: every name tried exists", s.cfg.Dir)
}

// closeFile fsyncs and closes the current file. Call with s.mu held.
func (s *Sink) closeFile() error {
	if s.f == nil {
		return nil
	}
	f, path := s.f, s.path
	s.f = nil
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	s.log.Debug("audit file closed", "file", path, "bytes", s.size)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// Stop fsyncs and closes the current file.
func (s *Sink) Stop(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeFile()
}

// Encode returns the line of an event: the CloudEvent in the JSON event
// format, its extension attributes as strings, streamseq (when seq > 0),
// and a newline. The event must be a valid CloudEvent.
func Encode(ev *events.Event, seq uint64) ([]byte, error) { return EncodeAt(ev, seq, 0) }

// EncodeAt is Encode of a fact at index in the phase message at seq (see
// ExtStreamIndex); index 0 writes no streamindex.
func EncodeAt(ev *events.Event, seq uint64, index int) ([]byte, error) {
	c := cejson.Attributes(ev, seq)
	if index > 0 {
		c.SetExtension(ExtStreamIndex, strconv.Itoa(index))
	}
	if len(ev.Data) > 0 {
		data := ev.Data
		// JSON data goes in as is, on one line; anything else as base64
		// rather than break the line.
		if mt, _ := c.Context.GetDataMediaType(); mt == "" || mt == events.ContentTypeJSON {
			switch {
			case !json.Valid(data):
				c.DataBase64 = true
			case bytes.ContainsAny(data, "\r\n"):
				var buf bytes.Buffer
				_ = json.Compact(&buf, data) // valid, so it compacts
				data = buf.Bytes()
			}
		}
		c.DataEncoded = data
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("event %q (seq %d) is not a valid CloudEvent: %w", ev.ID, seq, err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", ev.ID, err)
	}
	return append(b, '\n'), nil
}
