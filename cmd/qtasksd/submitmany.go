package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// Limits of a batch over HTTP (POST /tasks). A batch is at most
// maxBatchEntries submissions in a body of at most maxBatchBody bytes
// (each entry's arguments are bounded by events.MaxPayloadSize as alone).
const (
	maxBatchEntries = 10_000
	maxBatchBody    = 64 << 20
)

// batchEntry is one submission of a batch, as a line of `qtasksd
// submit-many`'s NDJSON and an element of POST /tasks's array.
type batchEntry struct {
	Name       string          `json:"name"`
	Kw         json.RawMessage `json:"kw,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
	Key        string          `json:"key,omitempty"`
	Queue      string          `json:"queue,omitempty"`
	Priority   *int            `json:"priority,omitempty"`
	Tags       []string        `json:"tags,omitempty"`
	Unique     *uniqueEntry    `json:"unique,omitempty"`
	OnConflict string          `json:"on_conflict,omitempty"`
}

// uniqueEntry is executor.UniqueOpts in a batch entry: "by" lists "args"
// and "queue", "period" is a Go duration.
type uniqueEntry struct {
	By     []string `json:"by,omitempty"`
	Period string   `json:"period,omitempty"`
}

// request checks e and makes its submission; the error blames the entry
// (wrapping executor.ErrInvalidInput).
func (e *batchEntry) request() (executor.SubmitRequest, error) {
	bad := func(format string, a ...any) (executor.SubmitRequest, error) {
		return executor.SubmitRequest{}, fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), executor.ErrInvalidInput)
	}
	if e.Name == "" {
		return bad("no task name (\"name\")")
	}
	o := &executor.SubmitOptions{IdempotencyKey: e.Key, Queue: e.Queue, Priority: e.Priority, Tags: e.Tags}
	var kw map[string]any
	if len(e.Kw) > 0 && string(e.Kw) != "null" {
		if err := json.Unmarshal(e.Kw, &kw); err != nil {
			return bad("kw must be a JSON object: %v", err)
		}
	}
	if len(e.Args) > 0 && string(e.Args) != "null" {
		if err := json.Unmarshal(e.Args, &o.Args); err != nil {
			return bad("args must be a JSON array: %v", err)
		}
	}
	if e.Unique != nil {
		u, err := parseUnique(strings.Join(e.Unique.By, ","), e.Unique.Period, true)
		if err != nil {
			return executor.SubmitRequest{}, err
		}
		o.Unique = u
	}
	var err error
	if o.AllowKeyConflict, err = parseOnConflict(e.OnConflict); err != nil {
		return executor.SubmitRequest{}, err
	}
	return executor.SubmitRequest{Name: e.Name, Input: kw, Options: o}, nil
}

// parseUnique reads unique options: by lists "args" and "queue" (comma
// separated), period a Go duration; set says they were given (an empty
// by alone is "unique by name").
func parseUnique(by, period string, set bool) (*executor.UniqueOpts, error) {
	if !set {
		return nil, nil //nolint:nilnil // not unique: SubmitOptions.Unique's nil
	}
	u := &executor.UniqueOpts{}
	for p := range strings.SplitSeq(by, ",") {
		switch strings.TrimSpace(p) {
		case "":
		case "args":
			u.ByArgs = true
		case "queue":
			u.ByQueue = true
		default:
			return nil, fmt.Errorf("unique by %q: want args, queue or both: %w", p, executor.ErrInvalidInput)
		}
	}
	if period != "" {
		d, err := time.ParseDuration(period)
		if err != nil || d < executor.MinUniquePeriod {
			return nil, fmt.Errorf("unique period %q: want a duration of at least %v, such as 1h: %w", period, executor.MinUniquePeriod, executor.ErrInvalidInput)
		}
		u.ByPeriod = d
	}
	if !u.ByArgs && !u.ByQueue && u.ByPeriod == 0 {
		return nil, fmt.Errorf("unique: give args, queue or a period: %w", executor.ErrInvalidInput)
	}
	return u, nil
}

// parseOnConflict reads what to do with a key given with other arguments:
// "error" (the default: refused, 409) or "existing" (answered with the
// existing task, a duplicate).
func parseOnConflict(s string) (allow bool, err error) {
	switch s {
	case "", "error":
		return false, nil
	case "existing":
		return true, nil
	}
	return false, fmt.Errorf("on_conflict %q: want error or existing: %w", s, executor.ErrInvalidInput)
}

// batchResult is the answer for one entry of a batch: its HTTP status as
// if it had been submitted alone (201 created, 200 duplicate, 4xx/5xx the
// error's), the task, and the error.
type batchResult struct {
	Line      int          `json:"line,omitempty"` // submit-many: the input line, from 1
	Status    int          `json:"status"`
	Duplicate bool         `json:"duplicate,omitempty"`
	Task      *events.Task `json:"task,omitempty"`
	Error     string       `json:"error,omitempty"`
	// Outcome is "unknown" for a submission that may be queued: retry it
	// with IdempotencyKey.
	Outcome        string   `json:"outcome,omitempty"`
	IdempotencyKey string   `json:"idempotency_key,omitempty"`
	Differs        []string `json:"differs,omitempty"`
}

// resultOf is the batchResult of r.
func resultOf(r executor.SubmitResult) batchResult {
	if r.Err == nil {
		out := batchResult{Status: http.StatusCreated, Task: &r.Task}
		if r.Duplicate {
			out.Status, out.Duplicate = http.StatusOK, true
		}
		return out
	}
	out := batchResult{Status: submitStatus(r.Err), Error: r.Err.Error()}
	var kc *executor.KeyConflictError
	switch {
	case errors.Is(r.Err, executor.ErrOutcomeUnknown):
		out.Outcome, out.IdempotencyKey = "unknown", r.Task.IdempotencyKey
		out.Task = &r.Task
	case errors.As(r.Err, &kc):
		out.IdempotencyKey, out.Differs = kc.IdempotencyKey, kc.Differs
		out.Task = &kc.Task
	}
	return out
}

// batchSummary counts a batch's results.
type batchSummary struct {
	Created    int `json:"created"`
	Duplicates int `json:"duplicates"`
	Failed     int `json:"failed"`
	Unknown    int `json:"unknown"` // failed with their outcome unknown
}

func (s *batchSummary) add(r *batchResult) {
	switch r.Status {
	case http.StatusCreated:
		s.Created++
	case http.StatusOK:
		s.Duplicates++
	default:
		s.Failed++
		if r.Outcome == "unknown" {
			s.Unknown++
		}
	}
}

// submitBatch answers POST /tasks: a JSON array of entries, each
// submitted as if alone; 200 with one result per entry, in order, once
// every entry was tried. The request as a whole is refused (4xx, nothing
// submitted) only when its body is not such an array or is over the
// limits.
func submitBatch(app *executor.App) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const none = " (no task was submitted)"
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBatchBody))
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				http.Error(w, fmt.Sprintf("body: more than %d bytes", maxBatchBody)+none, http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "body: "+err.Error()+none, http.StatusBadRequest)
			return
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			http.Error(w, "body must be a JSON array of submissions: "+err.Error()+none, http.StatusBadRequest)
			return
		}
		if len(raw) > maxBatchEntries {
			http.Error(w, fmt.Sprintf("%d submissions, at most %d per request", len(raw), maxBatchEntries)+none, http.StatusRequestEntityTooLarge)
			return
		}
		results, sum := runBatch(r.Context(), app, raw)
		writeJSON(w, http.StatusOK, struct {
			Results []batchResult `json:"results"`
			batchSummary
		}{results, sum})
	}
}

// runBatch decodes and submits entries; an entry that does not decode or
// check fails alone.
func runBatch(ctx context.Context, app *executor.App, raw []json.RawMessage) ([]batchResult, batchSummary) {
	results := make([]batchResult, len(raw))
	reqs := make([]executor.SubmitRequest, 0, len(raw))
	at := make([]int, 0, len(raw))
	for i, b := range raw {
		var e batchEntry
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		err := d.Decode(&e)
		var req executor.SubmitRequest
		if err == nil {
			req, err = e.request()
		} else {
			// The decoding error is said, not wrapped: the entry is bad
			// input (400), whatever a field's decoder returned.
			err = fmt.Errorf("entry is not a submission object: %v: %w", err, executor.ErrInvalidInput) //nolint:errorlint // see above
		}
		if err != nil {
			results[i] = batchResult{Status: submitStatus(err), Error: err.Error()}
			continue
		}
		reqs = append(reqs, req)
		at = append(at, i)
	}
	res, _ := app.SubmitMany(ctx, reqs) // the per-entry errors say it all
	for k, r := range res {
		results[at[k]] = resultOf(r)
	}
	var sum batchSummary
	for i := range results {
		sum.add(&results[i])
	}
	return results, sum
}

// readNDJSON reads the non-empty lines of r, each at most maxLine bytes,
// with their line numbers.
func readNDJSON(r io.Reader, maxLine int) (lines []json.RawMessage, numbers []int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		lines = append(lines, bytes.Clone(l))
		numbers = append(numbers, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading line %d of stdin: %w", len(numbers)+1, err)
	}
	return lines, numbers, nil
}
