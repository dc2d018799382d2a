package executor

import (
	"context"

	"github.com/qtasks/qtasks-go/events"
)

// SetChainHook has app call h before (when 0) and after (when 1) it submits
// a chain's next step; h returning ErrChainCrash stops the handling there,
// as if the process died: the final fact stays unacknowledged.
func SetChainHook(app *App, h func(when int, t events.Task) error) { app.flow.hook = h }

// ErrChainCrash is what a chain hook returns to simulate a crash.
var ErrChainCrash = errChainCrash

// TakeSlotAndCrash takes a slot of l for holder and stops renewing it
// without freeing it, as a worker that dies leaves it.
func TakeSlotAndCrash(ctx context.Context, app *App, l Limit, holder string) error {
	if l.Lease == 0 {
		l.Lease = DefaultLimitLease
	}
	s, _, err := app.takeSlot(ctx, l, holder)
	if err != nil {
		return err
	}
	close(s.stop)
	<-s.done
	return nil
}

// TakeStart takes a start of l's rate, as a task run would.
func TakeStart(ctx context.Context, app *App, l Limit) error {
	if l.Burst == 0 {
		l.Burst = 1
	}
	_, err := app.takeStart(ctx, l)
	return err
}
