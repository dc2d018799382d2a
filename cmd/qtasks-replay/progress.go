package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress is the progress bar of rebuild and plugin, on stderr, or
// nothing. Its clock starts when it is made, before the work, and it counts
// the work done since: its rate is the one the summary prints (an earlier
// bar started at the first batch, holding a whole batch, and showed rates
// a thousand times too high). finish leaves it at 100% of what was done, on
// a line of its own, so that the summary that follows starts on a fresh
// line.
type progress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
	max int64
}

// newProgress starts a bar describing what, counting unit, when on.
func newProgress(w io.Writer, on bool, what, unit string) *progress {
	p := &progress{w: w, max: -1}
	if !on {
		return p
	}
	p.bar = progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	p.bar.StartWithoutRender()
	return p
}

// set shows done of total (total 0 or less: not known yet).
func (p *progress) set(done, total int64) {
	if p.bar == nil {
		return
	}
	if total > 0 && total != p.max {
		p.max = total
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
}

// finish shows done as all there was, and ends the bar's line.
func (p *progress) finish(done int64) {
	if p.bar == nil {
		return
	}
	if done > 0 && done != p.max {
		p.max = done
		p.bar.ChangeMax64(done)
	}
	_ = p.bar.Set64(done)
	_ = p.bar.Finish()
}

// abort ends the bar's line where it is, for a failure.
func (p *progress) abort() {
	if p.bar == nil {
		return
	}
	_ = p.bar.Exit()
	fmt.Fprintln(p.w)
}
