package dps

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUsername(t *testing.T) {
	tests := []struct {
		scope, reg, version, want string
	}{
		{"0ne00000001", "tracker-1", "", "0ne00000001/registrations/tracker-1/api-version=2019-03-31"},
		{"0ne00000001", "tracker-1", "trackerd/1.2.0", "0ne00000001/registrations/tracker-1/api-version=2019-03-31&ClientVersion=trackerd%2F1.2.0"},
		{"0ne00000001", "tracker-1", "trackerd 1.2 (linux; arm)", "0ne00000001/registrations/tracker-1/api-version=2019-03-31&ClientVersion=trackerd%201.2%20%28linux%3B%20arm%29"},
		{"0ne00000001", "tracker-1", "a&b=c+d", "0ne00000001/registrations/tracker-1/api-version=2019-03-31&ClientVersion=a%26b%3Dc%2Bd"},
	}
	for _, tt := range tests {
		if got := username(tt.scope, tt.reg, tt.version); got != tt.want {
			t.Errorf("username(%q, %q, %q) = %q, want %q", tt.scope, tt.reg, tt.version, got, tt.want)
		}
	}
}

func TestTopics(t *testing.T) {
	if got, want := registerTopicFor("7"), "$dps/registrations/PUT/iotdps-register/?$rid=7"; got != want {
		t.Errorf("registerTopicFor = %q, want %q", got, want)
	}
	if got, want := pollTopicFor("8", "4.d0a67190.e7173b7b-1"), "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.d0a67190.e7173b7b-1"; got != want {
		t.Errorf("pollTopicFor = %q, want %q", got, want)
	}
	// An operation ID with query characters stays one parameter.
	if got := pollTopicFor("9", "a&b=c"); !strings.HasSuffix(got, "operationId=a%26b%3Dc") {
		t.Errorf("pollTopicFor with & = %q, want it escaped", got)
	}
}

func TestParseResponseTopic(t *testing.T) {
	tests := []struct {
		topic   string
		want    response
		wantErr bool
	}{
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=3", want: response{Status: 202, RID: "1", RetryAfter: 3 * time.Second, HasRetryAfter: true}},
		{topic: "$dps/registrations/res/200/?$rid=abc-123", want: response{Status: 200, RID: "abc-123"}},
		{topic: "$dps/registrations/res/429/?retry-after=0&$rid=5", want: response{Status: 429, RID: "5", HasRetryAfter: true}},
		{topic: "$dps/registrations/res/401/?$rid=2&extra=1", want: response{Status: 401, RID: "2"}},
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=1.5", want: response{Status: 202, RID: "1", RetryAfter: 1500 * time.Millisecond, HasRetryAfter: true}},
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=-1", wantErr: true},
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=soon", wantErr: true},
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=99999999", wantErr: true},
		{topic: "$dps/registrations/res/abc/?$rid=1", wantErr: true},
		{topic: "$dps/registrations/res/20/?$rid=1", wantErr: true},
		{topic: "$dps/registrations/res/200?$rid=1", wantErr: true},
		{topic: "$dps/registrations/res/200/?rid=1", wantErr: true},
		{topic: "$dps/registrations/res/200/?$rid=%zz", wantErr: true},
		{topic: "$iothub/twin/res/200/?$rid=1", wantErr: true},
		{topic: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseResponseTopic(tt.topic)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseResponseTopic(%q) = %+v, want error", tt.topic, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseResponseTopic(%q) error %v", tt.topic, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("parseResponseTopic(%q) mismatch (-want +got):\n%s", tt.topic, diff)
		}
	}
}

func FuzzParseResponseTopic(f *testing.F) {
	f.Add("$dps/registrations/res/202/?$rid=1&retry-after=3")
	f.Add("$dps/registrations/res/200/?$rid=x")
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := parseResponseTopic(topic)
		if err != nil {
			return
		}
		if r.RID == "" || r.Status < 100 || r.Status > 999 || r.RetryAfter < 0 {
			t.Fatalf("parseResponseTopic(%q) = %+v: accepted an invalid response", topic, r)
		}
	})
}

func TestParseOperationStatus(t *testing.T) {
	assigned := `{"operationId":"4.x","status":"Assigned","registrationState":{"registrationId":"dev1","createdDateTimeUtc":"2020-04-10T03:11:13.0276997Z","assignedHub":"contoso.azure-devices.net","deviceId":"dev1","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2020-04-10T03:11:13.2096201Z","etag":"IjYx","payload":{"fw":"1.2"}}}`
	op, rs, err := parseOperationStatus([]byte(assigned))
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != StatusAssigned || op.OperationID != "4.x" {
		t.Errorf("op = %+v, want status assigned (lower-cased), operation 4.x", op)
	}
	if rs == nil || rs.AssignedHub != "contoso.azure-devices.net" || rs.DeviceID != "dev1" || rs.Substatus != "initialAssignment" || rs.ETag != "IjYx" || string(rs.Payload) != `{"fw":"1.2"}` {
		t.Errorf("registrationState = %+v", rs)
	}
	if got := parseTime(rs.CreatedDateTimeUTC); !got.Equal(time.Date(2020, 4, 10, 3, 11, 13, 27699700, time.UTC)) {
		t.Errorf("parseTime(created) = %v", got)
	}
	if !parseTime("yesterday").IsZero() || !parseTime("").IsZero() {
		t.Errorf("parseTime of junk is not zero")
	}

	for _, body := range []string{"", " ", "null", `"x"`, `[]`, `{}`, `{"operationId":"x"}`, `{"status":""}`, `{"status":"assigning","registrationState":"x"}`} {
		if _, _, err := parseOperationStatus([]byte(body)); err == nil {
			t.Errorf("parseOperationStatus(%q) = nil error, want error", body)
		}
	}
	op, rs, err = parseOperationStatus([]byte(`{"operationId":"o","status":"assigning"}`))
	if err != nil || rs != nil || op.Status != StatusAssigning {
		t.Errorf("parseOperationStatus(assigning) = %+v, %+v, %v", op, rs, err)
	}
}

func TestParseErrorBody(t *testing.T) {
	eb := parseErrorBody([]byte(`{"errorCode":401002,"trackingId":"8ad0","message":"Invalid certificate.","timestampUtc":"2020-04-10T05:24:22.4718526Z"}`))
	if eb.ErrorCode != 401002 || eb.TrackingID != "8ad0" || eb.Message != "Invalid certificate." {
		t.Errorf("parseErrorBody = %+v", eb)
	}
	if eb := parseErrorBody([]byte("<html>")); eb.ErrorCode != 0 || eb.Message != "" {
		t.Errorf("parseErrorBody(junk) = %+v, want zero", eb)
	}
}

func TestPollDelay(t *testing.T) {
	min := 2 * time.Second
	tests := []struct {
		name string
		r    response
		want time.Duration
	}{
		{"retry-after 3", response{RetryAfter: 3 * time.Second, HasRetryAfter: true}, 3 * time.Second},
		{"retry-after 0 is floored", response{RetryAfter: 0, HasRetryAfter: true}, 2 * time.Second},
		{"retry-after 1 is floored", response{RetryAfter: time.Second, HasRetryAfter: true}, 2 * time.Second},
		{"no retry-after", response{}, DefaultPollInterval},
		{"long retry-after honoured", response{RetryAfter: 90 * time.Second, HasRetryAfter: true}, 90 * time.Second},
	}
	for _, tt := range tests {
		if got := pollDelay(tt.r, min); got != tt.want {
			t.Errorf("%s: pollDelay = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := pollDelay(response{}, 5*time.Second); got != 5*time.Second {
		t.Errorf("pollDelay with min 5s = %v, want 5s", got)
	}
}

func TestRegisterBody(t *testing.T) {
	tests := []struct {
		payload any
		want    string
	}{
		{nil, `{"registrationId":"dev1"}`},
		{map[string]string{"fw": "1.2.0", "model": "ct-2"}, `{"registrationId":"dev1","payload":{"fw":"1.2.0","model":"ct-2"}}`},
		{json.RawMessage(`{"a":[1,2]}`), `{"registrationId":"dev1","payload":{"a":[1,2]}}`},
		{struct {
			Firmware string `json:"firmwareVersion"`
		}{"2.0"}, `{"registrationId":"dev1","payload":{"firmwareVersion":"2.0"}}`},
	}
	for _, tt := range tests {
		got, err := registerBody("dev1", tt.payload)
		if err != nil || string(got) != tt.want {
			t.Errorf("registerBody(%v) = %s, %v; want %s", tt.payload, got, err, tt.want)
		}
	}
	if _, err := registerBody("dev1", func() {}); err == nil {
		t.Errorf("registerBody(func) = nil error, want error")
	}
}

func TestSplitEndpoint(t *testing.T) {
	tests := []struct {
		in, host, port string
		wantErr        bool
	}{
		{in: "global.azure-devices-provisioning.net", host: "global.azure-devices-provisioning.net", port: "8883"},
		{in: "localhost:18883", host: "localhost", port: "18883"},
		{in: "127.0.0.1:8883", host: "127.0.0.1", port: "8883"},
		{in: "[::1]:9000", host: "::1", port: "9000"},
		{in: "[::1]", host: "::1", port: "8883"},
		{in: "", wantErr: true},
		{in: "mqtts://dps.example.net", wantErr: true},
		{in: "dps.example.net/path", wantErr: true},
		{in: "dps.example.net:0", wantErr: true},
		{in: "dps.example.net:99999", wantErr: true},
		{in: "dps.example.net:port", wantErr: true},
		{in: ":8883", wantErr: true},
	}
	for _, tt := range tests {
		host, port, err := splitEndpoint(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("splitEndpoint(%q) = %q, %q; want error", tt.in, host, port)
			}
			continue
		}
		if err != nil || host != tt.host || port != tt.port {
			t.Errorf("splitEndpoint(%q) = %q, %q, %v; want %q, %q", tt.in, host, port, err, tt.host, tt.port)
		}
	}
}

func TestErrorMatching(t *testing.T) {
	tests := []struct {
		name string
		err  error
		is   []error
		not  []error
	}{
		{"connack 5", &ConnackError{Code: 5}, []error{ErrUnauthorized}, []error{ErrProtocol, ErrDisabled}},
		{"connack 4", &ConnackError{Code: 4}, []error{ErrUnauthorized}, nil},
		{"connack 2", &ConnackError{Code: 2}, []error{ErrUnauthorized}, nil},
		{"connack 3", &ConnackError{Code: 3}, nil, []error{ErrUnauthorized, ErrProtocol}},
		{"connack 1", &ConnackError{Code: 1}, []error{ErrProtocol}, []error{ErrUnauthorized}},
		{"401", &FailedError{Status: 401, ErrorCode: 401002, Message: "Invalid certificate."}, []error{ErrUnauthorized}, []error{ErrDisabled}},
		{"403 disabled", &FailedError{Status: 403, ErrorCode: 403000, Message: "Enrollment is disabled."}, []error{ErrDisabled}, []error{ErrUnauthorized}},
		{"404", &FailedError{Status: 404, Message: "Device not found"}, nil, []error{ErrUnauthorized, ErrDisabled}},
		{"failed op", &FailedError{Status: 200, ErrorCode: 400209, Message: "hub disabled", OperationID: "o"}, nil, []error{ErrDisabled, ErrUnauthorized}},
		{"tls unknown ca", &TLSError{Problem: ServerUnknownAuthority}, []error{ErrServerUntrusted}, []error{ErrUnauthorized}},
		{"tls clock", &TLSError{Problem: ServerNotValidNow}, []error{ErrServerUntrusted}, nil},
		{"tls device rejected", &TLSError{Problem: DeviceCertRejected}, []error{ErrUnauthorized}, []error{ErrServerUntrusted, ErrDeviceCertExpired}},
		{"tls device expired", &TLSError{Problem: DeviceCertExpired}, []error{ErrUnauthorized, ErrDeviceCertExpired}, []error{ErrServerUntrusted}},
		{"tls other", &TLSError{Problem: HandshakeFailed}, nil, []error{ErrUnauthorized, ErrServerUntrusted}},
	}
	for _, tt := range tests {
		wrapped := fmt.Errorf("context: %w", tt.err)
		for _, target := range tt.is {
			if !errors.Is(wrapped, target) {
				t.Errorf("%s: errors.Is(%v, %v) = false, want true", tt.name, wrapped, target)
			}
		}
		for _, target := range tt.not {
			if errors.Is(wrapped, target) {
				t.Errorf("%s: errors.Is(%v, %v) = true, want false", tt.name, wrapped, target)
			}
		}
		if msg := tt.err.Error(); !strings.HasPrefix(msg, "dps: ") {
			t.Errorf("%s: message %q lacks the dps: prefix", tt.name, msg)
		}
	}
	te := &ThrottledError{Status: 429, RetryAfter: 5 * time.Second, Message: "slow down"}
	if msg := te.Error(); !strings.Contains(msg, "429") || !strings.Contains(msg, "5s") || !strings.Contains(msg, "slow down") {
		t.Errorf("ThrottledError message %q lacks status, wait or message", msg)
	}
}

func FuzzParseOperationStatus(f *testing.F) {
	f.Add([]byte(`{"operationId":"o","status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","payload":{"a":1}}}`))
	f.Add([]byte(`{"operationId":"o","status":"assigning"}`))
	f.Add([]byte(`{"errorCode":401002,"message":"Invalid certificate."}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		op, rs, err := parseOperationStatus(body)
		if err != nil {
			return
		}
		if op.Status == "" || op.Status != strings.ToLower(op.Status) {
			t.Fatalf("accepted status %q", op.Status)
		}
		if rs != nil && len(op.RegistrationState) == 0 {
			t.Fatalf("registration state parsed from nothing")
		}
		_ = parseErrorBody(body)
	})
}
