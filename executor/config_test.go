package executor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/executor"
)

// New refuses a configuration it cannot honour, naming the field.
func TestConfigRefused(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	for _, tc := range []struct {
		cfg  executor.Config
		want string
	}{
		{executor.Config{Queue: "a.b"}, "queue"},
		{executor.Config{NodeID: "node 1"}, "node id"},
		{executor.Config{Concurrency: -1}, "concurrency"},
		{executor.Config{AckWait: 10 * time.Millisecond}, "ack wait"},
		{executor.Config{GracePeriod: -time.Second}, "grace period"},
		{executor.Config{MaxDeliveries: 1}, "max deliveries"},
	} {
		_, err := executor.New(b, &tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := executor.New(b, &executor.Config{GracePeriod: time.Millisecond})
	require.NoError(t, err, "a short grace is a choice")
	_, err = executor.New(b, &executor.Config{Prefetch: -1})
	require.NoError(t, err, "a negative prefetch is none")
}
