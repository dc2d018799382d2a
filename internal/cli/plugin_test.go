package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPluginExit(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("qtasks-x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f PluginFlags
	f.Register(fs, "x")
	for _, tc := range []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"OK", nil, ExitOK, ""},
		{"Help", Parse(fs, []string{"-h"}), ExitOK, ""},
		{"UnknownFlag", Parse(fs, []string{"--nope"}), ExitUsage, "Try: qtasks-x -h"},
		{"BadTimeout", func() error { f.Timeout = -1; return f.Check() }(), ExitUsage, "--timeout"},
		{"Failure", errors.New("no servers"), ExitFailure, "qtasks-x: no servers"},
	} {
		var stderr bytes.Buffer
		require.Equal(t, tc.code, ExitCode("qtasks-x", tc.err, &stderr), tc.name)
		require.Contains(t, stderr.String(), tc.msg, tc.name)
	}
}
