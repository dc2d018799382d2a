package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// decisions reads the duplicate decisions recorded for task id, in log
// order.
func decisions(t *testing.T, b *bus.Bus, id string) []events.DuplicateDecision {
	t.Helper()
	var out []events.DuplicateDecision
	for _, s := range bustest.EventsOf(t, b, id, events.SubjectDuplicate+".>") {
		require.NoError(t, s.Err, "seq %d", s.Seq)
		require.Equal(t, events.TypeDuplicate, s.Event.Type)
		var d events.DuplicateDecision
		require.NoError(t, json.Unmarshal(s.Event.Data, &d))
		out = append(out, d)
	}
	return out
}

// submitOne is SubmitOne with the test's deadline.
func submitOne(t *testing.T, app *executor.App, name string, input any, opts *executor.SubmitOptions) (executor.SubmitResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return app.SubmitOne(ctx, name, input, opts)
}

// A key's first submission is new, a repeat a duplicate of it (recorded in
// the log); the same key with other arguments is a *KeyConflictError that
// queues nothing (recorded too), unless AllowKeyConflict.
func TestIdempotencyKeyDuplicateAndConflict(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	key := &executor.SubmitOptions{IdempotencyKey: "order-7"}

	first, err := submitOne(t, app, "add", map[string]int{"a": 1, "b": 2}, key)
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	require.NotEmpty(t, first.Task.SubmitDigest)

	// The same submission, its kw written in another order: a duplicate.
	again, err := submitOne(t, app, "add", json.RawMessage(`{"b": 2, "a": 1}`), key)
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.Task.ID, again.Task.ID)
	ds := decisions(t, b, first.Task.ID)
	require.Len(t, ds, 1)
	require.Equal(t, events.DecisionDuplicate, ds[0].Decision)
	require.Empty(t, ds[0].Differs)
	require.Equal(t, "order-7", ds[0].IdempotencyKey)

	// Other kw: refused, typed, and nothing else queued.
	_, err = submitOne(t, app, "add", map[string]int{"a": 1, "b": 3}, key)
	var kc *executor.KeyConflictError
	require.ErrorAs(t, err, &kc)
	require.ErrorIs(t, err, executor.ErrKeyConflict)
	require.Equal(t, []string{events.PartKw}, kc.Differs)
	require.Equal(t, first.Task.ID, kc.Task.ID)
	// Another name and queue, same arguments.
	_, err = submitOne(t, app, "sum", map[string]int{"a": 1, "b": 2}, &executor.SubmitOptions{IdempotencyKey: "order-7", Queue: "other"})
	require.ErrorAs(t, err, &kc)
	require.Equal(t, []string{events.PartName, events.PartQueue}, kc.Differs)
	// Positional args count as well.
	_, err = submitOne(t, app, "add", map[string]int{"a": 1, "b": 2}, &executor.SubmitOptions{IdempotencyKey: "order-7", Args: []any{1}})
	require.ErrorAs(t, err, &kc)
	require.Equal(t, []string{events.PartArgs}, kc.Differs)
	// Priority, tags and extra do not.
	prio := 3
	r, err := submitOne(t, app, "add", map[string]int{"a": 1, "b": 2}, &executor.SubmitOptions{IdempotencyKey: "order-7", Priority: &prio, Tags: []string{"x"}})
	require.NoError(t, err)
	require.True(t, r.Duplicate)

	// Allowed: the existing task, as a duplicate, its difference recorded.
	r, err = submitOne(t, app, "add", map[string]int{"a": 1, "b": 3}, &executor.SubmitOptions{IdempotencyKey: "order-7", AllowKeyConflict: true})
	require.NoError(t, err)
	require.True(t, r.Duplicate)
	require.Equal(t, first.Task.ID, r.Task.ID)
	require.JSONEq(t, `{"a":1,"b":2}`, string(r.Task.Kw))

	ds = decisions(t, b, first.Task.ID)
	got := make([]string, 0, len(ds))
	for _, d := range ds {
		got = append(got, d.Decision)
	}
	require.Equal(t, []string{"duplicate", "conflict", "conflict", "conflict", "duplicate", "duplicate"}, got)
	require.Equal(t, []string{events.PartKw}, ds[5].Differs)
	// Only the first submission stored a task: one storage_add fact.
	require.Len(t, facts(t, b, events.StorageAdd, first.Task.ID), 1)
	// Submit, the plain API, refuses the conflict too.
	_, err = app.Submit(context.Background(), "add", map[string]int{"a": 9}, key)
	require.ErrorIs(t, err, executor.ErrKeyConflict)
}

// testClock is a clock a test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Unique options derive the key, as River's: by args, per queue, within a
// period (a test clock moves across the period's boundary).
//
//nolint:tparallel // the subtests share the test clock, which ByPeriod moves: they run in order
func TestUniqueOpts(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Date(2026, 12, 7, 10, 15, 0, 0, time.UTC)}
	b := bustest.Open(t, nil)
	app := newApp(t, b, &executor.Config{Now: clock.Now})
	sub := func(name string, kw map[string]int, queue string, u *executor.UniqueOpts) executor.SubmitResult {
		t.Helper()
		r, err := submitOne(t, app, name, kw, &executor.SubmitOptions{Queue: queue, Unique: u})
		require.NoError(t, err)
		return r
	}

	t.Run("ByArgs", func(t *testing.T) {
		u := &executor.UniqueOpts{ByArgs: true}
		a := sub("u-args", map[string]int{"n": 1}, "", u)
		require.False(t, a.Duplicate)
		require.Contains(t, a.Task.IdempotencyKey, events.UniqueKeyPrefix)
		d := sub("u-args", map[string]int{"n": 1}, "", u)
		require.True(t, d.Duplicate)
		require.Equal(t, a.Task.ID, d.Task.ID)
		// Other args: another task. Another queue, same args: the same one
		// (unique across queues without ByQueue).
		require.False(t, sub("u-args", map[string]int{"n": 2}, "", u).Duplicate)
		q := sub("u-args", map[string]int{"n": 1}, "q2", u)
		require.True(t, q.Duplicate)
		require.Equal(t, a.Task.ID, q.Task.ID)
		ds := decisions(t, b, a.Task.ID)
		require.Len(t, ds, 2)
		require.True(t, ds[0].Unique)
		require.Equal(t, []string{events.PartQueue}, ds[1].Differs, "a unique key leaves the queue out: a duplicate, not a conflict")
	})

	t.Run("ByQueue", func(t *testing.T) {
		u := &executor.UniqueOpts{ByQueue: true}
		a := sub("u-queue", map[string]int{"n": 1}, "q1", u)
		require.False(t, a.Duplicate)
		// Other args, same queue: a duplicate (args are not in the key).
		d := sub("u-queue", map[string]int{"n": 2}, "q1", u)
		require.True(t, d.Duplicate)
		require.JSONEq(t, `{"n":1}`, string(d.Task.Kw))
		// Another queue: another task.
		o := sub("u-queue", map[string]int{"n": 1}, "q2", u)
		require.False(t, o.Duplicate)
		require.NotEqual(t, a.Task.ID, o.Task.ID)
	})

	t.Run("ByPeriod", func(t *testing.T) {
		u := &executor.UniqueOpts{ByArgs: true, ByPeriod: time.Hour}
		clock.set(time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC))
		a := sub("u-period", map[string]int{"n": 1}, "", u)
		require.False(t, a.Duplicate)
		clock.set(time.Date(2026, 12, 7, 11, 59, 59, 999999999, time.UTC))
		require.True(t, sub("u-period", map[string]int{"n": 1}, "", u).Duplicate, "within the hour")
		clock.set(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
		n := sub("u-period", map[string]int{"n": 1}, "", u)
		require.False(t, n.Duplicate, "the next hour")
		require.NotEqual(t, a.Task.ID, n.Task.ID)
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, o := range []*executor.SubmitOptions{
			{Unique: &executor.UniqueOpts{}},
			{Unique: &executor.UniqueOpts{ByPeriod: time.Millisecond}},
			{Unique: &executor.UniqueOpts{ByArgs: true}, IdempotencyKey: "k"},
		} {
			_, err := submitOne(t, app, "u-bad", nil, o)
			require.ErrorIs(t, err, executor.ErrInvalidInput)
		}
	})
}

// Two submissions of one key at once, with different arguments: one is
// created, the other refused as a conflict (never both created, never a
// silent duplicate).
func TestKeyConflictConcurrent(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	// Two apps: the lock of one process does not serialise them, the
	// record's create does.
	apps := []*executor.App{newApp(t, b, nil), newApp(t, bustest.Connect(t, b, nil), nil)}
	var wg sync.WaitGroup
	res := make([]executor.SubmitResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			res[i], errs[i] = submitOne(t, apps[i], "add", map[string]int{"a": i}, &executor.SubmitOptions{IdempotencyKey: "race"})
		})
	}
	wg.Wait()
	created, conflicts := 0, 0
	for i := range 2 {
		switch {
		case errs[i] == nil:
			require.False(t, res[i].Duplicate)
			created++
		case errors.Is(errs[i], executor.ErrKeyConflict):
			conflicts++
		default:
			t.Fatalf("submission %d: %v", i, errs[i])
		}
	}
	require.Equal(t, 1, created)
	require.Equal(t, 1, conflicts)
}
