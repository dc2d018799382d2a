package projections

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// DeadLetter is a dead letter recorded in the log: a message that a plugin
// (or the executor) could not process, and why.
type DeadLetter struct {
	// Seq is the stream sequence of the dead letter itself.
	Seq    uint64 `json:"seq"`
	Plugin string `json:"plugin"`
	// Stream and Sequence point at the message that could not be processed.
	Stream     string    `json:"stream"`
	Sequence   uint64    `json:"sequence"`
	Consumer   string    `json:"consumer,omitempty"`
	Subject    string    `json:"subject,omitempty"`
	Deliveries int       `json:"deliveries"`
	Reason     string    `json:"reason"`
	Time       time.Time `json:"time,omitzero"`
}

// DeadLetters lists dead letters before stream sequence before (all when
// 0), newest first, at most limit (DefaultLimit when 0, at most MaxLimit).
func (d *DB) DeadLetters(ctx context.Context, before uint64, limit int) ([]DeadLetter, error) {
	if before == 0 {
		before = 1<<63 - 1
	}
	rows, err := d.r.QueryContext(ctx, `SELECT seq, plugin, stream, sequence, consumer, subject, deliveries, reason, time
		FROM dead_letters WHERE seq < ? ORDER BY seq DESC LIMIT ?`, seqToSQL(before), clampLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("reading dead letters: %w", err)
	}
	defer rows.Close()
	out := []DeadLetter{}
	for rows.Next() {
		var dl DeadLetter
		var seq, sequence int64
		var at sql.NullString
		if err := rows.Scan(&seq, &dl.Plugin, &dl.Stream, &sequence, &dl.Consumer, &dl.Subject, &dl.Deliveries, &dl.Reason, &at); err != nil {
			return nil, fmt.Errorf("reading dead letters: %w", err)
		}
		dl.Seq, dl.Sequence, dl.Time = seqFromSQL(seq), seqFromSQL(sequence), parseTS(at)
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading dead letters: %w", err)
	}
	return out, nil
}

// PluginStat sums up the recent calls of one version of a plugin.
type PluginStat struct {
	Plugin  string `json:"plugin"`
	Version string `json:"version"`
	Shadow  bool   `json:"shadow,omitempty"`
	// Calls counts the calls looked at, by outcome (applied, nochange,
	// rejected, timeout, error, shadow).
	Calls    int            `json:"calls"`
	Outcomes map[string]int `json:"outcomes"`
	// Latency percentiles of those calls, in microseconds.
	P50US int64 `json:"p50_us"`
	P95US int64 `json:"p95_us"`
	P99US int64 `json:"p99_us"`
	// LastSeq is the stream sequence of the newest fact with a call.
	LastSeq uint64 `json:"last_seq"`
}

// StatsWindow is how many of the newest plugin calls PluginStats looks at:
// enough for a stable p99, few enough to stay fast however long the log.
const StatsWindow = 20000

// PluginStats sums up the newest StatsWindow plugin calls by plugin and
// version: outcomes and latency percentiles. Plugins that made no call in
// that window are absent.
func (d *DB) PluginStats(ctx context.Context) ([]PluginStat, error) {
	rows, err := d.r.QueryContext(ctx, `SELECT plugin, version, shadow, outcome, latency_us, fact_seq
		FROM (SELECT * FROM plugin_calls ORDER BY fact_seq DESC, fact_idx DESC LIMIT ?)`, StatsWindow)
	if err != nil {
		return nil, fmt.Errorf("reading plugin stats: %w", err)
	}
	defer rows.Close()
	type key struct {
		plugin, version string
		shadow          bool
	}
	stats := map[key]*PluginStat{}
	lat := map[key][]int64{}
	for rows.Next() {
		var k key
		var outcome string
		var us, seq int64
		if err := rows.Scan(&k.plugin, &k.version, &k.shadow, &outcome, &us, &seq); err != nil {
			return nil, fmt.Errorf("reading plugin stats: %w", err)
		}
		s := stats[k]
		if s == nil {
			s = &PluginStat{Plugin: k.plugin, Version: k.version, Shadow: k.shadow, Outcomes: map[string]int{}}
			stats[k] = s
		}
		s.Calls++
		s.Outcomes[outcome]++
		s.LastSeq = max(s.LastSeq, seqFromSQL(seq))
		lat[k] = append(lat[k], us)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading plugin stats: %w", err)
	}
	out := make([]PluginStat, 0, len(stats))
	for k, s := range stats {
		l := lat[k]
		slices.Sort(l)
		s.P50US, s.P95US, s.P99US = percentile(l, 50), percentile(l, 95), percentile(l, 99)
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b PluginStat) int {
		if a.Plugin != b.Plugin {
			if a.Plugin < b.Plugin {
				return -1
			}
			return 1
		}
		if a.LastSeq > b.LastSeq { // the newest version first
			return -1
		}
		if a.LastSeq < b.LastSeq {
			return 1
		}
		return 0
	})
	return out, nil
}

// percentile of sorted values, nearest rank.
func percentile(sorted []int64, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// Bucket counts the tasks that finished in one interval, by final status.
type Bucket struct {
	Start    time.Time      `json:"start"`
	Finished map[string]int `json:"finished"`
}

// Throughput counts the tasks that finished since since, by status, in
// buckets of step, oldest first; buckets with no task are present, so that
// a chart of them has no holes.
func (d *DB) Throughput(ctx context.Context, since time.Time, step time.Duration) ([]Bucket, error) {
	if step <= 0 {
		return nil, fmt.Errorf("throughput: step %v must be positive", step)
	}
	since = since.UTC().Truncate(step)
	rows, err := d.r.QueryContext(ctx, `SELECT finished_at, status FROM tasks
		WHERE finished_at IS NOT NULL AND finished_at >= ?`, ts(since))
	if err != nil {
		return nil, fmt.Errorf("reading throughput: %w", err)
	}
	defer rows.Close()
	now := time.Now().UTC()
	n := int(now.Sub(since)/step) + 1
	if n > 10000 {
		return nil, fmt.Errorf("throughput: %d buckets are too many; widen the step", n)
	}
	out := make([]Bucket, n)
	for i := range out {
		out[i] = Bucket{Start: since.Add(time.Duration(i) * step), Finished: map[string]int{}}
	}
	for rows.Next() {
		var at sql.NullString
		var status string
		if err := rows.Scan(&at, &status); err != nil {
			return nil, fmt.Errorf("reading throughput: %w", err)
		}
		i := int(parseTS(at).Sub(since) / step)
		if i >= 0 && i < len(out) {
			out[i].Finished[status]++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading throughput: %w", err)
	}
	return out, nil
}

// StatusCounts counts tasks by their current status.
func (d *DB) StatusCounts(ctx context.Context) (map[string]int, error) {
	rows, err := d.r.QueryContext(ctx, `SELECT status, count(*) FROM tasks GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("counting tasks: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("counting tasks: %w", err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting tasks: %w", err)
	}
	return out, nil
}

// Action is an operator's action, as the log recorded it.
type Action struct {
	Seq     uint64    `json:"seq"`
	Action  string    `json:"action"`
	TaskID  string    `json:"task_id,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	Queue   string    `json:"queue"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// TaskActions lists the operators' actions on task id, in stream order,
// with the executors' duplicate decisions on submissions of its key
// (action "duplicate" or "conflict", by the executor's source).
func (d *DB) TaskActions(ctx context.Context, id string) ([]Action, error) {
	return d.actions(ctx, `WHERE o.task_key = (SELECT key FROM task_keys WHERE id = ?) ORDER BY o.seq`, id)
}

// QueueActions lists the newest operators' pauses and resumes of queue,
// newest first, at most limit (DefaultLimit when 0, at most MaxLimit).
func (d *DB) QueueActions(ctx context.Context, queue string, limit int) ([]Action, error) {
	return d.actions(ctx, `WHERE o.task_key IS NULL AND o.queue = ? ORDER BY o.seq DESC LIMIT ?`, queue, clampLimit(limit))
}

func (d *DB) actions(ctx context.Context, where string, args ...any) ([]Action, error) {
	rows, err := d.query(ctx, `SELECT o.seq, o.action, coalesce(k.id, ''), o.attempt, o.queue, o.by_whom, o.reason, o.time
		FROM operator_actions o LEFT JOIN task_keys k ON k.key = o.task_key `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("reading operator actions: %w", err)
	}
	defer rows.Close()
	out := []Action{}
	for rows.Next() {
		var a Action
		var seq int64
		var at sql.NullString
		if err := rows.Scan(&seq, &a.Action, &a.TaskID, &a.Attempt, &a.Queue, &a.By, &a.Reason, &at); err != nil {
			return nil, fmt.Errorf("reading operator actions: %w", err)
		}
		a.Seq, a.Time = seqFromSQL(seq), parseTS(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading operator actions: %w", err)
	}
	return out, nil
}
