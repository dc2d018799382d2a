package bus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A program that does not link bus/embedded (a plugin) gets a clear error
// for an empty URL, not a connection attempt to nowhere. Not parallel: it
// takes away the server the other tests start.
func TestOpenWithoutEmbeddedServer(t *testing.T) {
	embeddedMu.Lock()
	start := embeddedStart
	embeddedStart = nil
	embeddedMu.Unlock()
	t.Cleanup(func() { RegisterEmbedded(start) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{})
	if !errors.Is(err, ErrNoEmbedded) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("Open with no URL and no embedded server: %v, want ErrNoEmbedded", err)
	}
}
