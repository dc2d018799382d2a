package executor

import "github.com/qtasks/qtasks-go/events"

// SetChainHook has app call h before (when 0) and after (when 1) it submits
// a chain's next step; h returning ErrChainCrash stops the handling there,
// as if the process died: the final fact stays unacknowledged.
func SetChainHook(app *App, h func(when int, t events.Task) error) { app.flow.hook = h }

// ErrChainCrash is what a chain hook returns to simulate a crash.
var ErrChainCrash = errChainCrash
