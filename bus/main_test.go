package bus_test

import (
	"testing"

	"github.com/qtasks/qtasks-go/internal/testkit"
)

// TestMain fails the package when its passing tests leave goroutines
// running (testkit.Main, goleak).
func TestMain(m *testing.M) {
	benchResponderMain()
	testkit.Main(m)
}
