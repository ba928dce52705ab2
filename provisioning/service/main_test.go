package service_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// clients start none, and the emulator and test devices must be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
