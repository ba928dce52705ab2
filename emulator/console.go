package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coldchain/tracker/emulator/internal/sas"
)

// The web console: a single page (plain HTML, JavaScript and inline SVG,
// embedded in the binary) served on the HTTPS listener under ConsolePath,
// with a small JSON API under ConsolePath+"api/" and a server-sent events
// stream for the live view. See console_api.go for the read side and
// console_actions.go for the operator actions.
//
// Security model: the operator logs in with the console token from
// emulator.json (printed by trackerctl emulator at start) or with the hub's
// service connection string, verified like a REST call's SAS token. The
// session is a random cookie (HttpOnly, Secure, SameSite=Strict, __Host-
// prefix) whose hash keys a server-side session; actions are POSTs that
// must carry the session's CSRF token in a header, a JSON content type and,
// when the browser sends one, a same-origin Origin. The page's
// Content-Security-Policy allows only its own scripts and styles.

// ConsolePath is where the web console is served on the HTTPS listener.
const ConsolePath = "/console/"

//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

const (
	consoleCookie     = "__Host-tracker-console"
	consoleCSRFHeader = "X-CSRF-Token"
	// consoleSessionTTL is how long a console session lasts after login.
	consoleSessionTTL = 12 * time.Hour
	// consoleMaxSessions bounds the session table; the oldest session is
	// dropped when a login would exceed it.
	consoleMaxSessions = 64
	// consoleMaxFailures failed logins within consoleFailureWindow make
	// further logins wait (429) until the window has passed.
	consoleMaxFailures   = 10
	consoleFailureWindow = time.Minute
	// consoleLoginBody bounds a login request body.
	consoleLoginBody = 16 << 10
)

// consoleState is the console's share of the emulator: its token, sessions,
// failed-login record and the certificates it has seen. The zero value is
// ready; the mutex guards everything but the mux, which once guards.
type consoleState struct {
	once sync.Once
	mux  *http.ServeMux

	mu       sync.Mutex
	token    string
	sessions map[string]*consoleSession // hex SHA-256 of the cookie value -> session
	failures []time.Time
	leaves   map[string]string // lower-case registration ID -> SHA-256 thumbprint stored
}

type consoleSession struct {
	csrf    string
	created time.Time
	expires time.Time
}

// consoleToken returns the console login token, creating it on first use.
// It is random per emulator process and written to emulator.json.
func (e *Emulator) consoleToken() string {
	c := &e.console
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" {
		c.token = randToken()
	}
	return c.token
}

func randToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// serveConsole serves the console's pages and API; it reports false for
// requests that are not the console's (the service APIs get them). The
// bare root redirects to the console.
func (e *Emulator) serveConsole(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	switch {
	case (p == "/" || p == strings.TrimSuffix(ConsolePath, "/")) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		http.Redirect(w, r, ConsolePath, http.StatusFound)
		return true
	case !strings.HasPrefix(p, ConsolePath):
		return false
	}
	e.console.once.Do(func() { e.console.mux = e.consoleMux() })
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	e.console.mux.ServeHTTP(w, r)
	return true
}

func (e *Emulator) consoleMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET "+ConsolePath+"{$}", e.consoleStatic("index.html"))
	m.HandleFunc("GET "+ConsolePath+"console.js", e.consoleStatic("console.js"))
	m.HandleFunc("GET "+ConsolePath+"console.css", e.consoleStatic("console.css"))
	api := ConsolePath + "api/"
	m.HandleFunc("POST "+api+"login", e.consoleLogin)
	m.HandleFunc("POST "+api+"logout", e.consoleAuthed(true, e.consoleLogout))
	m.HandleFunc("GET "+api+"session", e.consoleAuthed(false, e.consoleSessionInfo))
	m.HandleFunc("GET "+api+"state", e.consoleAuthed(false, e.consoleStateAPI))
	m.HandleFunc("GET "+api+"telemetry", e.consoleAuthed(false, e.consoleTelemetryAPI))
	m.HandleFunc("GET "+api+"stream", e.consoleAuthed(false, e.consoleStream))
	m.HandleFunc("POST "+api+"devices/{id}/flush", e.consoleAuthed(true, e.consoleFlush))
	m.HandleFunc("POST "+api+"devices/{id}/disenroll", e.consoleAuthed(true, e.consoleDisenrollAPI))
	m.HandleFunc("POST "+api+"devices/{id}/deprovision", e.consoleAuthed(true, e.consoleDeprovisionAPI))
	m.HandleFunc(ConsolePath, func(w http.ResponseWriter, r *http.Request) {
		consoleError(w, http.StatusNotFound, fmt.Sprintf("no console page or API at %s %s", r.Method, r.URL.Path))
	})
	return m
}

// consoleStatic serves one embedded file with a strict content security
// policy: the page loads only its own script and style sheet and talks only
// to its own origin.
func (e *Emulator) consoleStatic(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, err := consoleFiles.ReadFile("console/" + name)
		if err != nil {
			consoleError(w, http.StatusInternalServerError, "console: embedded file missing: "+name)
			return
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h := w.Header()
		h.Set("Content-Type", ct)
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(raw)
		}
	}
}

// consoleError answers an API request with {"error": msg}.
func consoleError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// consoleLogin checks a credential and starts a session.
func (e *Emulator) consoleLogin(w http.ResponseWriter, r *http.Request) {
	if msg := consoleRequestProblem(r); msg != "" {
		consoleError(w, http.StatusForbidden, msg)
		return
	}
	now := time.Now()
	if wait := e.consoleLoginBlocked(now); wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		consoleError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins; try again in %s", wait.Round(time.Second)))
		return
	}
	var body struct {
		Credential string `json:"credential"`
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, consoleLoginBody))
	if err != nil {
		consoleError(w, http.StatusBadRequest, "read login request: "+err.Error())
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		consoleError(w, http.StatusBadRequest, `login body must be JSON {"credential": "..."}: `+err.Error())
		return
	}
	if why := e.consoleCheckCredential(strings.TrimSpace(body.Credential), now); why != "" {
		e.consoleLoginFailed(now)
		consoleError(w, http.StatusUnauthorized, why)
		return
	}
	id, csrf := randToken(), randToken()
	c := &e.console
	c.mu.Lock()
	if c.sessions == nil {
		c.sessions = map[string]*consoleSession{}
	}
	for k, s := range c.sessions {
		if now.After(s.expires) {
			delete(c.sessions, k)
		}
	}
	for len(c.sessions) >= consoleMaxSessions {
		var oldest string
		for k, s := range c.sessions {
			if oldest == "" || s.created.Before(c.sessions[oldest].created) {
				oldest = k
			}
		}
		delete(c.sessions, oldest)
	}
	s := &consoleSession{csrf: csrf, created: now, expires: now.Add(consoleSessionTTL)}
	c.sessions[hashToken(id)] = s
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: consoleCookie, Value: id, Path: "/", Expires: s.expires,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	e.log.Info("console login", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"csrf": csrf, "expires": s.expires.UTC()})
}

// consoleCheckCredential returns "" when cred is the console token or the
// hub's service connection string, else what is wrong with it.
func (e *Emulator) consoleCheckCredential(cred string, now time.Time) string {
	if cred == "" {
		return "no credential: paste the console token or the hub connection string (both are in emulator.json)"
	}
	token := e.consoleToken()
	if subtle.ConstantTimeCompare([]byte(cred), []byte(token)) == 1 {
		return ""
	}
	if !strings.Contains(strings.ToLower(cred), "sharedaccesskey") {
		return "wrong console token: use consoleToken from emulator.json, or the hub connection string (hubConnectionString)"
	}
	cs, err := sas.ParseConnectionString(cred)
	if err != nil {
		return "not a connection string the hub accepts: " + err.Error()
	}
	key, err := cs.Key()
	if err != nil {
		return "not a connection string the hub accepts: " + err.Error()
	}
	// Verify exactly as a service REST call would be: a SAS token derived
	// from the string goes through the hub's authorization.
	req := &http.Request{Header: http.Header{}}
	req.Header.Set("Authorization", sas.NewToken(cs.HostName, cs.SharedAccessKeyName, key, now.Add(time.Minute)))
	if aerr := e.authorize(req, apiHub); aerr != nil {
		return "connection string rejected: " + aerr.Message + " (use hubConnectionString from emulator.json)"
	}
	return ""
}

func (e *Emulator) consoleLoginBlocked(now time.Time) time.Duration {
	c := &e.console
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.failures[:0]
	for _, t := range c.failures {
		if now.Sub(t) < consoleFailureWindow {
			kept = append(kept, t)
		}
	}
	c.failures = kept
	if len(kept) < consoleMaxFailures {
		return 0
	}
	return consoleFailureWindow - now.Sub(kept[0])
}

func (e *Emulator) consoleLoginFailed(now time.Time) {
	c := &e.console
	c.mu.Lock()
	c.failures = append(c.failures, now)
	c.mu.Unlock()
}

func hashToken(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// consoleRequestProblem checks what every state-changing console request
// must satisfy besides the CSRF token: a JSON body type (which a cross-site
// HTML form cannot send) and, when present, a same-origin Origin header.
func consoleRequestProblem(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return "console requests must be sent as Content-Type: application/json"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("cross-origin request from %q refused", o)
		}
	}
	return ""
}

// consoleSessionOf returns the session of r's cookie, or nil.
func (e *Emulator) consoleSessionOf(r *http.Request) (string, *consoleSession) {
	ck, err := r.Cookie(consoleCookie)
	if err != nil || ck.Value == "" {
		return "", nil
	}
	key := hashToken(ck.Value)
	c := &e.console
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[key]
	if s == nil {
		return "", nil
	}
	if time.Now().After(s.expires) {
		delete(c.sessions, key)
		return "", nil
	}
	return key, s
}

// consoleAuthed wraps a console API handler: it needs a session and, for
// actions, the session's CSRF token and a clean request.
func (e *Emulator) consoleAuthed(action bool, h func(w http.ResponseWriter, r *http.Request, key string, s *consoleSession)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, s := e.consoleSessionOf(r)
		if s == nil {
			consoleError(w, http.StatusUnauthorized, "not logged in (or the session expired): log in with the console token or the hub connection string")
			return
		}
		if action {
			if msg := consoleRequestProblem(r); msg != "" {
				consoleError(w, http.StatusForbidden, msg)
				return
			}
			got := r.Header.Get(consoleCSRFHeader)
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				consoleError(w, http.StatusForbidden, "missing or wrong "+consoleCSRFHeader+" header: reload the console")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		h(w, r, key, s)
	}
}

func (e *Emulator) consoleLogout(w http.ResponseWriter, r *http.Request, key string, _ *consoleSession) {
	c := &e.console
	c.mu.Lock()
	delete(c.sessions, key)
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"loggedOut": true})
}

func (e *Emulator) consoleSessionInfo(w http.ResponseWriter, _ *http.Request, _ string, s *consoleSession) {
	writeJSON(w, http.StatusOK, map[string]any{
		"csrf":    s.csrf,
		"expires": s.expires.UTC(),
		"hub":     e.hubHost(),
		"idScope": e.meta.IDScope,
	})
}

// consoleLive reports whether the session key still exists (a stream ends
// when its session is logged out or expires).
func (e *Emulator) consoleLive(key string) bool {
	c := &e.console
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[key]
	return s != nil && time.Now().Before(s.expires)
}
