package testkit

import (
	"testing"
)

// checkLeaks finds a goroutine left blocked, and nothing once it ended.
func TestCheckLeaks(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-stop
	}()
	if checkLeaks() != 1 {
		t.Fatal("a blocked goroutine was not reported")
	}
	close(stop)
	<-done
	if checkLeaks() != 0 {
		t.Fatal("a goroutine that ended was reported")
	}
}
