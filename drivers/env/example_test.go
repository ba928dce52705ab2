package env_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coldchain/tracker/drivers/env"
	"github.com/coldchain/tracker/drivers/env/envsim"
)

func ExampleProber() {
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	script, _ := envsim.ParseScript("missing@0s/1m")
	sim, _ := envsim.New(envsim.Opts{Seed: 1, Profile: "reefer", Script: script, Now: clock})
	p := env.NewProber(sim.OpenFunc(), &env.ProberOpts{MinBackoff: 30 * time.Second, MaxBackoff: time.Minute, Now: clock})

	for range 4 {
		_, err := p.Read(context.Background())
		h := p.Health()
		switch {
		case errors.Is(err, env.ErrUnavailable):
			fmt.Println("waiting; next probe at", h.NextProbe.Format(time.TimeOnly))
		case errors.Is(err, env.ErrNotFound):
			fmt.Println("sensor missing, failures:", h.Failures)
		case err == nil:
			fmt.Println("reading ok, healthy:", h.Healthy)
		}
		now = now.Add(30 * time.Second)
	}
	// Output:
	// sensor missing, failures: 1
	// sensor missing, failures: 2
	// waiting; next probe at 00:01:30
	// reading ok, healthy: true
}
