package buffer

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// Re-executed as a crash-test child: run only the helper.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
