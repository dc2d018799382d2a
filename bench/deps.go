package main

// The harness builds qtasksd (procs.go) inside this module, with this
// module's go.sum: the packages that only the commands import must be
// required here too, or that build fails on a missing go.sum entry.
import _ "github.com/qtasks/qtasks-go/internal/telemetry"
