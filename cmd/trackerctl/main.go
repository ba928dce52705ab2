// Command trackerctl is the operator's tool for a fleet of container trackers.
// Run "trackerctl help" for its commands.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/cmd/trackerctl/cli"
)

func main() {
	level := new(slog.LevelVar)
	if os.Getenv("TRACKER_DEBUG") != "" {
		level.Set(slog.LevelDebug)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cmdline.OSEnv(logger))
	stop()
	os.Exit(code)
}
