package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API versions sent by default: the stable versions the official service
// SDKs send.
const (
	DPSAPIVersion = "2021-10-01"
	HubAPIVersion = "2021-04-12"
)

// Defaults for [Options] fields left zero.
const (
	DefaultTokenTTL       = time.Hour
	DefaultRequestTimeout = 60 * time.Second
	DefaultMaxRetries     = 4
	// maxRetryDelay caps how long one 429 answer can make a client wait.
	maxRetryDelay = 30 * time.Second
	// maxBody caps what is read of a response body.
	maxBody = 32 << 20
)

// Options configures a DPS or hub client. The zero value talks to
// https://{HostName} with the default HTTP client and API version.
type Options struct {
	// HTTPClient sends the requests; nil means a client with the system's
	// trust store. For the emulator, give one whose transport trusts its CA.
	HTTPClient *http.Client
	// BaseURL replaces https://{HostName}, for example
	// "https://127.0.0.1:8443" for the local emulator. The SAS token is still
	// signed for the connection string's HostName.
	BaseURL string
	// APIVersion replaces [DPSAPIVersion] or [HubAPIVersion].
	APIVersion string
	// TokenTTL is how long each SAS token is valid (default
	// [DefaultTokenTTL]); tokens are renewed when less than a quarter of it
	// is left.
	TokenTTL time.Duration
	// RequestTimeout bounds each call that has no longer timeout of its own
	// (default [DefaultRequestTimeout]).
	RequestTimeout time.Duration
	// MaxRetries is how often a call answered with 429 Too Many Requests is
	// retried (default [DefaultMaxRetries]; negative disables retries).
	MaxRetries int
	// UserAgent replaces the default User-Agent header.
	UserAgent string
	// Now returns the current time, for tests; nil means time.Now.
	Now func() time.Time
}

// rest is the machinery shared by the DPS and hub clients: URL building,
// SAS tokens, JSON bodies, error decoding and 429 retries.
type rest struct {
	base       *url.URL
	cs         ConnectionString
	key        []byte
	hc         *http.Client
	apiVersion string
	ttl        time.Duration
	timeout    time.Duration
	retries    int
	userAgent  string
	now        func() time.Time

	mu       sync.Mutex
	token    string
	tokenExp time.Time
}

func newRest(cs ConnectionString, opts Options, defaultVersion string) (*rest, error) {
	if cs.HostName == "" || cs.KeyName == "" || cs.Key == "" {
		return nil, errors.New("service: connection string is incomplete; use ParseConnectionString")
	}
	key, err := cs.KeyBytes()
	if err != nil {
		return nil, err
	}
	base := opts.BaseURL
	if base == "" {
		base = "https://" + cs.HostName
	}
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("service: base URL %q: want https://host[:port]", base)
	}
	r := &rest{
		base: u, cs: cs, key: key, hc: opts.HTTPClient, apiVersion: opts.APIVersion,
		ttl: opts.TokenTTL, timeout: opts.RequestTimeout, retries: opts.MaxRetries,
		userAgent: opts.UserAgent, now: opts.Now,
	}
	if r.hc == nil {
		r.hc = &http.Client{}
	}
	if r.apiVersion == "" {
		r.apiVersion = defaultVersion
	}
	if r.ttl <= 0 {
		r.ttl = DefaultTokenTTL
	}
	if r.timeout <= 0 {
		r.timeout = DefaultRequestTimeout
	}
	if r.retries == 0 {
		r.retries = DefaultMaxRetries
	}
	if r.userAgent == "" {
		r.userAgent = "coldchain-tracker-service/1"
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// sasToken returns a valid token, renewing it when a quarter of its
// lifetime is left.
func (r *rest) sasToken() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.token == "" || r.tokenExp.Sub(now) < r.ttl/4 {
		r.tokenExp = now.Add(r.ttl)
		r.token = SASToken(r.cs.HostName, r.cs.KeyName, r.key, r.tokenExp)
	}
	return r.token
}

// call is one REST request.
type call struct {
	method string
	path   string // already escaped
	query  url.Values
	header http.Header
	body   any // JSON-encoded unless []byte
	// contentType overrides the JSON content type for []byte bodies.
	contentType string
	timeout     time.Duration
	// noRetry disables 429 retries (requests with side effects that must
	// not be repeated are still safe to retry on 429, which means "not
	// processed", but callers may opt out).
	noRetry bool
}

// response is a successful answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends c, retrying 429 answers, and returns the response for a 2xx
// status or an *APIError.
func (r *rest) do(ctx context.Context, c call) (*response, error) {
	var payload []byte
	contentType := ""
	switch b := c.body.(type) {
	case nil:
	case []byte:
		payload, contentType = b, c.contentType
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("service: %s %s: encode body: %w", c.method, c.path, err)
		}
		contentType = "application/json; charset=utf-8"
	}
	q := url.Values{}
	for k, v := range c.query {
		q[k] = v
	}
	q.Set("api-version", r.apiVersion)
	u := *r.base
	u.RawPath = r.base.EscapedPath() + c.path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = q.Encode()
	timeout := c.timeout
	if timeout <= 0 {
		timeout = r.timeout
	}
	for attempt := 0; ; attempt++ {
		resp, err := r.once(ctx, c, u.String(), payload, contentType, timeout)
		if err != nil {
			return nil, err
		}
		if resp.status >= 200 && resp.status < 300 {
			return resp, nil
		}
		apiErr := parseAPIError(c.method, c.path, &http.Response{StatusCode: resp.status, Header: resp.header}, resp.body)
		if resp.status != http.StatusTooManyRequests || c.noRetry || r.retries < 0 || attempt >= r.retries {
			return nil, apiErr
		}
		delay := retryDelay(resp.header.Get("Retry-After"), attempt)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("service: %s %s: waiting to retry after 429: %w", c.method, c.path, ctx.Err())
		case <-t.C:
		}
	}
}

func (r *rest) once(ctx context.Context, c call, target string, payload []byte, contentType string, timeout time.Duration) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("service: %s %s: %w", c.method, c.path, err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", r.sasToken())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", r.userAgent)
	req.Header.Set("Request-Id", requestID())
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		// The URL holds no secret (the token is in a header), so the
		// transport's error can be returned as is.
		return nil, fmt.Errorf("service: %s %s: %w", c.method, c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("service: %s %s: read response: %w", c.method, c.path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// retryDelay honours Retry-After (seconds) and otherwise backs off 1 s,
// 2 s, 4 s…, capped at maxRetryDelay.
func retryDelay(header string, attempt int) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(header)); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, maxRetryDelay)
	}
	return min(time.Second<<min(attempt, 5), maxRetryDelay)
}

// decode unmarshals a response body into out, naming the call on error.
func decode(c call, resp *response, out any) error {
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("service: %s %s: decode %d response: %w", c.method, c.path, resp.status, err)
	}
	return nil
}

// exchange sends cl and decodes the answer into a new T.
func exchange[T any](ctx context.Context, r *rest, cl call) (*T, error) {
	resp, err := r.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	var out T
	if err := decode(cl, resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// requestID returns a random UUID (version 4) for the Request-Id header.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// seg escapes one path segment (an ID) the way encodeURIComponent does.
func seg(id string) string { return url.PathEscape(id) }

// ifMatch returns a header with If-Match set to etag, or nil when etag is
// empty.
func ifMatch(etag string) http.Header {
	if etag == "" {
		return nil
	}
	return http.Header{"If-Match": []string{etag}}
}

// quoteETag returns the If-Match value for an IoT Hub call: etag in double
// quotes, or the wildcard * (unquoted, as RFC 9110 writes it) when etag is
// empty.
func quoteETag(etag string) string {
	if etag == "" || etag == "*" {
		return "*"
	}
	if strings.HasPrefix(etag, `"`) && strings.HasSuffix(etag, `"`) && len(etag) >= 2 {
		return etag
	}
	return `"` + etag + `"`
}
