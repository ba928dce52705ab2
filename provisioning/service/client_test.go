package service

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a TLS test server that checks every request's SAS token and
// answers from a handler, keeping what it was sent. It checks the wire
// format only; behaviour is tested against the emulator.
type recorder struct {
	t    *testing.T
	srv  *httptest.Server
	key  []byte
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, RawPath, Query string
	Header                       http.Header
	Body                         string
}

func newRecorder(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body []byte)) (*recorder, ConnectionString) {
	t.Helper()
	rec := &recorder{t: t}
	rec.key, _ = base64.StdEncoding.DecodeString(testKey)
	rec.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), string(body)})
		rec.mu.Unlock()
		if err := rec.checkToken(r.Header.Get("Authorization")); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"errorCode":401002,"message":%q}`, err.Error())
			return
		}
		handle(w, r, body)
	}))
	t.Cleanup(rec.srv.Close)
	cs := ConnectionString{HostName: "fleet.example.net", KeyName: "owner", Key: testKey}
	return rec, cs
}

// checkToken verifies a token independently of SASToken.
func (rec *recorder) checkToken(tok string) error {
	rest, ok := strings.CutPrefix(tok, "SharedAccessSignature ")
	if !ok {
		return errors.New("no SharedAccessSignature prefix")
	}
	f, err := url.ParseQuery(rest)
	if err != nil {
		return err
	}
	se, err := strconv.ParseInt(f.Get("se"), 10, 64)
	if err != nil || time.Unix(se, 0).Before(time.Now()) {
		return errors.New("expired")
	}
	if f.Get("sr") != "fleet.example.net" || f.Get("skn") != "owner" {
		return fmt.Errorf("sr %q skn %q", f.Get("sr"), f.Get("skn"))
	}
	mac := hmac.New(sha256.New, rec.key)
	mac.Write([]byte(url.QueryEscape(f.Get("sr")) + "\n" + f.Get("se")))
	if base64.StdEncoding.EncodeToString(mac.Sum(nil)) != f.Get("sig") {
		return errors.New("bad signature")
	}
	return nil
}

func (rec *recorder) requests() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

func (rec *recorder) opts() Options {
	return Options{HTTPClient: rec.srv.Client(), BaseURL: rec.srv.URL}
}

func TestDPSRequests(t *testing.T) {
	rec, cs := newRecorder(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch {
		case r.Method == http.MethodPut:
			w.Write(body)
		case r.Method == http.MethodDelete && r.Header.Get("If-Match") == "stale":
			w.WriteHeader(http.StatusPreconditionFailed)
			w.Write([]byte(`{"errorCode":412002,"message":"etag mismatch","trackingId":"tr-9"}`))
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/query"):
			// Three pages of one item each.
			page := r.Header.Get("X-Ms-Continuation")
			next := map[string]string{"": "c1", "c1": "c2", "c2": ""}[page]
			if next != "" {
				w.Header().Set("X-Ms-Continuation", next)
			}
			fmt.Fprintf(w, `[{"registrationId":"dev-%s","status":"assigned","assignedHub":"hub","deviceId":"dev-%s","lastUpdatedDateTimeUtc":"2026-03-01T10:00:00.1234567Z"}]`, page, page)
		default:
			http.NotFound(w, r)
		}
	})
	c, err := NewDPS(cs, rec.opts())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	g, err := c.PutGroup(ctx, &EnrollmentGroup{EnrollmentGroupID: "grp/1 x", ETag: "e1", ProvisioningStatus: StatusEnabled})
	if err != nil {
		t.Fatalf("PutGroup: %v", err)
	}
	if g.EnrollmentGroupID != "grp/1 x" {
		t.Errorf("PutGroup returned %+v", g)
	}
	err = c.DeleteRegistration(ctx, "dev-1", "stale")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || !IsPreconditionFailed(err) || apiErr.TrackingID != "tr-9" || apiErr.Code != "412002" {
		t.Errorf("DeleteRegistration with stale etag: %v, want a 412 APIError with its tracking id", err)
	}
	regs, err := c.ListRegistrations(ctx, "grp1")
	if err != nil {
		t.Fatalf("ListRegistrations: %v", err)
	}
	if len(regs) != 3 || regs[2].RegistrationID != "dev-c2" || regs[0].LastUpdated.IsZero() {
		t.Errorf("ListRegistrations = %+v, want three pages' items", regs)
	}
	if _, err := c.GetGroup(ctx, "nope"); !IsNotFound(err) {
		t.Errorf("GetGroup(nope) = %v, want not found", err)
	}

	reqs := rec.requests()
	put := reqs[0]
	if put.RawPath != "/enrollmentGroups/grp%2F1%20x" || put.Header.Get("If-Match") != "e1" || put.Query != "api-version="+DPSAPIVersion {
		t.Errorf("PUT went to %s?%s with If-Match %q", put.RawPath, put.Query, put.Header.Get("If-Match"))
	}
	if ct := put.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("PUT Content-Type = %q", ct)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(put.Body), &sent); err != nil || sent["provisioningStatus"] != "enabled" {
		t.Errorf("PUT body = %s", put.Body)
	}
	if _, ok := sent["createdDateTimeUtc"]; ok {
		t.Errorf("PUT body sends an empty creation time: %s", put.Body)
	}
	q := reqs[2]
	if q.Method != http.MethodPost || q.Path != "/registrations/grp1/query" || q.Header.Get("X-Ms-Max-Item-Count") != strconv.Itoa(DefaultPageSize) || q.Body != `{"query":"*"}` {
		t.Errorf("query request = %+v", q)
	}
	if reqs[3].Header.Get("X-Ms-Continuation") != "c1" || reqs[4].Header.Get("X-Ms-Continuation") != "c2" {
		t.Errorf("continuation tokens not sent back: %q, %q", reqs[3].Header.Get("X-Ms-Continuation"), reqs[4].Header.Get("X-Ms-Continuation"))
	}
}

func TestRepeatedContinuationStops(t *testing.T) {
	rec, cs := newRecorder(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("X-Ms-Continuation", "same")
		w.Write([]byte(`[]`))
	})
	c, _ := NewDPS(cs, rec.opts())
	_, err := c.ListGroups(t.Context())
	if err == nil || !strings.Contains(err.Error(), "repeated continuation") {
		t.Fatalf("ListGroups against a looping server = %v, want an error", err)
	}
	if n := len(rec.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestHubRequests(t *testing.T) {
	rec, cs := newRecorder(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch {
		case r.URL.Path == "/twins/d1/methods":
			w.Write([]byte(`{"status":200,"payload":{"sealed":true}}`))
		case r.URL.Path == "/devices/d1/messages/deviceBound":
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodPut:
			w.Write(body)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"Message":"ErrorCode:DeviceNotFound;no such device","ExceptionMessage":""}`))
		}
	})
	c, err := NewHub(cs, rec.opts())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreateDevice(ctx, &Device{DeviceID: "d1", ETag: "x", Status: DeviceEnabled}); err != nil {
		t.Fatalf("CreateDevice: %v", err)
	}
	if _, err := c.PutDevice(ctx, &Device{DeviceID: "d1", ETag: "abc", Status: DeviceDisabled}); err != nil {
		t.Fatalf("PutDevice: %v", err)
	}
	if err := c.DeleteDevice(ctx, "d1", ""); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	status, payload, err := c.InvokeMethod(ctx, "d1", "deprovision", map[string]int{"drainTimeoutSeconds": 3}, time.Second)
	if err != nil || status != 200 || string(payload) != `{"sealed":true}` {
		t.Fatalf("InvokeMethod = %d, %s, %v", status, payload, err)
	}
	if err := c.SendC2D(ctx, "d1", []byte(`{"command":"deprovision"}`), map[string]string{"command": "deprovision"}); err != nil {
		t.Fatalf("SendC2D: %v", err)
	}
	_, err = c.GetDevice(ctx, "d2")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "DeviceNotFound" || !IsNotFound(err) {
		t.Errorf("GetDevice(d2) = %v, want DeviceNotFound", err)
	}

	reqs := rec.requests()
	if got := reqs[0].Header.Get("If-Match"); got != "" {
		t.Errorf("create sent If-Match %q", got)
	}
	if strings.Contains(reqs[0].Body, `"etag"`) {
		t.Errorf("create sent an etag: %s", reqs[0].Body)
	}
	if got := reqs[1].Header.Get("If-Match"); got != `"abc"` {
		t.Errorf("update If-Match = %q, want \"abc\" quoted", got)
	}
	if got := reqs[2].Header.Get("If-Match"); got != "*" {
		t.Errorf("delete If-Match = %q, want *", got)
	}
	if reqs[2].Query != "api-version="+HubAPIVersion {
		t.Errorf("delete query = %q", reqs[2].Query)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(reqs[3].Body), &m); err != nil {
		t.Fatal(err)
	}
	// A 1 s timeout is raised to the service's minimum of 5 s.
	if m["methodName"] != "deprovision" || m["responseTimeoutInSeconds"] != 5.0 || fmt.Sprint(m["payload"]) != "map[drainTimeoutSeconds:3]" {
		t.Errorf("method body = %s", reqs[3].Body)
	}
	if reqs[4].Header.Get("Iothub-App-Command") != "deprovision" || reqs[4].Body != `{"command":"deprovision"}` || reqs[4].Header.Get("Iothub-Messageid") == "" {
		t.Errorf("C2D request headers %v body %s", reqs[4].Header, reqs[4].Body)
	}
}

func TestRetryOn429(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	rec, cs := newRecorder(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n <= 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"registrationId":"d","status":"assigned"}`))
	})
	c, _ := NewDPS(cs, rec.opts())
	if _, err := c.GetRegistration(t.Context(), "d"); err != nil {
		t.Fatalf("GetRegistration after two 429s: %v", err)
	}
	opts := rec.opts()
	opts.MaxRetries = -1
	c2, _ := NewDPS(cs, opts)
	mu.Lock()
	calls = 0
	mu.Unlock()
	if _, err := c2.GetRegistration(t.Context(), "d"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("GetRegistration without retries = %v, want ErrThrottled", err)
	}
}

func TestBadKeyIsUnauthorized(t *testing.T) {
	rec, cs := newRecorder(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Write([]byte(`[]`))
	})
	cs.Key = base64.StdEncoding.EncodeToString([]byte("wrong key"))
	c, _ := NewDPS(cs, rec.opts())
	if _, err := c.ListGroups(t.Context()); !IsUnauthorized(err) {
		t.Fatalf("ListGroups with a wrong key = %v, want unauthorized", err)
	}
}

func TestTokenRenewal(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r, err := newRest(ConnectionString{HostName: "h", KeyName: "k", Key: testKey}, Options{
		TokenTTL: time.Hour, Now: func() time.Time { return now },
	}, DPSAPIVersion)
	if err != nil {
		t.Fatal(err)
	}
	first := r.sasToken()
	now = now.Add(40 * time.Minute)
	if r.sasToken() != first {
		t.Error("token renewed with 20 of 60 minutes left")
	}
	now = now.Add(6 * time.Minute)
	second := r.sasToken()
	if second == first || !strings.Contains(second, "se=1800006360") {
		t.Errorf("token with 14 minutes left = %q, want a renewed one expiring at 1800006360", second)
	}
}
