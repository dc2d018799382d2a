package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// README.md's table of `qtasksd run` flags is how an operator learns them:
// every flag of run's flag set has its row, each row names only flags run
// takes, and the environment variable a flag's help names is in its row.
func TestReadmeRunFlags(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	doc := string(readme)
	start := strings.Index(doc, "`qtasksd run` flags")
	require.GreaterOrEqual(t, start, 0, "README has no table of qtasksd run's flags")
	rows := map[string]string{} // flag -> its row
	for line := range strings.SplitSeq(doc[start:], "\n") {
		if strings.HasPrefix(line, "Task options") {
			break
		}
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range regexp.MustCompile("`--([a-z0-9-]+)`").FindAllStringSubmatch(first, -1) {
			rows[m[1]] = line
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var help bytes.Buffer
	_ = NewMain(&bytes.Buffer{}, &help).Run(ctx, []string{"run", "-h"})
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)[^\n]*\n((?:    [^\n]*\n?)*)`).FindAllStringSubmatch(help.String(), -1)
	require.NotEmpty(t, flags, "qtasksd run -h printed no flag: %s", help.String())
	taken := map[string]bool{}
	for _, f := range flags {
		name, usage := f[1], f[2]
		taken[name] = true
		row, ok := rows[name]
		if !ok {
			t.Errorf("qtasksd run --%s has no row in README's table of run flags", name)
			continue
		}
		for _, v := range regexp.MustCompile(`\(((?:QTASKS_|LOG_LEVEL)[A-Z_]*)\)`).FindAllStringSubmatch(usage, -1) {
			if !strings.Contains(row, "`"+v[1]+"`") {
				t.Errorf("README's row of --%s does not name its variable %s", name, v[1])
			}
		}
	}
	for name := range rows {
		if !taken[name] {
			t.Errorf("README's table of run flags has --%s, which qtasksd run does not take", name)
		}
	}
}
