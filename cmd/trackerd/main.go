// Command trackerd is the container tracker daemon. Run "trackerd help" for
// its commands; "trackerd run" is what the systemd service starts.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coldchain/tracker/agent/cli"
	"github.com/coldchain/tracker/agent/cmdline"
)

func main() {
	level := new(slog.LevelVar)
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: readableDurations}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if cmdline.IsTerminal(os.Stderr) {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	logger := slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := cmdline.OSEnv(logger)
	code := cli.MainWithLevel(ctx, os.Args[1:], env, level)
	stop()
	os.Exit(code)
}

// readableDurations writes durations as "4m44s" rather than nanoseconds, so
// that journalctl output reads the same as the status.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
