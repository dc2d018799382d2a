package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/projections"
)

func (m *Main) rebuild(ctx context.Context, args []string) error {
	var c common
	var conn connFlags
	var quiet bool
	var cfg projections.BuildConfig
	fs := newFlagSet("qtasks-replay rebuild", m.Stderr, "qtasks-replay rebuild [--db PATH] [--nats-url URL] [--quiet] [--json]")
	c.register(fs, true)
	conn.register(fs)
	fs.BoolVar(&quiet, "quiet", false, "no progress bar")
	fs.Uint64Var(&cfg.To, "to", 0, "last stream sequence to apply (default: the log's end when the rebuild starts)")
	fs.IntVar(&cfg.BatchSize, "batch", projections.DefaultBatchSize, "events per transaction")
	pos, err := parse(fs, args, "qtasks-replay rebuild --db "+projections.DefaultPath)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: "qtasks-replay rebuild --db PATH"}
	}
	if err := checkProjection(ctx, c.db); err != nil {
		return err
	}
	if cfg.BatchSize <= 0 {
		return &usageError{Msg: "--batch must be positive", Hint: "qtasks-replay rebuild --batch 500"}
	}
	log, err := c.logger(m.Stderr)
	if err != nil {
		return err
	}
	b, err := conn.open(ctx, log)
	if err != nil {
		return err
	}
	defer b.Close()
	cfg.Logger = log
	// The bar counts messages from the log's first sequence, which is not
	// 1 once limits have removed old messages.
	info, err := b.EventStream().Info(ctx)
	if err != nil {
		return err
	}
	base := max(info.State.FirstSeq, 1) - 1
	bar := newProgress(m.Stderr, !quiet, "rebuilding", "events")
	cfg.Progress = func(applied, to uint64) {
		bar.set(int64(applied-base), int64(to-base)) //nolint:gosec // G115: sequences are far below 2^63
	}
	st, err := projections.Rebuild(ctx, b, c.db, &cfg)
	if err == nil {
		bar.finish(int64(st.Events))
	} else {
		bar.abort()
	}
	if err != nil && ctx.Err() != nil {
		// The error names the half-built file, which is gone: say what the
		// operator wants to know, that the live projection is intact.
		return fmt.Errorf("rebuild stopped (%w); %s is unchanged", context.Cause(ctx), c.db)
	}
	if err != nil {
		return err
	}
	rate := 0.0
	if s := st.Duration.Seconds(); s > 0 {
		rate = float64(st.Events) / s
	}
	if c.json {
		return writeJSON(m.Stdout, map[string]any{
			"db": c.db, "file": st.Path, "events": st.Events, "rejected": st.Rejected, "last_seq": st.LastSeq,
			"seconds": st.Duration.Seconds(), "events_per_second": rate,
		})
	}
	fmt.Fprintf(m.Stdout, "rebuilt %s: %d events (%d rejected) up to sequence %d in %s, %.0f events/s\n",
		c.db, st.Events, st.Rejected, st.LastSeq, st.Duration.Round(time.Millisecond), rate)
	return nil
}

func (m *Main) project(ctx context.Context, args []string) error {
	var c common
	var conn connFlags
	var once bool
	var cfg projections.ProjectorConfig
	fs := newFlagSet("qtasks-replay project", m.Stderr, "qtasks-replay project [--db PATH] [--nats-url URL] [--once]")
	c.register(fs, false)
	conn.register(fs)
	fs.BoolVar(&once, "once", false, "catch up with the log's end, then exit")
	fs.StringVar(&cfg.Durable, "durable", "", "consumer name (default: derived from host and database path)")
	fs.IntVar(&cfg.BatchSize, "batch", projections.DefaultBatchSize, "events per transaction, at most")
	fs.DurationVar(&cfg.BatchWait, "batch-wait", projections.DefaultBatchWait, "how long a batch waits to fill up")
	pos, err := parse(fs, args, "qtasks-replay project --db "+projections.DefaultPath)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[0]), Hint: "qtasks-replay project --db PATH"}
	}
	// The projector would take 0 or less for its default in silence; on a
	// command line that is a mistake, as it is for rebuild.
	if cfg.BatchSize <= 0 {
		return &usageError{Msg: fmt.Sprintf("--batch %d: must be positive", cfg.BatchSize), Hint: "qtasks-replay project --batch 500"}
	}
	if cfg.BatchWait <= 0 {
		return &usageError{Msg: fmt.Sprintf("--batch-wait %v: must be positive", cfg.BatchWait), Hint: "qtasks-replay project --batch-wait 50ms"}
	}
	if err := checkProjection(ctx, c.db); err != nil {
		return err
	}
	log, err := c.logger(m.Stderr)
	if err != nil {
		return err
	}
	b, err := conn.open(ctx, log)
	if err != nil {
		return err
	}
	defer b.Close()
	cfg.Path, cfg.Logger = c.db, log
	p, err := projections.NewProjector(b, cfg)
	if err != nil {
		return &usageError{Msg: err.Error(), Hint: "qtasks-replay project -h"}
	}
	if err := p.Start(ctx); err != nil {
		if errors.Is(err, projections.ErrSchemaTooNew) {
			return &exitError{Code: ExitNoDB, Err: err}
		}
		return err
	}
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return p.Stop(sctx)
	}
	if once {
		if err := p.CatchUp(ctx); err != nil {
			return errors.Join(err, stop())
		}
		if err := stop(); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "projected %s up to sequence %d\n", c.db, p.LastSeq())
		return nil
	}
	select {
	case <-ctx.Done():
	case <-p.Stopped():
	}
	return stop()
}
