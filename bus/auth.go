package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/qtasks/qtasks-go/events"
)

// Permissions are the NATS subjects a user may publish and subscribe to.
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// User is a user of the embedded server. Nil Permissions allow everything
// (an executor, qtasksd, an operator). A user authenticates with its
// Password or, when NKey (a user's public NKey, "U…") is set, by signing
// with that key's seed (Config.NKeyFile).
type User struct {
	Name        string
	Password    string
	NKey        string
	Permissions *Permissions
}

// PluginInboxPrefix is the inbox prefix of plugin name's connections: a
// plugin subscribes only under it, so it cannot read other connections'
// replies or deliveries.
func PluginInboxPrefix(name string) string { return "_INBOX_plugin_" + name }

// PluginPermissions are the least a plugin needs: read its own invocations
// (a mutator) or the facts of its triggers (an observer), write its own
// patches, dead letters, registration and state, and read the registry.
// Nothing else: no other plugin's invocations or patches, no facts for a
// mutator, no task queue, no stream changes.
func PluginPermissions(p events.PluginInfo) Permissions {
	n := p.Name
	durable := "plugin-" + n
	pub := []string{
		events.SubjectPatch + "." + n + ".>",
		events.DeadSubject(n),
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + StreamEvents,
		"$JS.API.STREAM.INFO.KV_" + BucketPlugins,
		"$JS.API.STREAM.INFO.KV_" + BucketPluginState,
		"$JS.API.CONSUMER.INFO." + StreamEvents + "." + durable,
		"$JS.API.CONSUMER.MSG.NEXT." + StreamEvents + "." + durable,
		"$JS.ACK." + StreamEvents + "." + durable + ".>",
		// The registry: write its own entry, read (watch) all of them.
		"$KV." + BucketPlugins + "." + n,
		"$JS.API.DIRECT.GET.KV_" + BucketPlugins + ".>",
		"$JS.API.CONSUMER.CREATE.KV_" + BucketPlugins + ".>",
		"$JS.API.CONSUMER.DELETE.KV_" + BucketPlugins + ".>",
		"$JS.FC.KV_" + BucketPlugins + ".>",
		// Its own state.
		"$KV." + BucketPluginState + "." + n + ".>",
		"$JS.API.DIRECT.GET.KV_" + BucketPluginState + ".$KV." + BucketPluginState + "." + n + ".>",
	}
	// The consumer-create subject embeds a single filter subject, so the
	// permission pins what the consumer may read.
	create := "$JS.API.CONSUMER.CREATE." + StreamEvents + "." + durable
	switch {
	case p.Mode != events.ModeObserver:
		pub = append(pub, create+"."+events.SubjectInvoke+"."+n+".>")
	case len(p.Triggers) == 1:
		pub = append(pub, create+"."+events.SubjectTrigger+"."+p.Triggers[0]+".>")
	case len(p.Triggers) == 0:
		pub = append(pub, create+"."+events.SubjectTrigger+".>")
	default:
		// Several filters travel in the request body, not the subject; an
		// observer reads facts, which every observer may.
		pub = append(pub, create)
	}
	return Permissions{Publish: pub, Subscribe: []string{PluginInboxPrefix(n) + ".>"}}
}

func (p *Permissions) server() *server.Permissions {
	if p == nil {
		return nil
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
}

func serverUsers(us []User) []*server.User {
	out := make([]*server.User, 0, len(us))
	for _, u := range us {
		out = append(out, &server.User{Username: u.Name, Password: u.Password, Permissions: u.Permissions.server()})
	}
	return out
}

// bindPlugin looks up what a plugin uses, creating nothing: a plugin's
// credentials do not allow changing streams or buckets.
func (b *Bus) bindPlugin(ctx context.Context) error {
	var err error
	if b.events, err = b.js.Stream(ctx, StreamEvents); err != nil {
		return fmt.Errorf("looking up stream %s (is an executor running?): %w", StreamEvents, err)
	}
	if b.plugKV, err = b.js.KeyValue(ctx, BucketPlugins); err != nil {
		return fmt.Errorf("looking up bucket %s: %w", BucketPlugins, err)
	}
	if b.stKV, err = b.js.KeyValue(ctx, BucketPluginState); err != nil {
		return fmt.Errorf("looking up bucket %s: %w", BucketPluginState, err)
	}
	// A reader's task records only narrow lookups in the log (where
	// TaskEvents starts), so it does without them if its user may not read
	// them. A plugin's user may not: a denied request is not answered, so
	// it is not even asked.
	if b.cfg.ReadOnly {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if kv, err := b.js.KeyValue(kctx, BucketTasks); err == nil {
			b.taskKV = kv
		}
		cancel()
	}
	return nil
}
