package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ForeignJetStream starts a JetStream server that is not qtasksd's: nothing
// is provisioned on it. It returns its URL and a function listing the
// streams on it then, to check that a command pointed there by mistake
// created none.
func ForeignJetStream(tb testing.TB) (url string, streams func() []string) {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	srv.Start()
	tb.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(time.Minute) {
		tb.Fatal("nats-server did not start")
	}
	return srv.ClientURL(), func() []string {
		tb.Helper()
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			tb.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		names := js.StreamNames(ctx)
		var out []string
		for n := range names.Name() {
			out = append(out, n)
		}
		if err := names.Err(); err != nil {
			tb.Fatal(err)
		}
		return out
	}
}
