package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/coldchain/tracker/agent/cmdline"
	"github.com/coldchain/tracker/provisioning/service"
)

func cmdDeviceShipment(ctx context.Context, env *cmdline.Env, args []string) error {
	fs := cmdline.FlagSet(env, "trackerctl device shipment", "--id ID --shipment SHIPMENT [--wait 2m]",
		"Start a shipment on a loaded tracker: set its twin's desired shipmentId, which the\n"+
			"tracker applies at once (or when it next connects). Every record it takes from then\n"+
			"on carries the shipment; a sealed (delivered) shipment id is refused by the device.\n"+
			"With --wait, wait for the tracker to provision at the new loading first.\n\n"+svcFlagsHelp)
	fs.String("id", "", "device registration `ID`")
	shipment := fs.String("shipment", "", "shipment `ID` (at most 128 characters)")
	wait := fs.Duration("wait", 0, "wait up to this long for the device's hub identity to appear")
	sf := addServiceFlags(fs, false, true)
	id, err := parseID(env, fs, args)
	if err != nil {
		return err
	}
	if *shipment == "" || len(*shipment) > 128 {
		return cmdline.Usagef("--shipment is required (1 to 128 characters)")
	}
	s, err := sf.connect(env, false, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *wait+time.Minute)
	defer cancel()
	deadline := time.Now().Add(*wait)
	for {
		_, err = s.hub.GetDevice(ctx, id)
		if err == nil || !service.IsNotFound(err) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if service.IsNotFound(err) {
		return fmt.Errorf("device %s has no hub identity yet: it provisions when it boots at the loading (reenrolled? see 'trackerctl device show --id %s'); retry with --wait", id, id)
	}
	if err != nil {
		return s.hubErr(err)
	}
	patch := service.TwinPatch{Properties: &service.TwinPatchProps{Desired: map[string]any{"shipmentId": *shipment}}}
	if _, err := s.hub.UpdateTwin(ctx, id, patch, "*"); err != nil {
		return s.hubErr(err)
	}
	fmt.Fprintf(env.Stdout, "device %s: shipment %s started (desired shipmentId set)\n", id, *shipment)
	return nil
}
