package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins/internal/cejson"
)

// ExtStreamSeq is the extension attribute holding an exported event's
// stream sequence.
const ExtStreamSeq = cejson.ExtStreamSeq

// maxLine bounds one line of an export file: a 900 KiB payload written as
// an escaped JSON string, and its attributes.
const maxLine = 8 << 20

// Encoder writes records in the export format (see the package
// documentation). Call Flush when done.
type Encoder struct {
	w *bufio.Writer
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: bufio.NewWriterSize(w, 64<<10)} }

// Encode writes r's invocation, then its patch if one was recorded.
func (e *Encoder) Encode(r Record) error {
	if err := e.event(&r.Invocation, r.Seq); err != nil {
		return err
	}
	if r.Patch != nil {
		return e.event(r.Patch, r.PatchSeq)
	}
	return nil
}

func (e *Encoder) event(ev *events.Event, seq uint64) error {
	c, err := toCloudEvent(ev, seq)
	if err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding event %s: %w", ev.ID, err)
	}
	if _, err := e.w.Write(b); err != nil {
		return fmt.Errorf("writing event %s: %w", ev.ID, err)
	}
	if err := e.w.WriteByte('\n'); err != nil {
		return fmt.Errorf("writing event %s: %w", ev.ID, err)
	}
	return nil
}

// Flush writes buffered lines.
func (e *Encoder) Flush() error {
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("writing export: %w", err)
	}
	return nil
}

// toCloudEvent converts an event to the SDK's form: the attributes of the
// NATS binding's headers, one for one.
func toCloudEvent(ev *events.Event, seq uint64) (ce.Event, error) {
	c := cejson.Attributes(ev, seq)
	if len(ev.Data) > 0 {
		c.DataEncoded = ev.Data
		// The SDK writes application/json data as is: data that is not
		// JSON goes as base64 rather than break the line.
		if mt, _ := c.Context.GetDataMediaType(); (mt == "" || mt == events.ContentTypeJSON) && !json.Valid(ev.Data) {
			c.DataBase64 = true
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("event %s is not a valid CloudEvent: %w", ev.ID, err)
	}
	return c, nil
}

// fromCloudEvent converts back and validates as events.Decode does.
func fromCloudEvent(c *ce.Event) (events.Event, uint64, error) {
	h := events.Headers{}
	// The JSON format holds values as they are; headers hold them
	// percent-encoded, as events.Decode reads them.
	set := func(k, v string) {
		if v != "" {
			h[events.HeaderPrefix+k] = []string{events.EncodeHeaderValue(v)}
		}
	}
	set("specversion", c.SpecVersion())
	set("id", c.ID())
	set("source", c.Source())
	set("type", c.Type())
	set("subject", c.Subject())
	if t := c.Time(); !t.IsZero() {
		set("time", t.UTC().Format(time.RFC3339Nano))
	}
	if ct := c.DataContentType(); ct != "" {
		h[events.HeaderContentType] = []string{ct}
	}
	var seq uint64
	for k, v := range c.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		if k == ExtStreamSeq {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return events.Event{}, 0, fmt.Errorf("%w: %s %q", events.ErrInvalidEvent, ExtStreamSeq, s)
			}
			seq = n
			continue
		}
		set(k, s)
	}
	ev, err := events.Decode(h, c.Data())
	return ev, seq, err
}

// Decoder reads records written in the export format.
type Decoder struct {
	r       *bufio.Reader
	line    int
	pending *Record // an invocation whose patch may be on the next line
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: bufio.NewReaderSize(r, 64<<10)} }

// Next returns the next record, or io.EOF after the last one.
func (d *Decoder) Next() (Record, error) {
	for {
		ev, seq, err := d.event()
		if errors.Is(err, io.EOF) {
			if d.pending != nil {
				r := *d.pending
				d.pending = nil
				return r, nil
			}
			return Record{}, io.EOF
		}
		if err != nil {
			return Record{}, err
		}
		switch ev.Type {
		case events.TypeInvokePrefix + ev.Trigger:
			next := &Record{Seq: seq, Invocation: ev}
			if d.pending != nil {
				r := *d.pending
				d.pending = next
				return r, nil
			}
			d.pending = next
		case events.TypePatch:
			if d.pending == nil || d.pending.Invocation.ID != ev.Invocation {
				return Record{}, fmt.Errorf("line %d: patch %s does not follow invocation %s", d.line, ev.ID, ev.Invocation)
			}
			r := *d.pending
			d.pending = nil
			r.Patch, r.PatchSeq = &ev, seq
			return r, nil
		default:
			return Record{}, fmt.Errorf("line %d: event %s of type %q is neither an invocation nor a patch", d.line, ev.ID, ev.Type)
		}
	}
}

func (d *Decoder) event() (events.Event, uint64, error) {
	for {
		line, err := d.r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return events.Event{}, 0, io.EOF
			}
			return events.Event{}, 0, fmt.Errorf("reading export: %w", err)
		}
		d.line++
		if len(line) > maxLine {
			return events.Event{}, 0, fmt.Errorf("line %d: %d bytes, at most %d", d.line, len(line), maxLine)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var c ce.Event
		if err := json.Unmarshal(line, &c); err != nil {
			return events.Event{}, 0, fmt.Errorf("line %d: not a CloudEvent: %w", d.line, err)
		}
		ev, seq, err := fromCloudEvent(&c)
		if err != nil {
			return events.Event{}, 0, fmt.Errorf("line %d: %w", d.line, err)
		}
		return ev, seq, nil
	}
}

// Export writes the recorded invocations of plugin that f selects, each
// with its recorded patch, to w in the export format, and returns how many
// invocations it wrote. It streams.
func Export(ctx context.Context, b *bus.Bus, w io.Writer, plugin string, f Filter) (int, error) {
	enc := NewEncoder(w)
	n := 0
	err := Read(ctx, b, plugin, f, func(r Record) error {
		n++
		return enc.Encode(r)
	})
	if ferr := enc.Flush(); err == nil {
		err = ferr
	}
	return n, err
}

// fileSource replays records from an export file.
type fileSource struct {
	d     *Decoder
	first *Record
	f     Filter
	match *logSource // for its filter; never reads the log
}

func newFileSource(r io.Reader, f Filter) (*fileSource, string, error) {
	if f.Last > 0 {
		return nil, "", errors.New("Filter.Last is not supported when replaying a file: export with it instead")
	}
	d := NewDecoder(r)
	first, err := d.Next()
	if errors.Is(err, io.EOF) {
		return &fileSource{d: d, f: f}, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	name := first.Invocation.Plugin
	m, err := newLogSource(nil, name, f)
	if err != nil {
		return nil, "", err
	}
	return &fileSource{d: d, first: &first, f: f, match: m}, name, nil
}

func (s *fileSource) each(ctx context.Context, fn func(Record) error, _ func(uint64, error)) error {
	if s.first == nil {
		return nil
	}
	r := *s.first
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if r.Invocation.Plugin != s.match.plugin {
			return fmt.Errorf("export holds invocations of %s and %s: one plugin per file", s.match.plugin, r.Invocation.Plugin)
		}
		keep, err := s.match.keep(ctx, &r.Invocation, r.Seq)
		if err != nil {
			return err
		}
		if keep {
			if err := fn(r); err != nil {
				return err
			}
		}
		r, err = s.d.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *fileSource) total(context.Context) int { return 0 }
