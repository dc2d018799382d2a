package events

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Task statuses. Retry is a real status here (QTasks keeps it outside its
// enum, Q10): the attempt failed and a new attempt was scheduled.
const (
	StatusNew     = "new"
	StatusProcess = "process"
	StatusSuccess = "success"
	StatusError   = "error"
	StatusCancel  = "cancel"
	StatusRetry   = "retry"
)

// FinalStatus reports whether a task attempt in status s is over.
func FinalStatus(s string) bool {
	switch s {
	case StatusSuccess, StatusError, StatusCancel, StatusRetry:
		return true
	}
	return false
}

// Task is a task record: what was submitted, where it is, how it ended. It is
// the "model" of QTasks' status schemas, the data of a run message, and the
// value of the task state KV bucket.
type Task struct {
	ID       string          `json:"id"`
	Name     string          `json:"task_name"`
	Queue    string          `json:"queue"`
	Priority int             `json:"priority"`
	Status   string          `json:"status"`
	Args     json.RawMessage `json:"args"`
	Kw       json.RawMessage `json:"kw"`
	Result   json.RawMessage `json:"result,omitempty"`
	// Error is the error text of a failed attempt; for a cancelled task, the
	// cancel reason.
	Error string `json:"error,omitempty"`
	// Reason says which plugin or rule failed the task, when one did.
	Reason string `json:"reason,omitempty"`
	// Attempt counts from 1; a retry is attempt n+1 of the same history.
	Attempt int `json:"attempt"`
	// Run counts the deliveries of an attempt to workers; a run after the
	// first either resumes an interrupted one or follows a delay.
	Run int `json:"run,omitempty"`
	// Retries left after this attempt.
	Retry       int                        `json:"retry"`
	RetryParent string                     `json:"retry_parent,omitempty"`
	RetryChild  string                     `json:"retry_child,omitempty"`
	DelayMS     int64                      `json:"delay_ms,omitempty"`
	Tags        []string                   `json:"tags,omitempty"`
	Extra       map[string]json.RawMessage `json:"extra,omitempty"`
	// IdempotencyKey, when set at submission, makes resubmission a no-op.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// SubmitDigest digests the submission as the caller made it (task
	// name, queue, args, kw: events.SubmitParts), so that a later
	// submission of the same key with other arguments is told apart from a
	// repeat however plugins changed the record since.
	SubmitDigest string    `json:"submit_digest,omitempty"`
	Worker       string    `json:"worker,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// NotBefore delays the run of a retry until its backoff has passed.
	NotBefore time.Time `json:"not_before,omitzero"`
	// TimeoutMS bounds one run of the task function (QTasks' max_time).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Trace is the W3C traceparent the submission carried.
	Trace string `json:"trace,omitempty"`
}

// Outcome is what became of one plugin call.
type Outcome string

// Plugin call outcomes, as recorded in a fact.
const (
	OutcomeApplied  Outcome = "applied"
	OutcomeNoChange Outcome = "nochange"
	OutcomeRejected Outcome = "rejected" // the patch broke the trigger's contract or did not apply
	OutcomeTimeout  Outcome = "timeout"
	OutcomeError    Outcome = "error"  // the plugin said it failed
	OutcomeShadow   Outcome = "shadow" // a shadow plugin's patch, recorded, never applied
)

// Failure policies, as for Kubernetes admission webhooks.
const (
	PolicyFail   = "fail"
	PolicyIgnore = "ignore"
)

// PluginCall records one mutator's part in a returnable trigger firing.
type PluginCall struct {
	Plugin      string          `json:"plugin"`
	Version     string          `json:"version,omitempty"`
	Invocation  string          `json:"invocation"`
	Outcome     Outcome         `json:"outcome"`
	Policy      string          `json:"policy,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Patch       json.RawMessage `json:"patch,omitempty"`
	LatencyUS   int64           `json:"latency_us"`
	// PatchOmitted is set when the patch was dropped from the fact to keep
	// it under MaxDataSize; the patch event itself is in the log.
	PatchOmitted bool `json:"patch_omitted,omitempty"`
	// Shadow marks the call of a shadow plugin: recorded, never applied,
	// never failing the task.
	Shadow bool `json:"shadow,omitempty"`
	// Stream sequences of the invocation and patch events, when known.
	InvokeSeq uint64 `json:"invoke_seq,omitempty"`
	PatchSeq  uint64 `json:"patch_seq,omitempty"`
}

// Failed reports whether the call's outcome is a failure that the plugin's
// policy must decide.
func (c PluginCall) Failed() bool {
	switch c.Outcome {
	case OutcomeRejected, OutcomeTimeout, OutcomeError:
		return true
	case OutcomeApplied, OutcomeNoChange, OutcomeShadow:
	}
	return false
}

// Fact is the data of a trigger fact: the payload the trigger fired with,
// what it became after the mutator chain, and every plugin call.
type Fact struct {
	Input  json.RawMessage `json:"input"`
	Output json.RawMessage `json:"output,omitempty"`
	Calls  []PluginCall    `json:"calls,omitempty"`
	// Failed is set when a plugin with policy fail failed the firing; the
	// task then ends in error with this reason.
	Failed string `json:"failed,omitempty"`
}

// DeadLetter is the data of a dead-letter event: a message a plugin could not
// process within its delivery limit.
type DeadLetter struct {
	Stream     string `json:"stream"`
	Sequence   uint64 `json:"sequence"`
	Consumer   string `json:"consumer"`
	Subject    string `json:"subject,omitempty"`
	Deliveries int    `json:"deliveries"`
	Reason     string `json:"reason"`
}

// Alert kinds (Alert.Kind).
const (
	// AlertForgedMsgID: a message the executor did not write occupies the
	// Nats-Msg-Id of one it writes (a final fact, a dead letter), so the
	// executor's own was dropped as a duplicate. The executor wrote its
	// own again under an id nobody can predict.
	AlertForgedMsgID = "forged_msg_id"
)

// Alert is the data of an alert event (TypeAlert): something in the log
// that the executor refused to take for what it claims to be.
type Alert struct {
	Kind string `json:"kind"`
	// Stream and Sequence point at the offending message.
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	// Subject is the offending message's subject (which tells who wrote
	// it: only the owner of a subject can write there).
	Subject string `json:"subject,omitempty"`
	// MsgID is the id it occupies.
	MsgID string `json:"msg_id,omitempty"`
	// Want is the subject the executor's own message went to.
	Want   string `json:"want,omitempty"`
	Reason string `json:"reason"`
}

// Plugin modes.
const (
	// ModeObserver plugins read facts; they never answer.
	ModeObserver = "observer"
	// ModeMutator plugins are invoked on returnable triggers and answer with
	// a patch or nothing.
	ModeMutator = "mutator"
	// ModeShadow plugins are invoked like mutators, but their patches are
	// only recorded, never applied (a candidate version tried on live
	// traffic).
	ModeShadow = "shadow"
)

// PluginInfo is a plugin's registration: what the executor needs to build a
// trigger's chain without asking anyone. It is the value of the plugin
// registry KV bucket, keyed by Name.
type PluginInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Triggers the plugin is named for; empty means global: every trigger.
	Triggers []string `json:"triggers,omitempty"`
	Mode     string   `json:"mode"`
	// Order is the registration order; the chain runs named-trigger plugins
	// first, then global ones, each by Order.
	Order     uint64 `json:"order"`
	TimeoutMS int64  `json:"timeout_ms"`
	Policy    string `json:"policy"`
	// ShadowOf names the live plugin a shadow plugin is a candidate for.
	ShadowOf string `json:"shadow_of,omitempty"`
	// Local plugins run inside the executor's process; their invocations
	// and patches are still recorded.
	Local        bool      `json:"local,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	// Protocol is the protocol version the plugin speaks (ProtocolVersion);
	// the registrar refuses a registration of another version.
	Protocol int `json:"protocol,omitempty"`
	// ReadsBatches says that the plugin, an observer, reads facts packed in
	// phase messages (PhaseSubject) as well as facts alone, so that its
	// registration does not keep its triggers' facts alone (issue #15,
	// design (f)). Only an observer allowed to read every trigger may say so:
	// a phase message holds the facts of many triggers.
	ReadsBatches bool `json:"reads_batches,omitempty"`
}

// Global reports whether the plugin receives every trigger.
func (p PluginInfo) Global() bool { return len(p.Triggers) == 0 }

// Handles reports whether the plugin is named for trigger (not counting a
// global registration).
func (p PluginInfo) Handles(trigger string) bool {
	return slices.Contains(p.Triggers, trigger)
}

// AppendJSON appends the fact's JSON encoding to dst. Input and Output must
// be valid JSON (the executor's payloads are: they come from json.Marshal
// and ApplyPatch); they are copied as they are, where json.Marshal would
// validate and re-compact them byte by byte, which costs as much CPU as
// JetStream spends storing the fact. The result decodes to the same Fact.
func (f *Fact) AppendJSON(dst []byte) ([]byte, error) {
	// One allocation for the common fact (no calls): input, output and
	// the few bytes around them.
	dst = slices.Grow(dst, 32+len(f.Input)+len(f.Output))
	dst = append(dst, `{"input":`...)
	dst = appendRaw(dst, f.Input)
	if len(f.Output) > 0 {
		dst = append(dst, `,"output":`...)
		dst = appendRaw(dst, f.Output)
	}
	if len(f.Calls) > 0 {
		b, err := json.Marshal(f.Calls)
		if err != nil {
			return dst, fmt.Errorf("encoding plugin calls: %w", err)
		}
		dst = append(dst, `,"calls":`...)
		dst = append(dst, b...)
	}
	if f.Failed != "" {
		b, err := json.Marshal(f.Failed)
		if err != nil {
			return dst, fmt.Errorf("encoding failure: %w", err)
		}
		dst = append(dst, `,"failed":`...)
		dst = append(dst, b...)
	}
	return append(dst, '}'), nil
}

func appendRaw(dst []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, raw...)
}
