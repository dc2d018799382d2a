package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole harness in smoke mode (tiny sizes, one
// repetition), as CI does, so that it cannot rot: every bench must run and
// every row of the table must have a figure. The figures themselves are
// not checked: smoke sizes are too small to mean anything.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the smoke run starts servers and processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	svg := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, []string{"-smoke", "-svg", svg}, &stdout, &stderr)
	t.Logf("table:\n%s", stdout.String())
	if code != 0 {
		t.Fatalf("bench -smoke exited %d\nstderr:\n%s", code, stderr.String())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if strings.Contains(line, "not run") {
			t.Errorf("a row has no figure: %s", line)
		}
	}
	for _, want := range []string{"raw JetStream async publish", "raw JetStream task floor", "trigger fact publish", "River/riversqlite, tuned", "Asynq/Redis, tuned", "qtasksd peak RSS", "projection apply"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the table has no row %q", want)
		}
	}
	for _, f := range []string{"tasks.svg", "growth.svg"} {
		data, err := os.ReadFile(filepath.Join(svg, f))
		if err != nil {
			t.Errorf("plot: %v", err)
			continue
		}
		if !bytes.HasPrefix(data, []byte("<svg")) || !bytes.HasSuffix(bytes.TrimSpace(data), []byte("</svg>")) {
			t.Errorf("%s is not an SVG document", f)
		}
	}
}
