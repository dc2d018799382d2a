package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// verifyOutput is verify's --json document.
type verifyOutput struct {
	Stream     string `json:"stream"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	HeadMayAge bool   `json:"head_may_age"`
	// OK: seals were checked and nothing differs.
	OK bool `json:"ok"`
	// First is the first finding, when there is one.
	First *events.Finding `json:"first,omitempty"`
	events.VerifyReport
}

func (m *Main) verify(ctx context.Context, args []string) error {
	var conn connFlags
	var jsonOut bool
	var logLevel, anchorArg string
	const hint = "qtasks-replay verify [--nats-url URL] [--anchor SEQ:DIGEST] [--json]"
	fs := newFlagSet("qtasks-replay verify", m.Stderr, hint)
	conn.register(fs)
	fs.BoolVar(&jsonOut, "json", false, "print JSON instead of text")
	fs.StringVar(&anchorArg, "anchor", "", "a seal recorded earlier, SEQ:DIGEST (last_seal and last_seal_digest of an earlier verify): it must still be there, unchanged")
	fs.StringVar(&logLevel, "log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
	pos, err := parse(fs, args, hint)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: hint}
	}
	var anchor events.Anchor
	if anchorArg != "" {
		if anchor, err = events.ParseAnchor(anchorArg); err != nil {
			return &usageError{Msg: "--anchor: " + err.Error(), Hint: "qtasks-replay verify --anchor 1240:<64 hex digits>"}
		}
	}
	c := common{logLevel: logLevel}
	log, err := c.logger(m.Stderr)
	if err != nil {
		return err
	}
	b, err := conn.open(ctx, log)
	if err != nil {
		return err
	}
	defer b.Close()
	rep, lim, err := b.VerifyLog(ctx, anchor)
	if err != nil {
		return err
	}
	out := verifyOutput{Stream: bus.StreamEvents, FirstSeq: lim.FirstSeq, LastSeq: lim.LastSeq, HeadMayAge: lim.HeadMayAge(), VerifyReport: rep}
	if len(rep.Findings) > 0 {
		out.First = &rep.Findings[0]
	}
	out.OK = len(rep.Findings) == 0 && (rep.Start != 0 || rep.Messages == 0)
	if jsonOut {
		if err := writeJSON(m.Stdout, out); err != nil {
			return err
		}
	} else {
		m.verifyText(&out)
	}
	switch {
	case len(rep.Findings) > 0:
		f := rep.Findings[0]
		return &exitError{Code: ExitTampered, Err: fmt.Errorf("the event log was tampered with: first at sequence %d (%s)", f.Seq, f.Kind)}
	case rep.Start == 0 && rep.Messages > 0:
		return &exitError{Code: ExitUnproven, Err: errors.New("no seal of the event log could be checked: nothing is proven (is qtasksd sealing? see --seal-interval)")}
	}
	return nil
}

func (m *Main) verifyText(o *verifyOutput) {
	w := m.Stdout
	r := &o.VerifyReport
	fmt.Fprintf(w, "%s: %d messages, sequences %d to %d, %d seals\n", o.Stream, r.Messages, o.FirstSeq, o.LastSeq, r.Seals)
	if r.Start != 0 {
		fmt.Fprintf(w, "proven by the seals: sequences %d to %d\n", r.Start, r.Through)
	}
	if r.Skipped > 0 {
		why := "written before sealing began"
		if o.HeadMayAge {
			why = "before the first seal whose range the stream's limits left whole, or " + why
		}
		fmt.Fprintf(w, "not proven: %d messages before sequence %d (%s)\n", r.Skipped, r.Start, why)
	}
	for _, u := range r.Unverified {
		fmt.Fprintf(w, "not proven: sequences %d to %d (the seal that covered them is gone)\n", u[0], u[1])
	}
	if r.Unsealed > 0 {
		fmt.Fprintf(w, "not proven: %d messages after sequence %d (the next seal will cover them)\n", r.Unsealed, r.Through)
	}
	if r.LastSeal != 0 {
		fmt.Fprintf(w, "anchor: %d:%s (keep it outside the log; --anchor proves later that nothing up to it was truncated or rewritten)\n",
			r.LastSeal, r.LastSealDigest)
	}
	if len(r.Findings) == 0 {
		if r.Start != 0 || r.Messages == 0 {
			fmt.Fprintln(w, "ok: nothing sealed was deleted, altered or inserted")
		}
		return
	}
	fmt.Fprintf(w, "TAMPERED: %d findings, the first at sequence %d\n", len(r.Findings), r.Findings[0].Seq)
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  %d\t%s\t%s (seal at %d)\n", f.Seq, f.Kind, f.Detail, f.Seal)
	}
}
