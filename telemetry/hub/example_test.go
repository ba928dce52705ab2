package hub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log"
	"time"

	"github.com/coldchain/tracker/telemetry/hub"
)

// The agent's use of the client: callbacks first, Run in its own goroutine,
// publishes from the publisher, and back to DPS on ErrUnauthorized.
func Example() {
	var cert tls.Certificate // the device's chain and key from the identity store
	var roots *x509.CertPool // the hub's trust bundle
	c, err := hub.New(hub.Config{
		Host:          "tracker-hub.azure-devices.net", // assignedHub from DPS
		DeviceID:      "container-4711",
		Certificate:   cert,
		RootCAs:       roots,
		ClientVersion: "coldchain-trackerd/1.0.0",
	})
	if err != nil {
		log.Print(err)
		return
	}
	c.OnDesired(func(patch json.RawMessage, version int64) {
		log.Printf("desired properties v%d: %s", version, patch)
	})
	c.OnMethod(func(ctx context.Context, name string, payload json.RawMessage) (int, any) {
		if name == "status" {
			return 200, map[string]string{"state": "ok"}
		}
		return 404, map[string]string{"message": "unknown method " + name}
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	if err := c.WaitConnected(ctx); err == nil {
		err := c.Publish(ctx, hub.Message{
			Body:            []byte(`{"seq":1}`),
			MessageID:       "container-4711-1",
			ContentType:     "application/json",
			ContentEncoding: "utf-8",
		})
		switch {
		case err == nil: // acknowledged: the record may leave the buffer
		case errors.Is(err, hub.ErrInvalidMessage): // never sendable: drop it
		default: // keep the record and send it again later
		}
	}
	if err := <-done; errors.Is(err, hub.ErrUnauthorized) {
		log.Print("hub refuses the identity: provision again through DPS")
	}
}
