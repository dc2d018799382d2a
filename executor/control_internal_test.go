package executor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
)

// The control bucket's watch may deliver a pause after the app applied the
// resume that followed it (Pause, then Resume, through the same app): the
// late pause must not pause the worker again. CI saw a worker paused right
// after Resume returned (TestPauseAppliesToItsOwnWorkerAtOnce).
func TestControlsIgnoreALatePause(t *testing.T) {
	c := newControls("q")
	mark := &bus.Mark{By: "erin", At: time.Now()}
	c.update(bus.ControlUpdate{Pause: "q", Mark: mark, Revision: 7}) // Pause, applied by the app
	c.update(bus.ControlUpdate{Pause: "q", Revision: 8})             // Resume, applied by the app
	c.update(bus.ControlUpdate{Pause: "q", Mark: mark, Revision: 7}) // the watch, late
	paused, _ := c.pausedNow()
	require.False(t, paused, "a late delivery of the older pause paused the worker again")
	c.update(bus.ControlUpdate{Pause: "q", Revision: 8}) // the watch's own delivery of the resume
	c.update(bus.ControlUpdate{Pause: "q", Mark: mark, Revision: 9})
	paused, _ = c.pausedNow()
	require.True(t, paused, "a newer pause applies")
	c.update(bus.ControlUpdate{Pause: "other", Revision: 10})
	paused, _ = c.pausedNow()
	require.True(t, paused, "another queue's resume is not this worker's")
}
