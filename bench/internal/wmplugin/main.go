// Command wmplugin is echoplugin's mutator with its message handling built
// on Watermill (issue #15, step 3) instead of the plugin runner
// (plugins/runner.go): Watermill's router reads the invocations from the
// plugin's durable consumer through watermill-nats's JetStream subscriber,
// its middleware does what the runner hand-writes (panic recovery, a time
// budget, retries, a poison queue), and the patch goes out through
// watermill-nats's JetStream publisher. Registration and the consumer's
// creation stay qtasks' (bus), as they are not on the message path. It
// prints "ready" on stdout once registered and stops on SIGTERM.
//
//	wmplugin --nats-url nats://127.0.0.1:4222 --name bench-wm
//
// It lives in the bench module so that the main module does not gain
// Watermill unless the decision is to adopt it (docs/ARCHITECTURE.md,
// "Watermill in the plugin runner").
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

func main() {
	url := flag.String("nats-url", os.Getenv("QTASKS_NATS_URL"), "NATS server URL")
	name := flag.String("name", "bench-wm", "plugin name")
	version := flag.String("version", "1", "plugin version")
	trigger := flag.String("trigger", events.TaskExecutorRunTask, "trigger the plugin is named for")
	handlers := flag.Int("handlers", 16, "router handlers on the consumer: Watermill's JetStream subscriber hands one message at a time per subscription, so this is the plugin's concurrency (the runner's default is 16)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *name, *version, *trigger, *handlers); err != nil {
		log.Error("wmplugin", "err", err)
		os.Exit(1)
	}
}

const timeout = 10 * time.Second

func run(ctx context.Context, url, name, version, trigger string, handlers int) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, bus.Config{URL: url, Name: "plugin-" + name, Plugin: name,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer b.Close()
	// The registration creates the consumer (PROTOCOL.md §8, §9.1), as
	// the runner's does; the router reads it.
	info, err := b.Registry().RegisterWith(octx, bus.Registration{
		PluginInfo: events.PluginInfo{Name: name, Version: version, Triggers: []string{trigger}, Mode: "mutator",
			TimeoutMS: timeout.Milliseconds(), Policy: "fail"},
		Consumer: &bus.ConsumerSettings{MaxAckPending: 4 * handlers},
	})
	if err != nil {
		return err
	}
	cons, err := b.JetStream().Consumer(octx, bus.StreamEvents, "plugin-"+name)
	if err != nil {
		return err
	}
	nc, err := b.Dial(nats.Name("plugin-" + name + "-watermill"))
	if err != nil {
		return err
	}
	logger := watermill.NopLogger{}
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn: nc, Logger: logger, AckWaitTimeout: max(2*timeout, 5*time.Second), AckAsync: true,
		ResourceInitializer: func(context.Context, jetstream.JetStream, string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			return cons, nil, nil
		},
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(2)},
	})
	if err != nil {
		return err
	}
	// The publisher's subject is its "stream name": the topic itself.
	pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: nc, Logger: logger,
		ConfigureStream: func(topic string) jetstream.StreamConfig { return jetstream.StreamConfig{Name: topic} }})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueue(pub, events.SubjectDead+"."+name)
	if err != nil {
		return err
	}
	router.AddMiddleware(
		poison,
		middleware.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond, Logger: logger}.Middleware,
		middleware.Timeout(timeout),
		middleware.Recoverer,
	)
	h := &handler{pub: pub, name: name, version: version, info: info}
	for i := range handlers {
		router.AddNoPublisherHandler("invoke-"+strconv.Itoa(i), "invocations", sub, h.handle)
	}
	errc := make(chan error, 1)
	go func() { errc <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-errc:
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	_ = router.Close()
	_ = pub.Close()
	return nil
}

type handler struct {
	pub           message.Publisher
	name, version string
	info          events.PluginInfo
}

// handle answers one invocation as the runner's mutate does: check it,
// drop it if stale, call the plugin, publish the patch.
func (h *handler) handle(msg *message.Message) error {
	hd := make(events.Headers, len(msg.Metadata))
	for k, v := range msg.Metadata {
		hd[k] = []string{v}
	}
	inv, err := events.Decode(hd, msg.Payload)
	if err != nil || inv.Type != events.TypeInvokePrefix+inv.Trigger || inv.Plugin != h.name {
		if err == nil {
			err = fmt.Errorf("%w: not an invocation of %s", events.ErrInvalidEvent, h.name)
		}
		// To the poison queue: no point retrying.
		return err
	}
	if inv.TimeoutMS > 0 && time.Now().After(inv.Time.Add(time.Duration(inv.TimeoutMS)*time.Millisecond)) {
		return nil // stale: the executor gave up
	}
	patch := events.Event{PluginVersion: h.version}
	if body, err := echo(inv.Data); err != nil {
		patch.PluginError = err.Error()
	} else if body != nil {
		patch.DataContentType, patch.Data = events.ContentTypeJSONPatch, body
	}
	bus.FillPatch(&patch, h.info, inv)
	out := message.NewMessage(patch.ID, patch.Data)
	hp := events.Headers{}
	patch.Encode(hp)
	for k, v := range hp {
		out.Metadata[k] = v[0]
	}
	// No Nats-Msg-Id: protocol 2 rejects a patch that carries one.
	return h.pub.Publish(events.PatchSubject(h.name, inv.Trigger), out)
}

// echo is echoplugin's plugin: a JSON Patch that sets /result to the value
// it already has.
func echo(payload []byte) ([]byte, error) {
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, err
	}
	var n float64
	if json.Unmarshal(p.Result, &n) != nil {
		return nil, nil
	}
	return json.Marshal([]map[string]any{{"op": "replace", "path": "/result", "value": n}})
}
