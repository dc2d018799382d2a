package executor

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// How a task's input is taken from its args and kw.
func TestDecodeInput(t *testing.T) {
	t.Parallel()
	type ab struct {
		A int `json:"a"`
		B int `json:"b"`
	}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }

	got, err := decodeInput[ab](raw(`[]`), raw(`{"a":1,"b":2}`))
	require.NoError(t, err)
	require.Equal(t, ab{1, 2}, got, "from kw")

	got, err = decodeInput[ab](raw(` [ ] `), raw(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, ab{A: 1}, got, "spaced empty args")

	for _, kw := range []string{`{}`, ` { } `, `null`, ``} {
		got, err = decodeInput[ab](raw(`[{"a":3}]`), raw(kw))
		require.NoError(t, err, kw)
		require.Equal(t, ab{A: 3}, got, "one positional argument stands for the input (kw %q)", kw)
	}

	_, err = decodeInput[ab](raw(`[{"a":3}]`), raw(`{"b":1}`))
	require.ErrorIs(t, err, ErrBadArguments, "positional and keyword arguments")
	_, err = decodeInput[ab](raw(`[1,2]`), raw(`{}`))
	require.ErrorIs(t, err, ErrBadArguments, "two positional arguments")
	_, err = decodeInput[ab](raw(`{"a":1}`), raw(`{}`))
	require.ErrorIs(t, err, ErrBadArguments, "args not an array")
	_, err = decodeInput[ab](raw(`[]`), raw(`{"a":"x"}`))
	require.ErrorIs(t, err, ErrBadArguments, "kw of the wrong type")

	list, err := decodeInput[[]int](raw(`[1,2,3]`), raw(`{}`))
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3}, list, "a slice input is the args")
	list, err = decodeInput[[]int](raw(`[]`), raw(`{}`))
	require.NoError(t, err)
	require.Empty(t, list)

	in, err := decodeInput[Input](raw(`[1]`), raw(`{"k":"v"}`))
	require.NoError(t, err)
	require.Equal(t, Input{Args: []json.RawMessage{raw(`1`)}, Kw: map[string]json.RawMessage{"k": raw(`"v"`)}}, in)
}
