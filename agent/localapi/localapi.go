// Package localapi is trackerd's local control API: HTTP over a unix socket
// in the runtime directory, for the technician's commands on the serial
// console (trackerd status, reprovision, flush, log-level).
//
// The socket is created mode 0660; its group is tracker-admin when that group
// exists, so a technician in that group needs no root. Nothing secret is ever
// served: status shows certificate subjects, thumbprints and expiry only.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// SocketName is the socket's file name in the runtime directory.
const SocketName = "trackerd.sock"

// AdminGroup is given access to the socket when it exists.
const AdminGroup = "tracker-admin"

// Backend is what the daemon provides to the API.
type Backend interface {
	Status() any
	Reprovision(ctx context.Context) error
	// Flush drains the buffer to the hub; it returns the records still
	// unsent when ctx expires or the buffer is empty.
	Flush(ctx context.Context) (unsent int, err error)
	SetLogLevel(level string) error
}

// Server serves the API on a unix socket.
type Server struct {
	path string
	ln   net.Listener
	srv  *http.Server
}

// Listen creates the socket in dir (removing a stale one left by a crash)
// and returns a server ready to Serve.
func Listen(dir string, b Backend) (*Server, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("localapi: runtime directory: %w", err)
	}
	path := filepath.Join(dir, SocketName)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("localapi: %s is in use: is another trackerd running?", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("localapi: %w", err)
	}
	if g, err := user.LookupGroup(AdminGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			_ = os.Chown(path, -1, gid) // best effort: only possible when we own the group
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /v1/reprovision", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Reprovision(r.Context()); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /v1/flush", func(w http.ResponseWriter, r *http.Request) {
		timeout := 2 * time.Minute
		if s := r.URL.Query().Get("timeout"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "timeout must be a positive duration such as 30s"})
				return
			}
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		unsent, err := b.Flush(ctx)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"unsent": unsent, "drained": unsent == 0})
	})
	mux.HandleFunc("POST /v1/log-level", func(w http.ResponseWriter, r *http.Request) {
		if err := b.SetLogLevel(r.URL.Query().Get("level")); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	return &Server{path: path, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Serve serves until ctx is cancelled, then shuts down and removes the
// socket.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		os.Remove(s.path)
		return fmt.Errorf("localapi: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-errc
	os.Remove(s.path)
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
}

// Client talks to a running trackerd.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket in runtime directory dir.
func NewClient(dir string) *Client {
	path := filepath.Join(dir, SocketName)
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Do calls method on path and decodes the JSON answer into out (may be
// nil). Errors say what to check when trackerd is not running.
func (c *Client) Do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://trackerd"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			if os.IsPermission(ne.Err) || errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("no permission on %s: run as root or as a member of group %s", c.path, AdminGroup)
			}
			return fmt.Errorf("trackerd is not running (no socket at %s): check 'systemctl status trackerd'", c.path)
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("trackerd answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], body...)
		return nil
	}
	return json.Unmarshal(body, out)
}
