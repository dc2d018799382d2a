package plugins

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSeqWindow(t *testing.T) {
	w := newSeqWindow(3)
	require.True(t, w.add(10))
	require.False(t, w.add(10), "a repeat")
	require.True(t, w.add(5), "lower is not a repeat: redeliveries come out of order")
	require.True(t, w.add(11))
	require.True(t, w.add(12)) // 10 leaves the window
	require.False(t, w.add(5))
	require.True(t, w.add(10), "forgotten once out of the window")
	require.False(t, w.add(12))
}
