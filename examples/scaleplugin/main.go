// Command scaleplugin is a mutator plugin in its own process: it multiplies
// the numeric result of every task (on task_executor_run_task) by a factor.
// It shows the whole plugin SDK in one file, and the tests run it as a real
// separate process against a real JetStream. With --shadow-of it runs as a
// shadow of another plugin: its patches are recorded beside that plugin's,
// never applied (the console's plugins page shows how often they differ).
//
//	go run ./examples/scaleplugin --nats-url nats://127.0.0.1:4222 --factor 10
//	go run ./examples/scaleplugin --name scale-next --shadow-of scale --factor 12
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

func main() {
	url := flag.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	name := flag.String("name", "scale", "plugin name")
	version := flag.String("version", "1", "plugin version")
	factor := flag.Float64("factor", 10, "multiply numeric results by this")
	policy := flag.String("policy", events.PolicyFail, "failure policy: fail or ignore")
	shadowOf := flag.String("shadow-of", "", "run as a shadow of this plugin: patches recorded, never applied")
	// The same connection flags and environment variables as qtasksd's
	// and the built-in plugin commands'.
	var cfg bus.Config
	flag.StringVar(&cfg.User, "user", os.Getenv("QTASKS_NATS_USER"), "NATS user (see qtasksd plugin-permissions) (QTASKS_NATS_USER)")
	flag.StringVar(&cfg.Password, "password", os.Getenv("QTASKS_NATS_PASSWORD"), "NATS password (QTASKS_NATS_PASSWORD)")
	flag.StringVar(&cfg.NKeyFile, "nkey", os.Getenv("QTASKS_NATS_NKEY"), "NATS NKey seed file, instead of a password (QTASKS_NATS_NKEY)")
	flag.StringVar(&cfg.TLSCA, "tls-ca", os.Getenv("QTASKS_TLS_CA"), "PEM file of the CAs that sign the server's certificate (QTASKS_TLS_CA)")
	flag.StringVar(&cfg.TLSCert, "tls-cert", os.Getenv("QTASKS_TLS_CERT"), "PEM file of this client's certificate, for mutual TLS (QTASKS_TLS_CERT)")
	flag.StringVar(&cfg.TLSKey, "tls-key", os.Getenv("QTASKS_TLS_KEY"), "PEM file of the key of --tls-cert (QTASKS_TLS_KEY)")
	flag.Parse()
	cfg.URL = *url

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, log, cfg, *name, *version, *policy, *shadowOf, *factor)
	stop()
	if err != nil {
		log.Error("scaleplugin", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cfg bus.Config, name, version, policy, shadowOf string, factor float64) error {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Plugin: the least rights; the streams must exist (qtasksd made them).
	cfg.Name, cfg.Plugin, cfg.Logger = "plugin-"+name, name, log
	b, err := bus.Open(octx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	scale := plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
		var p struct {
			Result json.RawMessage `json:"result"`
		}
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		var n float64
		if json.Unmarshal(p.Result, &n) != nil {
			return nil, nil //nolint:nilerr,nilnil // not a number: a nil patch (no change), not a failure
		}
		return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: n * factor})
	})
	spec := plugins.Spec{
		Name: name, Version: version, Triggers: []string{events.TaskExecutorRunTask},
		Policy: policy, Timeout: 5 * time.Second, Plugin: scale,
	}
	if shadowOf != "" {
		spec.Mode, spec.ShadowOf = plugins.Shadow, shadowOf
	}
	r, err := plugins.Start(ctx, b, spec)
	if err != nil {
		return err
	}
	// Tests wait for this line to know the plugin is registered.
	fmt.Println("ready")
	<-ctx.Done()
	sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
	defer c()
	return r.Stop(sctx)
}
