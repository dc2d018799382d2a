//go:build !race

package executor_test

// raceEnabled is true under the race detector, whose slowness some tests
// scale down for.
const raceEnabled = false
