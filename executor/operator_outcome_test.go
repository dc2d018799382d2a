package executor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// An operator's pause whose event the log stored but whose acknowledgement
// was lost (the connection cut after the publish, as when a stream leader
// dies) was taken back, and the call answered a plain error: the log said
// ops paused the queue while no worker ever paused, and the answer did not
// say the outcome was unknown. The mark now stays (the log may hold the
// action) and the error says the outcome of the record is unknown.
func TestOperatorActionOutcomeUnknown(t *testing.T) {
	t.Parallel()
	srv := bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b := bustest.Open(t, &bus.Config{URL: p.URL(), PublishTimeout: 2 * time.Second})
	app := newApp(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	p.HoldOn(events.SubjectOperator + ".")
	done := make(chan error, 1)
	go func() {
		// The operator's deadline: the record's acknowledgement never comes.
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		done <- app.Pause(actx, executor.DefaultQueue, executor.Action{By: "ops", Reason: "maintenance"})
	}()
	bustest.WaitFor(t, waitLimit, "the pause stored in the log", func() bool {
		return len(bustest.Events(t, srv, events.SubjectOperator+".>")) == 1
	})
	// The old code took the pause back once the record timed out: wait
	// for that to reach the server, or for the answer.
	var err error
	bustest.WaitFor(t, waitLimit, "the pause taken back, or the answer", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		m, perr := srv.Paused(ctx, executor.DefaultQueue)
		return perr == nil && m == nil
	})
	p.Release() // the answers held since the record (its own is long given up)
	if err == nil {
		err = <-done
	}
	require.Error(t, err)
	require.ErrorContains(t, err, "unknown")

	// The log says ops paused the queue: the queue is paused.
	m, err := srv.Paused(ctx, executor.DefaultQueue)
	require.NoError(t, err)
	require.NotNil(t, m, "the log records a pause that was taken back")
	require.Equal(t, "ops", m.By)
}

// The same for a schedule: added, its record's acknowledgement lost, it was
// deleted again while the log may say it was added.
func TestScheduleAddOutcomeUnknown(t *testing.T) {
	t.Parallel()
	srv := bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b := bustest.Open(t, &bus.Config{URL: p.URL(), PublishTimeout: 2 * time.Second})
	app := newApp(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	p.HoldOn(events.SubjectSchedule + ".")
	done := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := app.AddSchedule(actx, events.Schedule{Name: "nightly", Task: "noop", EveryMS: time.Hour.Milliseconds()}, executor.Action{By: "ops"})
		done <- err
	}()
	bustest.WaitFor(t, waitLimit, "the schedule's record stored in the log", func() bool {
		return len(bustest.Events(t, srv, events.SubjectSchedule+".>")) == 1
	})
	var err error
	bustest.WaitFor(t, waitLimit, "the schedule taken back, or the answer", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		_, gerr := srv.GetSchedule(ctx, "nightly")
		return errors.Is(gerr, bus.ErrScheduleNotFound)
	})
	p.Release()
	if err == nil {
		err = <-done
	}
	require.ErrorContains(t, err, "unknown")
	_, err = srv.GetSchedule(ctx, "nightly")
	require.NoError(t, err, "the log records a schedule that was taken back")
}
