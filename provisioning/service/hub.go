package service

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// Device statuses and connection states in the IoT Hub registry.
const (
	DeviceEnabled      = "enabled"
	DeviceDisabled     = "disabled"
	DeviceConnected    = "Connected"
	DeviceDisconnected = "Disconnected"
)

// Authentication types of a hub device.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthNone                 = "none"
)

// Bounds of a direct method's response timeout.
const (
	MinMethodTimeout = 5 * time.Second
	MaxMethodTimeout = 300 * time.Second
)

// Device is an identity in the IoT Hub registry.
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId,omitempty"`
	ETag                       string          `json:"etag,omitempty"`
	Status                     string          `json:"status,omitempty"`
	StatusReason               string          `json:"statusReason,omitempty"`
	StatusUpdatedTime          time.Time       `json:"statusUpdatedTime,omitzero"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime time.Time       `json:"connectionStateUpdatedTime,omitzero"`
	LastActivityTime           time.Time       `json:"lastActivityTime,omitzero"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount,omitempty"`
	Capabilities               *Capabilities   `json:"capabilities,omitempty"`
	Authentication             *Authentication `json:"authentication,omitempty"`
}

// Authentication is how a hub device authenticates.
type Authentication struct {
	Type           string          `json:"type"`
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey holds a SAS device's keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// X509Thumbprint holds the SHA-1 or SHA-256 thumbprints (hex) of a
// self-signed device's certificates.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint,omitempty"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// Twin is a device twin: tags, desired and reported properties.
type Twin struct {
	DeviceID         string         `json:"deviceId"`
	ETag             string         `json:"etag,omitempty"`
	Version          int64          `json:"version,omitempty"`
	Status           string         `json:"status,omitempty"`
	ConnectionState  string         `json:"connectionState,omitempty"`
	LastActivityTime time.Time      `json:"lastActivityTime,omitzero"`
	Tags             map[string]any `json:"tags,omitempty"`
	Properties       TwinProperties `json:"properties"`
	Capabilities     *Capabilities  `json:"capabilities,omitempty"`
}

// TwinProperties are a twin's desired and reported properties, each with
// its "$version" and, when read, "$metadata".
type TwinProperties struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

// TwinPatch is a partial twin update: keys set to nil are removed.
type TwinPatch struct {
	Tags       map[string]any  `json:"tags,omitempty"`
	Properties *TwinPatchProps `json:"properties,omitempty"`
}

// TwinPatchProps is the desired-properties part of a [TwinPatch]; a
// service cannot write reported properties.
type TwinPatchProps struct {
	Desired map[string]any `json:"desired,omitempty"`
}

// HubClient calls the IoT Hub service API. It is safe for concurrent use.
type HubClient struct {
	r *rest
}

// NewHub returns a client for the IoT hub of cs.
func NewHub(cs ConnectionString, opts Options) (*HubClient, error) {
	r, err := newRest(cs, opts, HubAPIVersion)
	if err != nil {
		return nil, err
	}
	return &HubClient{r: r}, nil
}

// HostName returns the hub host name of the connection string.
func (c *HubClient) HostName() string { return c.r.cs.HostName }

// GetDevice returns device id from the registry.
func (c *HubClient) GetDevice(ctx context.Context, id string) (*Device, error) {
	return exchange[Device](ctx, c.r, call{method: http.MethodGet, path: "/devices/" + seg(id)})
}

// CreateDevice creates d (no If-Match: fails with [ErrConflict] if the ID
// exists) and returns the stored device.
func (c *HubClient) CreateDevice(ctx context.Context, d *Device) (*Device, error) {
	in := *d
	in.ETag = ""
	return exchange[Device](ctx, c.r, call{method: http.MethodPut, path: "/devices/" + seg(d.DeviceID), body: &in})
}

// PutDevice updates d, which must exist, and returns the stored device.
// With d.ETag set the update is conditional on it ([ErrPreconditionFailed]
// on mismatch); without, If-Match is * (any version).
func (c *HubClient) PutDevice(ctx context.Context, d *Device) (*Device, error) {
	return exchange[Device](ctx, c.r, call{method: http.MethodPut, path: "/devices/" + seg(d.DeviceID),
		header: http.Header{"If-Match": []string{quoteETag(d.ETag)}}, body: d})
}

// DeleteDevice deletes device id from the registry, which also closes its
// connection and drops its pending cloud-to-device messages. With etag set
// the delete is conditional on it; otherwise If-Match is * (any version).
func (c *HubClient) DeleteDevice(ctx context.Context, id, etag string) error {
	_, err := c.r.do(ctx, call{method: http.MethodDelete, path: "/devices/" + seg(id),
		header: http.Header{"If-Match": []string{quoteETag(etag)}}})
	return err
}

// ListDevices returns up to top devices of the registry (top 0 means 1000,
// the service's maximum), sorted by device ID.
func (c *HubClient) ListDevices(ctx context.Context, top int) ([]Device, error) {
	if top <= 0 {
		top = 1000
	}
	cl := call{method: http.MethodGet, path: "/devices", query: map[string][]string{"top": {strconv.Itoa(top)}}}
	p, err := exchange[[]Device](ctx, c.r, cl)
	if err != nil {
		return nil, err
	}
	out := *p
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceID < out[j].DeviceID })
	return out, nil
}

// GetTwin returns the twin of device id.
func (c *HubClient) GetTwin(ctx context.Context, id string) (*Twin, error) {
	return exchange[Twin](ctx, c.r, call{method: http.MethodGet, path: "/twins/" + seg(id)})
}

// UpdateTwin applies patch to the twin of device id and returns the
// updated twin. With etag set the update is conditional on it; otherwise
// If-Match is * (any version).
func (c *HubClient) UpdateTwin(ctx context.Context, id string, patch TwinPatch, etag string) (*Twin, error) {
	return exchange[Twin](ctx, c.r, call{method: http.MethodPatch, path: "/twins/" + seg(id),
		header: http.Header{"If-Match": []string{quoteETag(etag)}}, body: patch})
}

// methodRequest is the body of POST /twins/{id}/methods.
type methodRequest struct {
	MethodName      string          `json:"methodName"`
	Payload         json.RawMessage `json:"payload"`
	ResponseTimeout int             `json:"responseTimeoutInSeconds"`
	ConnectTimeout  int             `json:"connectTimeoutInSeconds"`
}

// methodResult is its answer.
type methodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// InvokeMethod calls direct method name on device id with payload (any
// JSON-encodable value; nil sends null) and waits up to timeout (clamped
// to [MinMethodTimeout]..[MaxMethodTimeout]) for the device's answer. It
// returns the status and payload the device answered with. A device that
// is not connected gives an error matching [ErrNotFound]; a device that
// does not answer in time gives one matching [ErrTimeout].
func (c *HubClient) InvokeMethod(ctx context.Context, id, name string, payload any, timeout time.Duration) (status int, response json.RawMessage, err error) {
	timeout = min(max(timeout, MinMethodTimeout), MaxMethodTimeout)
	raw, err := json.Marshal(payload)
	if err != nil {
		return 0, nil, fmt.Errorf("service: invoke %s on %s: encode payload: %w", name, id, err)
	}
	cl := call{
		method: http.MethodPost, path: "/twins/" + seg(id) + "/methods",
		body:    methodRequest{MethodName: name, Payload: raw, ResponseTimeout: int(timeout / time.Second)},
		timeout: timeout + 30*time.Second,
		noRetry: true,
	}
	res, err := exchange[methodResult](ctx, c.r, cl)
	if err != nil {
		return 0, nil, err
	}
	return res.Status, res.Payload, nil
}

// SendC2D queues a cloud-to-device message with body and application
// properties props for device id. The hub delivers it when the device is
// connected and subscribed; deleting the device drops it.
//
// It posts to /devices/{id}/messages/deviceBound with the properties as
// iothub-app-{name} headers, the HTTPS message format of IoT Hub, which the
// local emulator accepts. Azure IoT Hub itself takes cloud-to-device
// messages from services over AMQP only, so against Azure this call fails
// with an *[APIError].
func (c *HubClient) SendC2D(ctx context.Context, id string, body []byte, props map[string]string) error {
	h := http.Header{}
	for k, v := range props {
		h.Set("iothub-app-"+k, v)
	}
	h.Set("iothub-messageid", requestID())
	h.Set("iothub-to", "/devices/"+seg(id)+"/messages/deviceBound")
	_, err := c.r.do(ctx, call{
		method: http.MethodPost, path: "/devices/" + seg(id) + "/messages/deviceBound",
		header: h, body: body, contentType: "application/json; charset=utf-8", noRetry: true,
	})
	return err
}
