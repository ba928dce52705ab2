package dps

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Wire constants of the DPS device MQTT API (azure-protocol.md §1).
const (
	// APIVersion is the api-version the device API is spoken in; every
	// official SDK sends this one.
	APIVersion = "2019-03-31"
	// DefaultPort is the MQTT over TLS port of DPS.
	DefaultPort = "8883"

	responseFilter = "$dps/registrations/res/#"
	responsePrefix = "$dps/registrations/res/"
	registerTopic  = "$dps/registrations/PUT/iotdps-register/?$rid="
	pollTopic      = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
)

// Operation and registration statuses in DPS bodies.
const (
	StatusAssigning   = "assigning"
	StatusAssigned    = "assigned"
	StatusFailed      = "failed"
	StatusDisabled    = "disabled"
	StatusUnassigned  = "unassigned"
	statusRegistering = "registering" // Node SDK: re-send the register request
)

// username builds the CONNECT user name:
// {idScope}/registrations/{regId}/api-version=2019-03-31[&ClientVersion=...].
// There is no '?' before api-version, unlike IoT Hub's.
func username(idScope, regID, clientVersion string) string {
	u := idScope + "/registrations/" + regID + "/api-version=" + APIVersion
	if clientVersion != "" {
		u += "&ClientVersion=" + encodeURIComponent(clientVersion)
	}
	return u
}

// encodeURIComponent escapes s as JavaScript's encodeURIComponent and C#'s
// Uri.EscapeDataString do (space as %20, '/' as %2F), which is how the SDKs
// encode ClientVersion.
func encodeURIComponent(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func registerTopicFor(rid string) string { return registerTopic + rid }

func pollTopicFor(rid, operationID string) string {
	return pollTopic + rid + "&operationId=" + url.QueryEscape(operationID)
}

// response is one message DPS published on $dps/registrations/res/....
type response struct {
	Status        int           // the HTTP-like status in the topic
	RID           string        // $rid, echoed from the request
	RetryAfter    time.Duration // retry-after, when present
	HasRetryAfter bool
	Body          []byte
}

// parseResponseTopic reads $dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}].
func parseResponseTopic(topic string) (response, error) {
	var r response
	rest, ok := strings.CutPrefix(topic, responsePrefix)
	if !ok {
		return r, fmt.Errorf("topic %q is not a DPS response", topic)
	}
	code, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return r, fmt.Errorf("topic %q has no /? before its properties", topic)
	}
	status, err := strconv.Atoi(code)
	if err != nil || status < 100 || status > 999 {
		return r, fmt.Errorf("topic %q has no valid status code", topic)
	}
	r.Status = status
	q, err := url.ParseQuery(query)
	if err != nil {
		return r, fmt.Errorf("topic %q: properties: %w", topic, err)
	}
	r.RID = q.Get("$rid")
	if r.RID == "" {
		return r, fmt.Errorf("topic %q has no $rid", topic)
	}
	if ra := q.Get("retry-after"); ra != "" {
		secs, err := strconv.ParseFloat(ra, 64)
		if err != nil || secs < 0 || secs > 24*3600 {
			return r, fmt.Errorf("topic %q: invalid retry-after %q", topic, ra)
		}
		r.RetryAfter = time.Duration(secs * float64(time.Second))
		r.HasRetryAfter = true
	}
	return r, nil
}

// operationStatus is the body of a 200/202 answer
// (RegistrationOperationStatus).
type operationStatus struct {
	OperationID       string          `json:"operationId"`
	Status            string          `json:"status"`
	RegistrationState json.RawMessage `json:"registrationState"`
}

// registrationState holds the fields of DeviceRegistrationResult the client
// uses; the whole object is kept raw as well.
type registrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc"`
	AssignedHub            string          `json:"assignedHub"`
	DeviceID               string          `json:"deviceId"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus"`
	ErrorCode              int             `json:"errorCode"`
	ErrorMessage           string          `json:"errorMessage"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc"`
	ETag                   string          `json:"etag"`
	Payload                json.RawMessage `json:"payload"`
}

// errorBody is ProvisioningServiceErrorDetails, the body of error answers.
type errorBody struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	TimestampUTC string            `json:"timestampUtc"`
	Info         map[string]string `json:"info"`
}

// parseOperationStatus decodes a 2xx body. It must be a JSON object with a
// status; the registration state, when present, must be an object.
func parseOperationStatus(body []byte) (operationStatus, *registrationState, error) {
	var op operationStatus
	if err := json.Unmarshal(body, &op); err != nil {
		return op, nil, fmt.Errorf("body is not a registration operation status: %w", err)
	}
	op.Status = strings.ToLower(op.Status)
	if op.Status == "" {
		return op, nil, errors.New("body has no status")
	}
	if len(op.RegistrationState) == 0 || string(op.RegistrationState) == "null" {
		op.RegistrationState = nil
		return op, nil, nil
	}
	var rs registrationState
	if err := json.Unmarshal(op.RegistrationState, &rs); err != nil {
		return op, nil, fmt.Errorf("registrationState: %w", err)
	}
	return op, &rs, nil
}

// parseErrorBody decodes the body of an error answer. Bodies that are not
// the documented shape are tolerated: the status code still tells what
// happened.
func parseErrorBody(body []byte) errorBody {
	var e errorBody
	if json.Unmarshal(body, &e) != nil {
		return errorBody{}
	}
	return e
}

// parseTime reads DPS's timestamps ("2020-04-10T03:11:13.0276997Z"),
// returning the zero time for anything else.
func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// DefaultPollInterval is the wait before polling when DPS's answer has no
// retry-after, as in the Node and C# SDKs.
const DefaultPollInterval = 2 * time.Second

// pollDelay is how long to wait before the next request after an answer:
// retry-after when DPS sent one, else DefaultPollInterval, and never less
// than min (the DPS polling limit of 5 requests per 10 s means 2 s).
func pollDelay(r response, min time.Duration) time.Duration {
	d := DefaultPollInterval
	if r.HasRetryAfter {
		d = r.RetryAfter
	}
	if d < min {
		d = min
	}
	return d
}
