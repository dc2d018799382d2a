package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Errors of registration.
var (
	// ErrRegistrationRefused is wrapped by the error of a registration or
	// deregistration the registrar refused; the rest of the message is its
	// reason.
	ErrRegistrationRefused = errors.New("registration refused")
	// ErrNoRegistrar means no process answers registration requests: no
	// executor owns the streams, or (with authentication) qtasksd is down.
	ErrNoRegistrar = errors.New("no registrar answers (is qtasksd running?)")
	// ErrNotWatched is returned by Registry.WaitFor on a plugin's bus,
	// which does not read the registry.
	ErrNotWatched = errors.New("this bus does not watch the plugin registry")
)

// registrarQueue is the queue group of registrars: one of them answers each
// request.
const registrarQueue = "qtasks-registrar"

// registrarTimeout bounds the handling of one request.
const registrarTimeout = 30 * time.Second

// noRegistrarWait is how long a registration waits for a registrar to
// appear before it fails with ErrNoRegistrar.
const noRegistrarWait = 3 * time.Second

// Registration is the body of a registration request (docs/PROTOCOL.md §8):
// the registry entry the plugin asks for, and the settings of the durable
// consumer the registrar creates for it.
type Registration struct {
	events.PluginInfo
	// Consumer tunes the plugin's durable consumer; nil takes the defaults.
	Consumer *ConsumerSettings `json:"consumer,omitempty"`
}

// ConsumerSettings are what a plugin may choose of its durable consumer.
// Its name and filters are the registrar's: plugin-<name>, and the
// invocations of the plugin (mutator, shadow) or the facts of its triggers
// (observer). Zero fields take the defaults.
type ConsumerSettings struct {
	// AckWaitMS: default max(2 × timeout_ms, 5000) for a mutator or
	// shadow, 30000 for an observer; at most 3 600 000.
	AckWaitMS int64 `json:"ack_wait_ms,omitempty"`
	// MaxDeliver: default 5; at most 100.
	MaxDeliver int `json:"max_deliver,omitempty"`
	// MaxAckPending: default 64 for a mutator or shadow, 1000 for an
	// observer; at most 10 000.
	MaxAckPending int `json:"max_ack_pending,omitempty"`
	// DeliverNew starts an observer's new consumer at the end of the log
	// instead of its beginning. A mutator's always starts at the end.
	DeliverNew bool `json:"deliver_new,omitempty"`
}

// RegistrationReply is the registrar's answer: the stored entry and its
// revision in the bucket, or why the request was refused.
type RegistrationReply struct {
	Plugin   *events.PluginInfo `json:"plugin,omitempty"`
	Revision uint64             `json:"revision,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// servesRegistrar applies Config.Registrar (see RegistrarAuto).
func (b *Bus) servesRegistrar() bool {
	c := b.cfg
	switch c.Registrar {
	case RegistrarOn:
		return true
	case RegistrarOff:
		return false
	default: // RegistrarAuto: decided below
	}
	if len(c.Users) > 0 && c.URL == "" {
		return true
	}
	return c.CredsFile == "" && c.NKeyFile == "" && c.User == "" && c.Token == ""
}

// registrar answers registration requests. It alone writes the registry
// bucket and creates plugins' consumers, so that a plugin's user needs
// neither right: the subject's last token is the plugin's name, and a
// plugin's user may publish on its own name's subjects only.
type registrar struct {
	b      *Bus
	grants map[string]events.PluginGrant // nil: no authentication
	maxMS  int64
	subs   []*nats.Subscription
}

func newRegistrar(b *Bus) *registrar {
	g := &registrar{b: b, maxMS: b.cfg.MaxPluginTimeout.Milliseconds()}
	if len(b.cfg.Users) > 0 {
		g.grants = make(map[string]events.PluginGrant)
		for _, u := range b.cfg.Users {
			switch {
			case u.Grant != nil:
				g.grants[u.Name] = *u.Grant
			case u.Permissions != nil:
				// A restricted user without a grant may register
				// nothing (the zero grant allows no mode).
				g.grants[u.Name] = events.PluginGrant{}
			}
		}
	}
	return g
}

// serve starts answering requests.
func (g *registrar) serve() error {
	b := g.b
	for subj, h := range map[string]nats.MsgHandler{
		events.SubjectRegister + ".*":   g.register,
		events.SubjectDeregister + ".*": g.deregister,
	} {
		sub, err := b.nc.QueueSubscribe(subj, registrarQueue, h)
		if err != nil {
			g.stop()
			return fmt.Errorf("serving registrations: %w", err)
		}
		g.subs = append(g.subs, sub)
	}
	if err := b.nc.Flush(); err != nil {
		g.stop()
		return fmt.Errorf("serving registrations: %w", err)
	}
	return nil
}

func (g *registrar) stop() {
	for _, s := range g.subs {
		_ = s.Unsubscribe()
	}
}

// check is the validity rule of an entry under key: events.CheckPlugin,
// and, where the registrar knows them, the plugin user's grant and the
// operator's timeout cap. A nil registrar (an executor that does not
// answer registrations) knows neither.
func (g *registrar) check(key string, p events.PluginInfo) error {
	if g == nil {
		return events.CheckPlugin(key, p, 0)
	}
	limit := g.maxMS
	grant, granted := g.grants[key]
	if granted && grant.MaxTimeoutMS > 0 {
		limit = grant.MaxTimeoutMS
	}
	if err := events.CheckPlugin(key, p, limit); err != nil {
		return err
	}
	if granted {
		if grant.Mode == "" {
			return &events.InvalidPluginError{Reason: events.InvalidGrant, Msg: fmt.Sprintf("plugin %s: its user has no plugin grant", key)}
		}
		return grant.Allows(p)
	}
	return nil
}

func (g *registrar) reply(m *nats.Msg, r RegistrationReply) {
	data, err := json.Marshal(r)
	if err != nil {
		g.b.log.Warn("answering a registration", "subject", m.Subject, "err", err)
		return
	}
	if err := m.Respond(data); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
		g.b.log.Warn("answering a registration", "subject", m.Subject, "err", err)
	}
}

func (g *registrar) refuse(m *nats.Msg, name string, err error) {
	reason := events.InvalidMalformed
	if ie, ok := errors.AsType[*events.InvalidPluginError](err); ok {
		reason = ie.Reason
	}
	g.b.log.Warn("registration refused", "plugin", name, "reason", reason, "err", err)
	g.reply(m, RegistrationReply{Error: err.Error()})
}

// isRequest reports whether m is a request a client sent, which the
// registrar may act on and answer. The subject's last token is the only
// proof of who asks, and NATS checks the subject a client publishes on,
// never its reply subject: the server writes its answers (publish acks,
// direct gets, API replies, a consumer's deliveries, and this registrar's
// own replies) on whatever reply subject the client chose, another
// plugin's registration subject included. None of those answers has a
// reply subject under an inbox prefix (they have none, or $JS.ACK.…);
// every client's request does (_INBOX., or a plugin's _INBOX_plugin_<name>.).
// So the registrar answers nowhere else either.
func (g *registrar) isRequest(m *nats.Msg) bool {
	if strings.HasPrefix(m.Reply, "_INBOX") {
		return true
	}
	g.b.log.Warn("ignoring a message on a registration subject that is not a request: no reply subject under an inbox prefix (_INBOX)",
		"subject", m.Subject, "reply", m.Reply)
	return false
}

func (g *registrar) register(m *nats.Msg) {
	if !g.isRequest(m) {
		return
	}
	name := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	var req Registration
	if err := json.Unmarshal(m.Data, &req); err != nil {
		g.refuse(m, name, &events.InvalidPluginError{
			Reason: events.InvalidMalformed,
			Msg:    fmt.Sprintf("plugin %s: the registration is not a JSON object: %v", name, err),
		})
		return
	}
	p := req.PluginInfo
	if err := events.CheckProtocol(p.Protocol, p.ReadsBatches); err != nil {
		g.refuse(m, name, &events.InvalidPluginError{Reason: events.InvalidProtocol, Msg: fmt.Sprintf("plugin %s: %v", name, err)})
		return
	}
	if p.Policy == "" {
		p.Policy = events.PolicyFail
	}
	if err := g.check(name, p); err != nil {
		g.refuse(m, name, err)
		return
	}
	cfg, err := consumerConfig(p, req.Consumer)
	if err != nil {
		g.refuse(m, name, err)
		return
	}
	if p.RegisteredAt.IsZero() {
		p.RegisteredAt = time.Now().UTC()
	}
	ctx, cancel := context.WithTimeout(context.Background(), registrarTimeout)
	defer cancel()
	// The consumer before the entry: executors invoke a plugin as soon as
	// they see its entry, and a mutator's consumer delivers only what is
	// published after it exists.
	if !p.Local {
		if _, err := g.b.Consumer(ctx, cfg); err != nil {
			g.b.log.Error("creating a plugin's consumer", "plugin", name, "err", err)
			g.reply(m, RegistrationReply{Error: fmt.Sprintf("plugin %s: the registrar could not create its consumer: %v", name, err)})
			return
		}
	}
	stored, rev, err := g.b.reg.store(ctx, p)
	if err != nil {
		g.b.log.Error("storing a registration", "plugin", name, "err", err)
		g.reply(m, RegistrationReply{Error: err.Error()})
		return
	}
	// Answer once this executor invokes the plugin: with a single
	// executor (qtasksd), "registered" then means "in the chain".
	if err := g.b.reg.waitApplied(ctx, name, rev); err != nil {
		g.b.log.Warn("registration stored, not yet seen", "plugin", name, "err", err)
	}
	g.b.log.Info("plugin registered", "plugin", name, "version", stored.Version, "mode", stored.Mode,
		"triggers", stored.Triggers, "order", stored.Order)
	g.reply(m, RegistrationReply{Plugin: &stored, Revision: rev})
}

func (g *registrar) deregister(m *nats.Msg) {
	if !g.isRequest(m) {
		return
	}
	name := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	ctx, cancel := context.WithTimeout(context.Background(), registrarTimeout)
	defer cancel()
	// The entry first, so that no executor invokes a plugin whose
	// consumer is gone.
	rev, err := g.b.reg.remove(ctx, name)
	if err != nil {
		g.reply(m, RegistrationReply{Error: err.Error()})
		return
	}
	if err := g.b.reg.waitApplied(ctx, name, rev); err != nil {
		g.b.log.Warn("deregistration stored, not yet seen", "plugin", name, "err", err)
	}
	if err := g.b.js.DeleteConsumer(ctx, StreamEvents, DurableName(name)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		g.reply(m, RegistrationReply{Error: fmt.Sprintf("plugin %s: deregistered, but its consumer could not be deleted: %v", name, err)})
		return
	}
	g.b.log.Info("plugin deregistered", "plugin", name)
	g.reply(m, RegistrationReply{Revision: rev})
}

// DurableName is the durable consumer of plugin name on StreamEvents.
func DurableName(name string) string { return "plugin-" + name }

// PluginFilters are the subjects plugin p's consumer reads: its
// invocations (mutator, shadow), or the facts of its triggers (observer),
// and for an observer that reads batches every phase message too (it
// unpacks them and keeps its triggers' facts; the registrar allows it only
// to a plugin allowed every trigger).
func PluginFilters(p events.PluginInfo) []string {
	if p.Mode != events.ModeObserver {
		return []string{events.SubjectInvoke + "." + p.Name + ".>"}
	}
	out := make([]string, 0, len(p.Triggers)+1)
	if len(p.Triggers) == 0 {
		out = append(out, events.SubjectTrigger+".>")
	}
	for _, t := range p.Triggers {
		out = append(out, events.SubjectTrigger+"."+t+".>")
	}
	if p.ReadsBatches {
		out = append(out, events.PhaseSubjects)
	}
	return out
}

// consumerConfig is plugin p's consumer as s asks, within bounds.
func consumerConfig(p events.PluginInfo, s *ConsumerSettings) (ConsumerConfig, error) {
	var set ConsumerSettings
	if s != nil {
		set = *s
	}
	bad := func(what string, v, hi int64) error {
		return &events.InvalidPluginError{
			Reason: events.InvalidMalformed,
			Msg:    fmt.Sprintf("plugin %s: consumer %s %d: want 0 (the default) to %d", p.Name, what, v, hi),
		}
	}
	switch {
	case set.AckWaitMS < 0 || set.AckWaitMS > 3_600_000:
		return ConsumerConfig{}, bad("ack_wait_ms", set.AckWaitMS, 3_600_000)
	case set.MaxDeliver < 0 || set.MaxDeliver > 100:
		return ConsumerConfig{}, bad("max_deliver", int64(set.MaxDeliver), 100)
	case set.MaxAckPending < 0 || set.MaxAckPending > 10_000:
		return ConsumerConfig{}, bad("max_ack_pending", int64(set.MaxAckPending), 10_000)
	}
	cfg := ConsumerConfig{
		Durable:       DurableName(p.Name),
		Subjects:      PluginFilters(p),
		AckWait:       time.Duration(set.AckWaitMS) * time.Millisecond,
		MaxDeliver:    cmpOr(set.MaxDeliver, 5),
		MaxAckPending: set.MaxAckPending,
		DeliverNew:    set.DeliverNew,
	}
	if p.Mode == events.ModeObserver {
		cfg.AckWait = cmpOr(cfg.AckWait, 30*time.Second)
		cfg.MaxAckPending = cmpOr(cfg.MaxAckPending, 1000)
		return cfg, nil
	}
	// A mutator's consumer starts at the end of the log: invocations from
	// before it existed have long timed out.
	cfg.DeliverNew = true
	timeout := time.Duration(p.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultPluginTimeout
	}
	cfg.AckWait = cmpOr(cfg.AckWait, max(2*timeout, 5*time.Second))
	cfg.MaxAckPending = cmpOr(cfg.MaxAckPending, 64)
	return cfg, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Register asks the registrar to register p (docs/PROTOCOL.md §8): it
// checks p (against the plugin user's grant, with authentication), creates
// the plugin's durable consumer (unless p.Local) and stores the entry.
// Register returns the stored registration, once this bus's registry
// shows it (a bus that watches the registry).
func (r *Registry) Register(ctx context.Context, p events.PluginInfo) (events.PluginInfo, error) {
	return r.RegisterWith(ctx, Registration{PluginInfo: p})
}

// RegisterWith is Register with the consumer's settings.
func (r *Registry) RegisterWith(ctx context.Context, reg Registration) (events.PluginInfo, error) {
	if reg.Protocol == 0 {
		reg.Protocol = events.ProtocolVersion
	}
	name := reg.Name
	if !events.ValidName(name) {
		return reg.PluginInfo, fmt.Errorf("%w: plugin name %q: use letters, digits, '-' and '_' (at most 64)", ErrRegistrationRefused, name)
	}
	data, err := json.Marshal(reg)
	if err != nil {
		return reg.PluginInfo, fmt.Errorf("registering plugin %s: %w", name, err)
	}
	// A plugin's bus asks on its own subject, the only one its user may
	// use: the registrar then says what is wrong with another name.
	subj := events.RegisterSubject(name)
	if r.b.cfg.Plugin != "" {
		subj = events.RegisterSubject(r.b.cfg.Plugin)
	}
	rep, err := r.request(ctx, subj, data)
	if err != nil {
		return reg.PluginInfo, fmt.Errorf("registering plugin %s: %w", name, err)
	}
	if rep.Plugin == nil {
		return reg.PluginInfo, fmt.Errorf("registering plugin %s: the registrar's answer has no plugin", name)
	}
	if err := r.waitApplied(ctx, name, rep.Revision); err != nil {
		return *rep.Plugin, err
	}
	return *rep.Plugin, nil
}

// Deregister asks the registrar to remove a plugin: executors stop invoking
// it, and its durable consumer is deleted.
func (r *Registry) Deregister(ctx context.Context, name string) error {
	if !events.ValidName(name) {
		return fmt.Errorf("%w: plugin name %q: use letters, digits, '-' and '_' (at most 64)", ErrRegistrationRefused, name)
	}
	rep, err := r.request(ctx, events.DeregisterSubject(name), []byte(fmt.Sprintf(`{"protocol":%d}`, events.ProtocolVersion)))
	if err != nil {
		return fmt.Errorf("deregistering plugin %s: %w", name, err)
	}
	return r.waitApplied(ctx, name, rep.Revision)
}

func (r *Registry) request(ctx context.Context, subj string, data []byte) (RegistrationReply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, registrarTimeout+5*time.Second)
		defer cancel()
	}
	// A registrar that is starting (streams provisioned, not yet
	// subscribed) or restarting is waited for, briefly.
	var m *nats.Msg
	var err error
	for wait := time.Now().Add(noRegistrarWait); ; {
		m, err = r.b.nc.RequestWithContext(ctx, subj, data)
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if time.Now().After(wait) {
			return RegistrationReply{}, ErrNoRegistrar
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return RegistrationReply{}, ErrNoRegistrar
		}
	}
	if err != nil {
		return RegistrationReply{}, err
	}
	var rep RegistrationReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return rep, fmt.Errorf("the registrar's answer is not JSON: %w", err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("%w: %s", ErrRegistrationRefused, rep.Error)
	}
	return rep, nil
}
