package emulator_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coldchain/tracker/emulator"
	"github.com/coldchain/tracker/provisioning/pki"
)

// BenchmarkDPSRegistrations measures complete DPS registrations (TLS
// handshake with a client certificate, CONNECT, SUBSCRIBE, register, poll,
// assignment written to the state, DISCONNECT). Each iteration is a wave of
// 200 devices registering at once; the figure is regs/s over all waves.
func BenchmarkDPSRegistrations(b *testing.B) {
	const devices = 200
	v := start(b)
	v.enrollGroup("fleet", "enabled")
	devs := make([]*pki.Device, devices)
	for i := range devs {
		devs[i] = v.device(fmt.Sprintf("bench-%04d", i))
	}
	var failed atomic.Int64
	b.ResetTimer()
	begin := time.Now()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for _, dev := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := registerOnce(v, dev); err != nil {
					failed.Add(1)
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.FailNow()
		}
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	b.ReportMetric(float64(b.N*devices)/elapsed.Seconds(), "regs/s")
}

// registerOnce is the device side of one registration, without the test
// helpers' fatal calls (it runs on many goroutines).
func registerOnce(v *env, dev *pki.Device) error {
	o := paho.NewClientOptions().AddBroker("ssl://" + v.info.MQTTAddr).SetClientID(dev.ID).
		SetUsername(v.dpsUsername(dev.ID)).SetProtocolVersion(4).SetTLSConfig(v.tlsConfig(dev)).
		SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(wait)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		return fmt.Errorf("connect %s: %v", dev.ID, tok.Error())
	}
	defer c.Disconnect(0)
	answers := make(chan paho.Message, 4)
	if tok := c.Subscribe("$dps/registrations/res/#", 1, func(_ paho.Client, m paho.Message) { answers <- m }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		return fmt.Errorf("subscribe: %v", tok.Error())
	}
	c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, "")
	for i := 0; i < 10; i++ {
		var m paho.Message
		select {
		case m = <-answers:
		case <-time.After(wait):
			return fmt.Errorf("%s: no DPS answer", dev.ID)
		}
		switch {
		case len(m.Topic()) > 26 && m.Topic()[23:26] == "200":
			return nil
		case m.Topic()[23:26] == "202":
			var op struct{ OperationID string }
			if err := jsonUnmarshal(m.Payload(), &op); err != nil {
				return err
			}
			c.Publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId="+op.OperationID, 1, false, " ")
		default:
			return fmt.Errorf("%s: DPS answered %s %s", dev.ID, m.Topic(), m.Payload())
		}
	}
	return fmt.Errorf("%s: registration did not finish", dev.ID)
}

// BenchmarkD2CTLS measures device-to-cloud messages over one mutual-TLS
// connection: QoS 1 publishes with up to 100 awaiting their PUBACK, each
// decoded, written to telemetry.jsonl and acknowledged. The figure is
// msgs/s.
func BenchmarkD2CTLS(b *testing.B) {
	v := start(b)
	dev := v.provision("bench-d2c")
	o := paho.NewClientOptions().AddBroker("ssl://" + v.info.MQTTAddr).SetClientID(dev.ID).
		SetUsername(v.hubUsername(dev.ID)).SetProtocolVersion(4).SetTLSConfig(v.tlsConfig(dev)).
		SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(wait).SetMaxResumePubInFlight(100)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	topic := "devices/bench-d2c/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&shipment=S-1"
	payload := []byte(`{"seq":0,"time":"2026-01-01T00:00:00Z","clock":"gps","temp":4.25,"pressure":101325,"lat":53.5,"lon":9.9,"sats":9,"hdop":0.9,"shipment":"S-1","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	window := make(chan paho.Token, 100)
	done := make(chan error, 1)
	go func() {
		for tok := range window {
			if !tok.WaitTimeout(wait) || tok.Error() != nil {
				done <- fmt.Errorf("publish: %v", tok.Error())
				for range window {
				}
				return
			}
		}
		done <- nil
	}()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	begin := time.Now()
	for i := 0; i < b.N; i++ {
		window <- c.Publish(topic, 1, false, payload)
	}
	close(window)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(begin)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if _, err := v.e.WaitTelemetry(waitCtx(b), func(m emulator.Message) bool { return m.Seq >= int64(b.N) }); err != nil {
		b.Fatalf("only part of the messages were recorded: %v", err)
	}
}
