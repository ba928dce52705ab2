package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/coldchain/tracker/agent"
	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/agent/config"
	"github.com/coldchain/tracker/agent/sdnotify"
)

func cmdRun(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerd run", "[--config FILE]",
		"Run the tracker daemon (what the systemd service starts): sample the sensors, provision\n"+
			"through DPS, stream to IoT Hub, buffer durably while offline. Stops on SIGTERM or SIGINT.")
	path := fs.String("config", DefaultConfigPath, "configuration `file`")
	if err := cmdline.Parse(env, fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		if errors.Is(err, config.ErrNoConfig) {
			return err
		}
		return fmt.Errorf("invalid configuration (check it with 'trackerd check-config --config %s'):\n%w", *path, err)
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	logLevel.Set(lvl)
	notifier, err := sdnotify.FromEnv(env.Env)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, agent.Deps{Logger: env.Log(), Level: logLevel, Notifier: notifier})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
