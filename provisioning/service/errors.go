package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Sentinel errors for the outcomes callers branch on. An *[APIError] matches
// the one that fits its HTTP status (errors.Is).
var (
	// ErrNotFound means the object (group, enrollment, registration record,
	// device) does not exist, or a device is not connected for a direct
	// method.
	ErrNotFound = errors.New("service: not found")
	// ErrPreconditionFailed means the If-Match ETag no longer matches: the
	// object changed since it was read (HTTP 412).
	ErrPreconditionFailed = errors.New("service: etag mismatch")
	// ErrConflict means the object already exists or is in a conflicting
	// state (HTTP 409).
	ErrConflict = errors.New("service: conflict")
	// ErrUnauthorized means the service refused the SAS token: wrong key,
	// wrong policy, or a policy without the needed permission (HTTP 401 or
	// 403).
	ErrUnauthorized = errors.New("service: unauthorized")
	// ErrThrottled means the service kept answering 429 after the client's
	// retries.
	ErrThrottled = errors.New("service: throttled")
	// ErrTimeout means a direct method or the gateway timed out (HTTP 504).
	ErrTimeout = errors.New("service: timed out")
)

// APIError is a failed service call: the HTTP status and what the service
// said about it.
type APIError struct {
	// Method and Path identify the call ("PUT", "/enrollmentGroups/g1").
	Method, Path string
	// Status is the HTTP status code.
	Status int
	// Code is the service's error code: DPS's numeric errorCode (such as
	// "404202") or IoT Hub's name (such as "DeviceNotFound"); it may be
	// empty.
	Code string
	// Message is the service's explanation, if any.
	Message string
	// TrackingID identifies the call in the service's logs, if given.
	TrackingID string
}

// Error describes the call, the status and what the service said.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service: %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.TrackingID != "" {
		fmt.Fprintf(&b, " [tracking id %s]", e.TrackingID)
	}
	return b.String()
}

// Is maps the status to the package's sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrPreconditionFailed:
		return e.Status == http.StatusPreconditionFailed
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrThrottled:
		return e.Status == http.StatusTooManyRequests
	case ErrTimeout:
		return e.Status == http.StatusGatewayTimeout
	}
	return false
}

// IsNotFound reports whether err is a 404 from the service.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsPreconditionFailed reports whether err is a 412 (ETag mismatch).
func IsPreconditionFailed(err error) bool { return errors.Is(err, ErrPreconditionFailed) }

// IsConflict reports whether err is a 409.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsUnauthorized reports whether the service refused the credentials (401
// or 403).
func IsUnauthorized(err error) bool { return errors.Is(err, ErrUnauthorized) }

// parseAPIError builds an *APIError from a failed response. It understands
// DPS's {"errorCode":404202,"trackingId":…,"message":…} and IoT Hub's
// {"Message":"ErrorCode:DeviceNotFound;…","ExceptionMessage":…} and
// {"code":…} shapes, and the x-ms-error-code / iothub-errorcode headers.
func parseAPIError(method, path string, resp *http.Response, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) == nil {
		lower := make(map[string]json.RawMessage, len(raw))
		for k, v := range raw {
			lower[strings.ToLower(k)] = v
		}
		e.Code = jsonScalar(lower["errorcode"])
		if e.Code == "" {
			e.Code = jsonScalar(lower["code"])
		}
		e.Message = jsonScalar(lower["message"])
		e.TrackingID = jsonScalar(lower["trackingid"])
		// IoT Hub packs its code into Message: "ErrorCode:DeviceNotFound;text".
		if rest, ok := strings.CutPrefix(e.Message, "ErrorCode:"); ok {
			code, text, _ := strings.Cut(rest, ";")
			if e.Code == "" {
				e.Code = code
			}
			e.Message = text
		}
		if e.Message == "" {
			e.Message = jsonScalar(lower["exceptionmessage"])
		}
	} else if len(body) > 0 && len(body) < 512 && !strings.ContainsAny(string(body), "<>") {
		e.Message = strings.TrimSpace(string(body))
	}
	if e.Code == "" {
		e.Code = resp.Header.Get("x-ms-error-code")
	}
	if e.Code == "" {
		e.Code = resp.Header.Get("iothub-errorcode")
	}
	if e.TrackingID == "" {
		e.TrackingID = resp.Header.Get("x-ms-request-id")
	}
	return e
}

// jsonScalar renders a JSON string or number as text; anything else gives "".
func jsonScalar(v json.RawMessage) string {
	if len(v) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(v, &n) == nil {
		if _, err := strconv.ParseFloat(n.String(), 64); err == nil {
			return n.String()
		}
	}
	return ""
}
