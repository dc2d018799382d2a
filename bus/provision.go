package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// EventSubjects are the subjects the event log captures.
var EventSubjects = []string{
	events.SubjectTrigger + ".>",
	events.PhaseSubjects, // a phase's packed facts (issue #15, design (f))
	events.SubjectInvoke + ".>",
	events.SubjectPatch + ".>",
	events.SubjectDead + ".>",
	events.SubjectAlert + ".>",
	events.SealSubjects, // qtasksd's seals (Sealer); no plugin may write there
	events.SubjectOperator + ".>",
	events.SubjectDuplicate + ".>", // executors' duplicate decisions (#14)
	events.SubjectSchedule + ".>",  // schedules and their ticks (schedule.go)
	events.SubjectState + ".>",     // state writes (bus/flow.go); no plugin may write there
	events.SubjectChain + ".>",     // chain starts, steps and ends; no plugin may write there
	events.SubjectLimit + ".>",     // runs held back by cluster-wide limits; no plugin may write there
}

// taskMarkerTTL is how long the task bucket keeps the marker of an expired
// record.
const taskMarkerTTL = time.Minute

func (b *Bus) provision(ctx context.Context) error {
	var err error
	b.events, err = b.ensureStream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "qtasks event log: trigger facts, plugin invocations and patches",
		Subjects:    EventSubjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		MaxAge:      b.cfg.MaxAge,
		MaxBytes:    b.cfg.MaxBytes,
		Duplicates:  DefaultDuplicateWindow,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return err
	}
	b.tasks, err = b.ensureStream(ctx, jetstream.StreamConfig{
		Name:        StreamTasks,
		Description: "qtasks tasks waiting for a worker",
		// Delayed tasks wait on their own subjects as scheduled messages
		// (events.SubjectDelay), which the server moves to the run
		// subject when due; message schedules need rollups allowed.
		Subjects:          []string{events.SubjectRun + ".>", events.SubjectDelay + ".>"},
		AllowMsgSchedules: true,
		AllowRollup:       true,
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          b.cfg.Replicas,
		// The server stores an unset limit as -1; say so, or ensureStream
		// sees a difference and updates the stream on every start.
		MaxBytes:   -1,
		Duplicates: DefaultDuplicateWindow,
	})
	if err != nil {
		return err
	}
	kv := func(name, desc string, history uint8, markerTTL time.Duration) (jetstream.KeyValue, error) {
		k, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         name,
			Description:    desc,
			History:        history,
			Storage:        jetstream.FileStorage,
			Replicas:       b.cfg.Replicas,
			LimitMarkerTTL: markerTTL,
		})
		if err != nil {
			return nil, fmt.Errorf("provisioning bucket %s: %w", name, err)
		}
		return k, nil
	}
	// Per-message TTLs (the expiry of finished records) need the bucket
	// to allow them, which nats.go turns on with limit markers: a watcher
	// then sees an expired record as deleted.
	var markerTTL time.Duration
	if b.cfg.FinishedTaskTTL > 0 {
		markerTTL = taskMarkerTTL
	}
	b.taskKV, err = kv(BucketTasks, "qtasks current task records", 1, markerTTL)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		b.log.WarnContext(ctx, "the server has no per-message TTLs: finished task records are kept forever")
		b.cfg.FinishedTaskTTL = -1
		b.taskKV, err = kv(BucketTasks, "qtasks current task records", 1, 0)
	}
	if err != nil {
		return err
	}
	if b.plugKV, err = kv(BucketPlugins, "qtasks plugin registry", 5, 0); err != nil {
		return err
	}
	if b.stKV, err = kv(BucketPluginState, "qtasks per-plugin state", 1, 0); err != nil {
		return err
	}
	if b.ctlKV, err = kv(BucketControl, "qtasks operator controls: cancelled attempts, paused queues", 1, 0); err != nil {
		return err
	}
	if b.schKV, err = kv(BucketSchedules, "qtasks periodic schedules and their last ticks", 1, 0); err != nil {
		return err
	}
	if err := b.provisionFlow(ctx, kv); err != nil {
		return err
	}
	for _, name := range []string{BucketPlugins, BucketPluginState, BucketState} {
		if err := b.denyRollup(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// denyRollup makes bucket's stream refuse Nats-Rollup headers. A write to
// one's own key with "Nats-Rollup: all" would otherwise delete every other
// key of the bucket: other plugins' state, or the whole registry. KV Purge
// is a rollup too: qtasks deletes keys instead. nats.go creates (and, on
// every CreateOrUpdateKeyValue, resets) buckets with rollups allowed, so
// this runs on every start, which also mends a bucket provisioned by an
// older version.
func (b *Bus) denyRollup(ctx context.Context, bucket string) error {
	s, err := b.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("looking up bucket %s: %w", bucket, err)
	}
	cfg := s.CachedInfo().Config
	if !cfg.AllowRollup {
		return nil
	}
	cfg.AllowRollup = false
	if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("denying rollups on bucket %s: %w", bucket, err)
	}
	return nil
}

// ensureStream creates the stream, or updates it when its configuration
// differs, so that a second start on the same data changes nothing.
func (b *Bus) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := b.js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = b.js.CreateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("creating stream %s: %w", cfg.Name, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	have := s.CachedInfo().Config
	if have.Retention != cfg.Retention {
		return nil, fmt.Errorf("stream %s exists with retention %s, want %s: refusing to change it", cfg.Name, have.Retention, cfg.Retention)
	}
	if !sameSubjects(have.Subjects, cfg.Subjects) || have.MaxAge != cfg.MaxAge || have.MaxBytes != cfg.MaxBytes || have.Duplicates != cfg.Duplicates ||
		cfg.AllowMsgSchedules && !have.AllowMsgSchedules {
		s, err = b.js.UpdateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("updating stream %s: %w", cfg.Name, err)
		}
	}
	return s, nil
}

func sameSubjects(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
