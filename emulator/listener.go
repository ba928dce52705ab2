package emulator

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectDeadline bounds the TLS handshake and the CONNECT packet of a new
// connection; mochi replaces the deadline with the keepalive once the client
// is connected.
const connectDeadline = 10 * time.Second

// listener is a mochi listener for MQTT over TLS that bounds how long a
// connection may take to send CONNECT and closes connections still waiting
// when the broker stops (mochi's own TCP listener would wait for them).
type listener struct {
	id   string
	addr string
	tls  *tls.Config
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	done  bool
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, addr string, cfg *tls.Config) *listener {
	return &listener{id: id, addr: addr, tls: cfg, conns: map[*trackedConn]struct{}{}}
}

// ID, Protocol, Address, Init, Serve and Close implement mochi's
// listeners.Listener.
func (l *listener) ID() string { return l.id }

// Protocol names the transport.
func (l *listener) Protocol() string { return "tcp+tls" }

// Address is the bound address once Init ran.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts connections until Close and hands each to mochi.
func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			return
		}
		raw.SetDeadline(time.Now().Add(connectDeadline))
		c := &trackedConn{Conn: tls.Server(raw, l.tls), l: l}
		l.mu.Lock()
		if l.done {
			l.mu.Unlock()
			raw.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			establish(l.id, c) // errors are the client's (bad TLS, refused CONNECT)
			c.Close()
		}()
	}
}

// Close disconnects the clients, stops accepting, closes connections that
// never sent CONNECT and waits for every connection goroutine.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return
	}
	l.done = true
	l.mu.Unlock()
	closeClients(l.id)
	if l.ln != nil {
		l.ln.Close()
	}
	l.mu.Lock()
	for c := range l.conns {
		c.Conn.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

type trackedConn struct {
	net.Conn
	l    *listener
	once sync.Once
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
