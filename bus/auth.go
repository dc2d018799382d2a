package bus

import (
	"context"
	"fmt"
	"time"

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
	// Grant, for a plugin's user, is what it may register (its name is the
	// user's); the registrar refuses anything else. A user with
	// Permissions and no Grant may register nothing.
	Grant *events.PluginGrant
}

// PluginInboxPrefix is the inbox prefix of plugin name's connections: a
// plugin subscribes only under it, so it cannot read other connections'
// replies or deliveries.
func PluginInboxPrefix(name string) string { return "_INBOX_plugin_" + name }

// PluginPermissions are the least a plugin needs: ask the registrar to
// register or deregister it (under its own name only), read its own
// consumer (which the registrar creates with the filters its grant allows:
// its invocations for a mutator or shadow, its triggers' facts for an
// observer), write its own patches and dead letters, and read and write its
// own state. Nothing else: no consumer of its choosing, no registry writes,
// no other plugin's invocations, patches or state, no facts for a mutator,
// no task queue, no stream changes. They are the same for every mode: the
// grant, not the rights, decides what the consumer reads.
func PluginPermissions(p events.PluginInfo) Permissions {
	n := p.Name
	durable := "plugin-" + n
	pub := []string{
		events.SubjectPatch + "." + n + ".>",
		events.DeadSubject(n),
		events.RegisterSubject(n),
		events.DeregisterSubject(n),
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + StreamEvents,
		"$JS.API.CONSUMER.INFO." + StreamEvents + "." + durable,
		"$JS.API.CONSUMER.MSG.NEXT." + StreamEvents + "." + durable,
		"$JS.ACK." + StreamEvents + "." + durable + ".>",
		// Its own state. The bucket refuses rollups, so a write here
		// cannot wipe other keys.
		"$JS.API.STREAM.INFO.KV_" + BucketPluginState,
		"$KV." + BucketPluginState + "." + n + ".>",
		"$JS.API.DIRECT.GET.KV_" + BucketPluginState + ".$KV." + BucketPluginState + "." + n + ".>",
	}
	return Permissions{Publish: pub, Subscribe: []string{PluginInboxPrefix(n) + ".>"}}
}

// bindPlugin looks up what a plugin uses, creating nothing: a plugin's
// credentials do not allow changing streams or buckets.
func (b *Bus) bindPlugin(ctx context.Context) error {
	var err error
	if b.events, err = b.js.Stream(ctx, StreamEvents); err != nil {
		return fmt.Errorf("looking up stream %s (is an executor running?): %w", StreamEvents, err)
	}
	// A plugin registers through the registrar and does not read the
	// registry; a reader watches it.
	if b.cfg.ReadOnly {
		if b.plugKV, err = b.js.KeyValue(ctx, BucketPlugins); err != nil {
			return fmt.Errorf("looking up bucket %s: %w", BucketPlugins, err)
		}
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
