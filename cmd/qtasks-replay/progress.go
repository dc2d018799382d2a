package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress is the progress line of rebuild and plugin, on stderr, or
// nothing. Its rate is the work done over the time since it was made,
// before the work started: the summary's rate, measured over the same
// work. (The progress bar library it replaces started its clock at the
// first batch, already holding a whole batch, and showed rates a thousand
// times the summary's; its rate was a rolling average, and it ended its
// line when the count first reached the total, so that a later update
// printed over the summary's line.) finish draws the line at 100% of what
// was done and ends it, so that the summary starts on a fresh line.
type progress struct {
	mu         sync.Mutex
	w          io.Writer // nil: no progress line
	what, unit string
	start      time.Time
	last       time.Time // of the last drawing
	width      int       // of the last drawing, to clear it
}

// throttle is how often the line is redrawn at most.
const throttle = 100 * time.Millisecond

// newProgress starts a progress line describing what, counting unit, when
// on.
func newProgress(w io.Writer, on bool, what, unit string) *progress {
	p := &progress{what: what, unit: unit, start: time.Now()}
	if on {
		p.w = w
	}
	return p
}

// set shows done of total (total 0 or less: not known yet).
func (p *progress) set(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil || time.Since(p.last) < throttle {
		return
	}
	p.draw(done, total)
}

// finish shows done as all there was, and ends the line.
func (p *progress) finish(done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	p.draw(done, done)
	fmt.Fprintln(p.w)
	p.w = nil
}

// abort ends the line where it is, for a failure.
func (p *progress) abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w != nil && p.width > 0 {
		fmt.Fprintln(p.w)
	}
	p.w = nil
}

// barWidth is the width of the bar between its brackets.
const barWidth = 30

func (p *progress) draw(done, total int64) {
	p.last = time.Now()
	rate := 0.0
	if s := time.Since(p.start).Seconds(); s > 0 {
		rate = float64(done) / s
	}
	var line string
	if total > 0 {
		frac := min(float64(done)/float64(total), 1)
		fill := int(frac * barWidth)
		line = fmt.Sprintf("%s %3.0f%% [%s%s] (%d/%d, %.0f %s/s)", p.what, frac*100,
			strings.Repeat("=", fill), strings.Repeat(" ", barWidth-fill), done, total, rate, p.unit)
	} else {
		line = fmt.Sprintf("%s (%d, %.0f %s/s)", p.what, done, rate, p.unit)
	}
	pad := max(p.width-len(line), 0)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	p.width = len(line)
}
