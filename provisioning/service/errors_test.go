package service

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func fmtV(v any) string { return fmt.Sprintf("%v", v) }

func TestParseAPIError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   APIError
		is     error
	}{
		{"dps", 404, nil, `{"errorCode":404202,"trackingId":"t-1","message":"Enrollment not found.","timestampUtc":"2026-01-01T00:00:00Z"}`,
			APIError{Status: 404, Code: "404202", Message: "Enrollment not found.", TrackingID: "t-1"}, ErrNotFound},
		{"hub message code", 404, nil, `{"Message":"ErrorCode:DeviceNotFound;Device d1 not registered","ExceptionMessage":"Tracking ID:abc"}`,
			APIError{Status: 404, Code: "DeviceNotFound", Message: "Device d1 not registered"}, ErrNotFound},
		{"hub code field", 412, nil, `{"code":"PreconditionFailed","message":"etag mismatch"}`,
			APIError{Status: 412, Code: "PreconditionFailed", Message: "etag mismatch"}, ErrPreconditionFailed},
		{"header code", 409, http.Header{"X-Ms-Error-Code": {"409001"}}, ``,
			APIError{Status: 409, Code: "409001"}, ErrConflict},
		{"plain text", 401, nil, "bad token", APIError{Status: 401, Message: "bad token"}, ErrUnauthorized},
		{"html ignored", 502, nil, "<html>bad gateway</html>", APIError{Status: 502}, nil},
		{"gateway timeout", 504, nil, `{"errorCode":504101}`, APIError{Status: 504, Code: "504101"}, ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			got := parseAPIError("GET", "/x", &http.Response{StatusCode: tt.status, Header: h}, []byte(tt.body))
			tt.want.Method, tt.want.Path = "GET", "/x"
			if *got != tt.want {
				t.Errorf("parseAPIError = %#v, want %#v", *got, tt.want)
			}
			var err error = fmt.Errorf("wrapped: %w", got)
			for _, s := range []error{ErrNotFound, ErrPreconditionFailed, ErrConflict, ErrUnauthorized, ErrTimeout, ErrThrottled} {
				if is := errors.Is(err, s); is != (s == tt.is) {
					t.Errorf("errors.Is(err, %v) = %v", s, is)
				}
			}
		})
	}
	if !IsNotFound(&APIError{Status: 404}) || IsNotFound(errors.New("x")) || !IsPreconditionFailed(&APIError{Status: 412}) || !IsConflict(&APIError{Status: 409}) || !IsUnauthorized(&APIError{Status: 403}) {
		t.Error("Is helpers disagree with the statuses")
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		header  string
		attempt int
		want    string
	}{
		{"3", 0, "3s"}, {"0", 2, "0s"}, {"9999", 0, "30s"}, {"", 0, "1s"}, {"", 2, "4s"}, {"soon", 10, "30s"},
	}
	for _, tt := range tests {
		if got := retryDelay(tt.header, tt.attempt).String(); got != tt.want {
			t.Errorf("retryDelay(%q, %d) = %s, want %s", tt.header, tt.attempt, got, tt.want)
		}
	}
}
