package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// refusingServer is a real TLS listener on 127.0.0.1 that verifies the
// device certificate, reads the CONNECT and answers with a fixed CONNACK
// return code, as IoT Hub does for an unknown or disabled device.
type refusingServer struct {
	addr     string
	connects chan *packets.ConnectPacket
	ln       net.Listener
	wg       sync.WaitGroup
}

func startRefusingServer(t *testing.T, rc byte) *refusingServer {
	t.Helper()
	p := sharedPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &refusingServer{addr: ln.Addr().String(), connects: make(chan *packets.ConnectPacket, 100), ln: ln}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				cp, err := packets.ReadPacket(conn)
				if err != nil {
					return
				}
				if c, ok := cp.(*packets.ConnectPacket); ok {
					s.connects <- c
				}
				ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
				ack.ReturnCode = rc
				ack.Write(conn)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func TestRunReturnsUnauthorizedAfterRefusals(t *testing.T) {
	p := sharedPKI(t)
	for _, rc := range []byte{packets.ErrRefusedNotAuthorised, packets.ErrRefusedBadUsernameOrPassword} {
		srv := startRefusingServer(t, rc)
		c, err := New(Config{
			Host: srv.addr, DeviceID: "d1", Certificate: p.device, RootCAs: p.roots,
			ReconnectMin: time.Millisecond, ReconnectMax: 2 * time.Millisecond,
			ClientVersion: "trackerd/test", Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		err = c.Run(ctx)
		cancel()
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("CONNACK %d: Run = %v, want ErrUnauthorized", rc, err)
		}
		if n := len(srv.connects); n != DefaultMaxRefusals {
			t.Errorf("CONNACK %d: the server saw %d CONNECTs, want %d", rc, n, DefaultMaxRefusals)
		}
		st := c.State()
		if st.Connected || st.Refusals != DefaultMaxRefusals || st.Failures != DefaultMaxRefusals || st.Connects != 0 || st.LastError == "" {
			t.Errorf("CONNACK %d: state %+v", rc, st)
		}
		cp := <-srv.connects
		if cp.ClientIdentifier != "d1" || cp.Username != "127.0.0.1/d1/?api-version=2021-04-12&DeviceClientType=trackerd%2Ftest" ||
			cp.CleanSession || cp.Keepalive != 60 || cp.ProtocolVersion != 4 || cp.PasswordFlag || cp.WillFlag {
			t.Errorf("CONNECT: client %q user %q clean %v keepalive %d version %d password %v will %v",
				cp.ClientIdentifier, cp.Username, cp.CleanSession, cp.Keepalive, cp.ProtocolVersion, cp.PasswordFlag, cp.WillFlag)
		}
	}
}

func TestRunUntrustedServer(t *testing.T) {
	// A server certificate from another CA fails verification on the
	// device: a configuration problem, retried, never ErrUnauthorized.
	p := sharedPKI(t)
	srv := startRefusingServer(t, packets.Accepted)
	c, err := New(Config{
		Host: srv.addr, DeviceID: "d1", Certificate: p.device, RootCAs: nil,
		ReconnectMin: time.Millisecond, ReconnectMax: 2 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.After(30 * time.Second)
	for c.State().Failures < 5 {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			t.Fatalf("no five failures: state %+v", c.State())
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	st := c.State()
	if st.Refusals != 0 || len(srv.connects) != 0 {
		t.Errorf("refusals %d, CONNECTs %d; want none for an untrusted server", st.Refusals, len(srv.connects))
	}
}

func TestRunBackoffSchedule(t *testing.T) {
	p := sharedPKI(t)
	// A port with no listener: every attempt fails at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	synctest.Test(t, func(t *testing.T) {
		const lo, hi = time.Second, 8 * time.Second
		c, err := New(Config{Host: addr, DeviceID: "d1", Certificate: p.device, RootCAs: p.roots, ReconnectMin: lo, ReconnectMax: hi})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		ceil := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
		var total time.Duration
		for i, want := range ceil {
			synctest.Wait() // Run is asleep between attempts
			st := c.State()
			if st.Attempts != i+1 || st.Failures != i+1 {
				t.Fatalf("after %v: attempts %d failures %d, want %d", total, st.Attempts, st.Failures, i+1)
			}
			wait := time.Until(st.NextAttempt)
			if wait < lo || wait > want {
				t.Fatalf("wait after failure %d = %v, want in [%v, %v]", i+1, wait, lo, want)
			}
			time.Sleep(wait)
			total += wait
		}
		synctest.Wait()
		if st := c.State(); st.Attempts != len(ceil)+1 || st.Refusals != 0 {
			t.Errorf("state after %v: %+v", total, st)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

func TestRunThrottledBackoff(t *testing.T) {
	p := sharedPKI(t)
	srv := startRefusingServer(t, packets.ErrRefusedServerUnavailable)
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		// The bubble's clock starts in 2000; TLS verification needs the
		// real date, which is what Config.Time is for.
		clock := bubbleClock(wall)
		const lo, hi = time.Second, 21 * time.Second
		c, err := New(Config{Host: srv.addr, DeviceID: "d1", Certificate: p.device, RootCAs: p.roots, ReconnectMin: lo, ReconnectMax: hi, Logger: testLogger(t), Time: clock})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for i := range 4 {
			synctest.Wait()
			st := c.State()
			wait := st.NextAttempt.Sub(clock())
			if st.Failures != i+1 || wait < 11*time.Second || wait > hi {
				t.Fatalf("throttled failure %d: failures %d, wait %v, want in [11s, 21s]", i+1, st.Failures, wait)
			}
			time.Sleep(wait)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

// bubbleClock returns a clock that reads wall plus the fake time elapsed in
// the synctest bubble since the call.
func bubbleClock(wall time.Time) func() time.Time {
	start := time.Now()
	return func() time.Time { return wall.Add(time.Since(start)) }
}

func TestRunTwice(t *testing.T) {
	p := sharedPKI(t)
	srv := startRefusingServer(t, packets.ErrRefusedServerUnavailable)
	c, err := New(Config{Host: srv.addr, DeviceID: "d1", Certificate: p.device, RootCAs: p.roots, ReconnectMin: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-srv.connects // the first Run is going
	if err := c.Run(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second Run = %v, want an already-running error", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestNotConnected(t *testing.T) {
	p := sharedPKI(t)
	c, err := New(Config{Host: "127.0.0.1:1", DeviceID: "d1", Certificate: p.device})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.Publish(ctx, Message{Body: []byte("x")}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Publish = %v, want ErrNotConnected", err)
	}
	if _, _, err := c.GetTwin(ctx); !errors.Is(err, ErrNotConnected) {
		t.Errorf("GetTwin = %v, want ErrNotConnected", err)
	}
	if _, err := c.UpdateReported(ctx, map[string]int{"a": 1}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("UpdateReported = %v, want ErrNotConnected", err)
	}
	if _, err := c.UpdateReported(ctx, []int{1}); err == nil || errors.Is(err, ErrNotConnected) {
		t.Errorf("UpdateReported(array) = %v, want a must-be-an-object error", err)
	}
	if err := c.Publish(ctx, Message{Properties: map[string]string{"$x": "1"}}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Publish(invalid) = %v, want ErrInvalidMessage before the connection check", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.WaitConnected(wctx); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitConnected = %v, want context.Canceled", err)
	}
	select {
	case <-c.Connected():
		t.Error("Connected() is closed before Run")
	default:
	}
}
