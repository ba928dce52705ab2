package hub

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// client's own, or paho's for a connection the client should have closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
