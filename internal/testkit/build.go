// Package testkit is what the tests of this module share, in one place:
// building a command once per test process (Build) and running it as a
// real process (StartProc, Proc), a TestMain that removes what was built
// and checks that no test leaked a goroutine (Main), an executor App and
// plugin runners on a real JetStream that stop with the test, the facts of
// a task read from the log and its projection, a JetStream that is not
// qtasksd's, and the check of a shell completion script.
//
// It is imported by tests only (of any package: it may import every
// package of the module, which no non-test file may do).
package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// built are the binaries Build made in this test process, by package
// directory; dir holds them until Main removes it.
var (
	buildMu sync.Mutex
	built   = map[string]string{}
	dir     string
)

// Build compiles the main package pkg (a directory, relative to the test's
// package directory, or an import path) and returns the binary's path. In
// a package whose TestMain is Main, each package is built once per test
// process and shared; otherwise into the test's temporary directory.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if dir == "" {
		bin, err := build(tb.TempDir(), pkg)
		if err != nil {
			tb.Fatal(err)
		}
		return bin
	}
	if bin, ok := built[pkg]; ok {
		return bin
	}
	bin, err := build(dir, pkg)
	if err != nil {
		tb.Fatal(err)
	}
	built[pkg] = bin
	return bin
}

// build runs go build for pkg into a directory of its own under into.
func build(into, pkg string) (string, error) {
	sub, err := os.MkdirTemp(into, "bin-")
	if err != nil {
		return "", err
	}
	name := filepath.Base(pkg)
	if abs, err := filepath.Abs(pkg); err == nil && (pkg == "." || pkg == "..") {
		name = filepath.Base(abs)
	} else if len(name) > 1 && name[0] == 'v' && strings.Trim(name[1:], "0123456789") == "" {
		name = filepath.Base(filepath.Dir(pkg)) // github.com/nats-io/nats-server/v2
	}
	bin := filepath.Join(sub, name)
	if out, err := exec.CommandContext(context.Background(), "go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Bin asks Main to build package Pkg before the tests and set *Path to the
// binary (for a command's own tests: Bin{&bin, "."}).
type Bin struct {
	Path *string
	Pkg  string
}

// Main is the TestMain of a package of this module: it builds bins, runs
// the tests, removes every binary Build made, checks that the tests left
// no goroutine running (when they passed; see leaks.go) and exits.
func Main(m *testing.M, bins ...Bin) {
	var err error
	if dir, err = os.MkdirTemp("", "testkit-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range bins {
		if *b.Path, err = build(dir, b.Pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			_ = os.RemoveAll(dir)
			os.Exit(1)
		}
		built[b.Pkg] = *b.Path
	}
	code := m.Run()
	for _, f := range after {
		f()
	}
	_ = os.RemoveAll(dir)
	if code == 0 {
		code = checkLeaks()
	}
	os.Exit(code)
}

var after []func()

// AfterTests has Main call f once the tests have run, before it checks for
// leaked goroutines (to close what the tests shared).
func AfterTests(f func()) { after = append(after, f) }
