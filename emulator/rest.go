package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coldchain/tracker/emulator/internal/sas"
)

const maxBody = 1 << 20

func (e *Emulator) startHTTPS() error {
	ln, err := net.Listen("tcp", e.cfg.HTTPSAddr)
	if err != nil {
		return fmt.Errorf("emulator: listen https on %s: %w", e.cfg.HTTPSAddr, err)
	}
	e.httpLn = ln
	e.httpSrv = &http.Server{
		Handler:           e,
		TLSConfig:         e.tlsConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return e.ctx },
		ErrorLog:          nil,
	}
	return nil
}

// serveHTTPS starts serving the listener bound by startHTTPS.
func (e *Emulator) serveHTTPS() {
	ln := e.httpLn
	e.wgMu.Lock()
	e.wg.Add(1)
	e.wgMu.Unlock()
	go func() {
		defer e.wg.Done()
		if err := e.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("https server stopped", "err", err)
		}
	}()
}

// api says which service a request addresses.
type api int

const (
	apiDPS api = iota + 1
	apiHub
	apiControl
)

// ServeHTTP serves the DPS service API (/enrollmentGroups, /enrollments,
// /registrations), the IoT Hub service API (/devices, /twins) and the
// emulator's control API (/emulator/...), and the web console
// (ConsolePath).
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.serveConsole(w, r) { // the web console (console.go)
		return
	}
	segs, err := pathSegments(r.URL)
	if err != nil || len(segs) == 0 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var which api
	switch strings.ToLower(segs[0]) {
	case "enrollmentgroups", "enrollments", "registrations":
		which = apiDPS
	case "devices", "twins":
		which = apiHub
	case "emulator":
		which = apiControl
	default:
		writeHubError(w, &APIError{Status: 404, HubCode: "NotFound", Message: fmt.Sprintf("no such API: /%s", segs[0])})
		return
	}
	fail := func(aerr *APIError) {
		if which == apiDPS {
			writeDPSError(w, aerr)
		} else {
			writeHubError(w, aerr)
		}
	}
	if which == apiControl && len(segs) == 2 && segs[1] == "health" {
		writeJSON(w, 200, map[string]string{"status": "ok", "idScope": e.meta.IDScope})
		return
	}
	if aerr := e.authorize(r, which); aerr != nil {
		fail(aerr)
		return
	}
	if which != apiControl && r.URL.Query().Get("api-version") == "" {
		fail(badRequest(400001, "the api-version query parameter is required"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	switch which {
	case apiDPS:
		e.serveDPS(w, r, segs)
	case apiHub:
		e.serveHub(w, r, segs)
	case apiControl:
		e.serveControl(w, r, segs[1:])
	}
}

// pathSegments splits the escaped path and unescapes each segment, so IDs
// may contain encoded slashes or spaces.
func pathSegments(u *url.URL) ([]string, error) {
	var out []string
	for _, s := range strings.Split(strings.Trim(u.EscapedPath(), "/"), "/") {
		if s == "" {
			continue
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// authorize checks the SAS token of a service request: the DPS policy key
// for the DPS API, the hub owner key for the hub and control APIs.
func (e *Emulator) authorize(r *http.Request, which api) *APIError {
	unauthorized := func(msg string) *APIError {
		return &APIError{Status: 401, Code: 401002, HubCode: "IotHubUnauthorizedAccess", Message: msg}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauthorized("no Authorization header; send a SharedAccessSignature built from the connection string in emulator.json")
	}
	tok, err := sas.Parse(h)
	if err != nil {
		return unauthorized(err.Error())
	}
	policy, key := HubPolicy, e.hubKey
	if which == apiDPS {
		policy, key = DPSPolicy, e.dpsKey
	}
	if tok.KeyName != policy {
		return unauthorized(fmt.Sprintf("policy %q has no access here; use %s", tok.KeyName, policy))
	}
	host, _ := tok.ResourceHost()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !strings.EqualFold(host, e.cfg.HostName) {
		return unauthorized(fmt.Sprintf("token resource %q is not this service (%s)", tok.Resource, e.cfg.HostName))
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		return unauthorized("token rejected: " + err.Error())
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(raw)
}

// writeDPSError sends DPS's error body (ProvisioningServiceErrorDetails).
func writeDPSError(w http.ResponseWriter, aerr *APIError) {
	code := aerr.Code
	if code == 0 {
		code = aerr.Status * 1000
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	writeJSON(w, aerr.Status, newDPSError(code, aerr.Message))
}

// writeHubError sends IoT Hub's error body, whose Message the SDKs split at
// ";" into the error code and the text.
func writeHubError(w http.ResponseWriter, aerr *APIError) {
	code := aerr.HubCode
	if code == "" {
		code = http.StatusText(aerr.Status)
	}
	w.Header().Set("iothub-errorcode", code)
	writeJSON(w, aerr.Status, map[string]string{
		"Message":          "ErrorCode:" + code + ";" + aerr.Message,
		"ExceptionMessage": "Tracking ID:" + strings.ReplaceAll(newUUID(), "-", "") + "-G:0-TimeStamp:" + time.Now().UTC().Format("01/02/2006 15:04:05"),
	})
}

func readJSON(r *http.Request, v any) *APIError {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return badRequest(400004, "read request body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return badRequest(400004, "the request body is empty; send a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest(400004, "the request body is not valid JSON for this API: %v", err)
	}
	return nil
}

func methodNotAllowed(r *http.Request) *APIError {
	return &APIError{Status: 405, Code: 405000, HubCode: "MethodNotAllowed", Message: fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)}
}

// serveDPS routes the DPS service API.
func (e *Emulator) serveDPS(w http.ResponseWriter, r *http.Request, segs []string) {
	ifMatch := r.Header.Get("If-Match")
	fail := func(aerr *APIError) { writeDPSError(w, aerr) }
	kind := strings.ToLower(segs[0])
	switch {
	case len(segs) == 2 && segs[1] == "query" && r.Method == http.MethodPost && kind != "registrations":
		var items []any
		var aerr *APIError
		if kind == "enrollmentgroups" {
			gs, err := e.listEnrollmentGroups()
			sortByID(gs, func(g EnrollmentGroup) string { return g.EnrollmentGroupID })
			aerr = err
			for _, g := range gs {
				items = append(items, g)
			}
		} else {
			es, err := e.listEnrollments()
			sortByID(es, func(ie IndividualEnrollment) string { return ie.RegistrationID })
			aerr = err
			for _, ie := range es {
				items = append(items, ie)
			}
		}
		if aerr != nil {
			fail(aerr)
			return
		}
		itemType := "enrollment"
		if kind == "enrollmentgroups" {
			itemType = "enrollmentGroup"
		}
		writePage(w, r, items, itemType)
	case len(segs) == 3 && kind == "registrations" && segs[2] == "query" && r.Method == http.MethodPost:
		regs, aerr := e.listRegistrations(segs[1])
		if aerr != nil {
			fail(aerr)
			return
		}
		sortByID(regs, func(s RegistrationState) string { return s.RegistrationID })
		items := make([]any, len(regs))
		for i := range regs {
			items[i] = regs[i]
		}
		writePage(w, r, items, "deviceRegistration")
	case len(segs) == 3 && strings.EqualFold(segs[2], "attestationmechanism") && r.Method == http.MethodPost && kind != "registrations":
		var att AttestationMechanism
		var ok bool
		var err error
		if kind == "enrollmentgroups" {
			var g EnrollmentGroup
			g, ok, err = viewGet[EnrollmentGroup](e, bucketGroups, strings.ToLower(segs[1]))
			att = g.Attestation
		} else {
			var ie IndividualEnrollment
			ie, ok, err = viewGet[IndividualEnrollment](e, bucketEnrollments, strings.ToLower(segs[1]))
			att = ie.Attestation
		}
		if err != nil {
			fail(internalError(err))
			return
		}
		if !ok {
			fail(notFound(404201, "EnrollmentNotFound", "enrollment %q not found", segs[1]))
			return
		}
		writeJSON(w, 200, att)
	case len(segs) == 2:
		id := segs[1]
		switch kind {
		case "enrollmentgroups":
			switch r.Method {
			case http.MethodGet:
				g, aerr := e.getEnrollmentGroup(id)
				if aerr != nil {
					fail(aerr)
					return
				}
				writeJSON(w, 200, g)
			case http.MethodPut:
				var g EnrollmentGroup
				if aerr := readJSON(r, &g); aerr != nil {
					fail(aerr)
					return
				}
				if ifMatch == "" {
					ifMatch = g.ETag
				}
				out, aerr := e.putEnrollmentGroup(id, g, ifMatch)
				if aerr != nil {
					fail(aerr)
					return
				}
				writeJSON(w, 200, out)
			case http.MethodDelete:
				if aerr := e.deleteEnrollmentGroup(id, ifMatch); aerr != nil {
					fail(aerr)
					return
				}
				w.WriteHeader(204)
			default:
				fail(methodNotAllowed(r))
			}
		case "enrollments":
			switch r.Method {
			case http.MethodGet:
				ie, aerr := e.getEnrollment(id)
				if aerr != nil {
					fail(aerr)
					return
				}
				writeJSON(w, 200, ie)
			case http.MethodPut:
				var ie IndividualEnrollment
				if aerr := readJSON(r, &ie); aerr != nil {
					fail(aerr)
					return
				}
				if ifMatch == "" {
					ifMatch = ie.ETag
				}
				out, aerr := e.putEnrollment(id, ie, ifMatch)
				if aerr != nil {
					fail(aerr)
					return
				}
				writeJSON(w, 200, out)
			case http.MethodDelete:
				if aerr := e.deleteEnrollment(id, ifMatch); aerr != nil {
					fail(aerr)
					return
				}
				w.WriteHeader(204)
			default:
				fail(methodNotAllowed(r))
			}
		case "registrations":
			switch r.Method {
			case http.MethodGet:
				st, aerr := e.getRegistration(id)
				if aerr != nil {
					fail(aerr)
					return
				}
				writeJSON(w, 200, st)
			case http.MethodDelete:
				if aerr := e.deleteRegistration(id, ifMatch); aerr != nil {
					fail(aerr)
					return
				}
				w.WriteHeader(204)
			default:
				fail(methodNotAllowed(r))
			}
		}
	default:
		fail(notFound(404000, "NotFound", "no DPS API at %s %s", r.Method, r.URL.Path))
	}
}

// writePage answers a query with paging: x-ms-max-item-count limits the
// page, x-ms-continuation carries the offset of the next one.
func writePage(w http.ResponseWriter, r *http.Request, items []any, itemType string) {
	start := 0
	if c := r.Header.Get("x-ms-continuation"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			writeDPSError(w, badRequest(400004, "x-ms-continuation %q is not a token this service issued", c))
			return
		}
		start = min(n, len(items))
	}
	end := len(items)
	if m := r.Header.Get("x-ms-max-item-count"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n <= 0 {
			writeDPSError(w, badRequest(400004, "x-ms-max-item-count %q must be a positive number", m))
			return
		}
		end = min(start+n, len(items))
		w.Header().Set("x-ms-max-item-count", m)
	}
	if end < len(items) {
		w.Header().Set("x-ms-continuation", strconv.Itoa(end))
	}
	w.Header().Set("x-ms-item-type", itemType)
	page := items[start:end]
	if page == nil {
		page = []any{}
	}
	writeJSON(w, 200, page)
}

// serveHub routes the IoT Hub service API.
func (e *Emulator) serveHub(w http.ResponseWriter, r *http.Request, segs []string) {
	ifMatch := r.Header.Get("If-Match")
	fail := func(aerr *APIError) { writeHubError(w, aerr) }
	kind := strings.ToLower(segs[0])
	switch {
	case kind == "devices" && len(segs) == 1 && r.Method == http.MethodGet:
		top := 1000
		if t := r.URL.Query().Get("top"); t != "" {
			n, err := strconv.Atoi(t)
			if err != nil || n <= 0 {
				fail(badRequest(400004, "top %q must be a positive number", t))
				return
			}
			top = n
		}
		devs, aerr := e.listDevices(top)
		if aerr != nil {
			fail(aerr)
			return
		}
		if devs == nil {
			devs = []Device{}
		}
		writeJSON(w, 200, devs)
	case kind == "devices" && len(segs) == 2:
		id := segs[1]
		switch r.Method {
		case http.MethodGet:
			d, aerr := e.getDevice(id)
			if aerr != nil {
				fail(aerr)
				return
			}
			writeJSON(w, 200, d)
		case http.MethodPut:
			var d Device
			if aerr := readJSON(r, &d); aerr != nil {
				fail(aerr)
				return
			}
			out, aerr := e.putDevice(id, d, ifMatch)
			if aerr != nil {
				fail(aerr)
				return
			}
			writeJSON(w, 200, out)
		case http.MethodDelete:
			if aerr := e.deleteDevice(id, ifMatch); aerr != nil {
				fail(aerr)
				return
			}
			w.WriteHeader(204)
		default:
			fail(methodNotAllowed(r))
		}
	case kind == "devices" && len(segs) == 4 && strings.EqualFold(segs[2], "messages") && strings.EqualFold(segs[3], "deviceBound") && r.Method == http.MethodPost:
		e.serveC2D(w, r, segs[1])
	case kind == "devices" && len(segs) == 3 && strings.EqualFold(segs[2], "commands") && r.Method == http.MethodDelete:
		if _, aerr := e.getDevice(segs[1]); aerr != nil {
			fail(aerr)
			return
		}
		n := e.purgeC2D(segs[1])
		writeJSON(w, 200, map[string]any{"deviceId": segs[1], "totalMessagesPurged": n})
	case kind == "twins" && len(segs) == 2:
		id := segs[1]
		switch r.Method {
		case http.MethodGet:
			t, aerr := e.getTwin(id)
			if aerr != nil {
				fail(aerr)
				return
			}
			writeJSON(w, 200, t)
		case http.MethodPatch, http.MethodPut:
			var p twinPatch
			if aerr := readJSON(r, &p); aerr != nil {
				fail(aerr)
				return
			}
			t, aerr := e.updateTwin(id, p, ifMatch, r.Method == http.MethodPut)
			if aerr != nil {
				fail(aerr)
				return
			}
			writeJSON(w, 200, t)
		default:
			fail(methodNotAllowed(r))
		}
	case kind == "twins" && len(segs) == 3 && segs[2] == "methods" && r.Method == http.MethodPost:
		var req struct {
			MethodName               string          `json:"methodName"`
			Payload                  json.RawMessage `json:"payload"`
			ResponseTimeoutInSeconds *float64        `json:"responseTimeoutInSeconds"`
			ConnectTimeoutInSeconds  *float64        `json:"connectTimeoutInSeconds"`
		}
		if aerr := readJSON(r, &req); aerr != nil {
			fail(aerr)
			return
		}
		resp, conn := 30*time.Second, time.Duration(0)
		if v := req.ResponseTimeoutInSeconds; v != nil {
			if *v < 0 || *v > 300 {
				fail(badRequest(400004, "responseTimeoutInSeconds %v must be between 0 and 300", *v))
				return
			}
			if *v > 0 {
				resp = time.Duration(*v * float64(time.Second))
			}
		}
		if v := req.ConnectTimeoutInSeconds; v != nil {
			if *v < 0 || *v > 300 {
				fail(badRequest(400004, "connectTimeoutInSeconds %v must be between 0 and 300", *v))
				return
			}
			conn = time.Duration(*v * float64(time.Second))
		}
		res, aerr := e.invokeMethod(r.Context(), segs[1], req.MethodName, req.Payload, resp, conn)
		if aerr != nil {
			fail(aerr)
			return
		}
		writeJSON(w, 200, res)
	default:
		fail(&APIError{Status: 404, HubCode: "NotFound", Message: fmt.Sprintf("no IoT Hub API at %s %s", r.Method, r.URL.Path)})
	}
}

// serveC2D sends a cloud-to-device message: the body is the payload; the
// properties come from headers as in IoT Hub's HTTPS message format
// (iothub-messageid, iothub-correlationid, iothub-userid, iothub-expiry,
// Content-Type, Content-Encoding, and iothub-app-{name} for application
// properties). This endpoint is the emulator's: Azure's service SDKs send
// C2D over AMQP.
func (e *Emulator) serveC2D(w http.ResponseWriter, r *http.Request, id string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeHubError(w, badRequest(400004, "read body: %v", err))
		return
	}
	m := C2DMessage{
		Payload:         body,
		MessageID:       r.Header.Get("iothub-messageid"),
		CorrelationID:   r.Header.Get("iothub-correlationid"),
		UserID:          r.Header.Get("iothub-userid"),
		Expiry:          r.Header.Get("iothub-expiry"),
		ContentType:     r.Header.Get("Content-Type"),
		ContentEncoding: r.Header.Get("Content-Encoding"),
		Properties:      map[string]string{},
	}
	for k, v := range r.Header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "iothub-app-") && len(v) > 0 {
			m.Properties[lk[len("iothub-app-"):]] = v[0]
		}
	}
	if aerr := e.sendC2D(id, m); aerr != nil {
		writeHubError(w, aerr)
		return
	}
	w.WriteHeader(204)
}

// serveControl is the emulator's own API: faults, status, events.
func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request, segs []string) {
	fail := func(aerr *APIError) { writeHubError(w, aerr) }
	path := strings.Join(segs, "/")
	switch {
	case path == "faults" && r.Method == http.MethodGet:
		writeJSON(w, 200, e.faults.State())
	case path == "faults" && r.Method == http.MethodPost:
		var spec FaultSpec
		if aerr := readJSON(r, &spec); aerr != nil {
			fail(aerr)
			return
		}
		if err := e.faults.Apply(spec); err != nil {
			fail(badRequest(400004, "%v", err))
			return
		}
		writeJSON(w, 200, e.faults.State())
	case path == "faults" && r.Method == http.MethodDelete:
		e.faults.Clear()
		writeJSON(w, 200, e.faults.State())
	case path == "status" && r.Method == http.MethodGet:
		writeJSON(w, 200, e.Status())
	case path == "info" && r.Method == http.MethodGet:
		writeJSON(w, 200, e.Info())
	case path == "events" && r.Method == http.MethodGet:
		var since int64
		if s := r.URL.Query().Get("since"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				fail(badRequest(400004, "since %q must be an event sequence number", s))
				return
			}
			since = n
		}
		out := []Event{}
		for _, ev := range e.Events() {
			if ev.Seq > since {
				out = append(out, ev)
			}
		}
		writeJSON(w, 200, out)
	default:
		fail(&APIError{Status: 404, HubCode: "NotFound", Message: fmt.Sprintf("no control API at %s %s (try GET /emulator/status, GET|POST|DELETE /emulator/faults, GET /emulator/events)", r.Method, r.URL.Path)})
	}
}

// Status summarises the emulator for the control API and the CLI.
type Status struct {
	IDScope          string           `json:"idScope"`
	ConnectedDevices []string         `json:"connectedDevices"`
	Messages         int64            `json:"messages"`
	Registrations    map[string]int64 `json:"registerRequests"`
	Faults           FaultState       `json:"faults"`
}

// Status returns the emulator's current state.
func (e *Emulator) Status() Status {
	st := Status{IDScope: e.meta.IDScope, ConnectedDevices: e.ConnectedDevices(), Faults: e.faults.State(), Registrations: map[string]int64{}}
	if e.sink != nil {
		e.sink.mu.Lock()
		st.Messages = e.sink.seq
		e.sink.mu.Unlock()
	}
	e.mu.Lock()
	for k, v := range e.regCounts {
		st.Registrations[k] = v
	}
	e.mu.Unlock()
	return st
}
