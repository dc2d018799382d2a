package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// retryWrite's answers, attempt by attempt: what is asked again, and what
// its error says about the outcome.
func TestRetryWrite(t *testing.T) {
	t.Parallel()
	b := &Bus{cfg: Config{PublishTimeout: 3 * time.Second}}
	timeout := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for _, tc := range []struct {
		name       string
		idempotent bool
		answers    []func(ctx context.Context) error // the last one repeats
		attempts   int                               // at least
		ok         bool
		notStored  bool // SurelyNotStored(err)
	}{
		{"an answer lost, then stored", true, []func(context.Context) error{timeout, func(context.Context) error { return nil }}, 2, true, false},
		{"an answer lost to the publisher's wait, then stored", true, []func(context.Context) error{
			func(context.Context) error {
				return fmt.Errorf("%w: %w", errAnswerLost, jetstream.ErrAsyncPublishTimeout)
			},
			func(context.Context) error { return nil },
		}, 2, true, false},
		{"the connection lost after sending, then stored", true, []func(context.Context) error{
			func(context.Context) error { return fmt.Errorf("%w: %w", errAnswerLost, nats.ErrDisconnected) },
			func(context.Context) error { return nil },
		}, 2, true, false},
		{"not idempotent: an answer lost to the publisher's wait is the end", false, []func(context.Context) error{
			func(context.Context) error { return fmt.Errorf("%w: %w", errAnswerLost, nats.ErrDisconnected) },
			func(context.Context) error { return nil },
		}, 1, false, false},
		{"no leader, then stored", false, []func(context.Context) error{
			func(context.Context) error { return jetstream.ErrNoStreamResponse },
			func(context.Context) error { return nil },
		}, 2, true, false},
		{"no leader until the bound", true, []func(context.Context) error{
			func(context.Context) error { return jetstream.ErrNoStreamResponse },
		}, 3, false, true},
		{"an answer lost, then no leader until the bound", true, []func(context.Context) error{
			timeout, func(context.Context) error { return jetstream.ErrNoStreamResponse },
		}, 2, false, false},
		{"not idempotent: one answer lost is the end", false, []func(context.Context) error{timeout, func(context.Context) error { return nil }}, 1, false, false},
		{"refused for good", true, []func(context.Context) error{
			func(context.Context) error {
				return &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}
			},
		}, 1, false, true},
		{"disconnected after sending: unknown, not asked again", true, []func(context.Context) error{
			func(context.Context) error { return nats.ErrDisconnected },
		}, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := 0
			err := b.retryWrite(context.Background(), tc.idempotent, func(a writeAttempt) error {
				n++
				if a.n != n {
					t.Errorf("attempt %d numbered %d", n, a.n)
				}
				ctx, cancel := a.context()
				defer cancel()
				return tc.answers[min(n, len(tc.answers))-1](ctx)
			})
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if n < tc.attempts || !tc.idempotent && !tc.ok && n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
			if SurelyNotStored(err) != tc.notStored {
				t.Errorf("SurelyNotStored(%v) = %v, want %v", err, !tc.notStored, tc.notStored)
			}
		})
	}
}
