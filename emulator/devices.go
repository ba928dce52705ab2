package emulator

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deviceIDPattern is IoT Hub's rule for device IDs: up to 128 characters
// from a-z A-Z 0-9 - . % _ * ? ! ( ) , : = @ $ '.
var deviceIDPattern = regexp.MustCompile(`^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$`)

func checkDeviceID(id string) *APIError {
	if !deviceIDPattern.MatchString(id) {
		return badRequest(400004, "device ID %q must be 1-128 characters of letters, digits and - . %% _ * ? ! ( ) , : = @ $ '", id)
	}
	return nil
}

func deviceNotFound(id string) *APIError {
	return notFound(404001, "DeviceNotFound", "Device %s not registered", id)
}

// withRuntime fills the fields of a device that are not stored: connection
// state, activity and queued C2D messages.
func (e *Emulator) withRuntime(d Device) Device {
	e.mu.Lock()
	defer e.mu.Unlock()
	d.ConnectionState = "Disconnected"
	if e.hub[d.DeviceID] != nil {
		d.ConnectionState = "Connected"
	}
	d.ConnectionStateUpdatedTime = e.connTimes[d.DeviceID]
	d.LastActivityTime = e.activity[d.DeviceID]
	d.CloudToDeviceMessageCount = len(e.c2d[d.DeviceID])
	return d
}

// Device returns a hub device identity.
func (e *Emulator) Device(id string) (Device, error) {
	d, aerr := e.getDevice(id)
	if aerr != nil {
		return d, aerr
	}
	return d, nil
}

func (e *Emulator) getDevice(id string) (Device, *APIError) {
	d, ok, err := viewGet[Device](e, bucketDevices, id)
	if err != nil {
		return d, internalError(err)
	}
	if !ok {
		return d, deviceNotFound(id)
	}
	return e.withRuntime(d), nil
}

func (e *Emulator) listDevices(top int) ([]Device, *APIError) {
	var out []Device
	err := e.store.view(func(tx *bolt.Tx) error {
		return forEachJSON(tx, bucketDevices, func(_ string, d Device) error {
			if top <= 0 || len(out) < top {
				out = append(out, d)
			}
			return nil
		})
	})
	if err != nil {
		return nil, internalError(err)
	}
	for i := range out {
		out[i] = e.withRuntime(out[i])
	}
	return out, nil
}

// PutDevice creates a device (ifMatch "") or updates one (ifMatch "*" or
// its etag), as PUT /devices/{id} does.
func (e *Emulator) PutDevice(d Device, ifMatch string) (Device, error) {
	out, aerr := e.putDevice(d.DeviceID, d, ifMatch)
	if aerr != nil {
		return out, aerr
	}
	return out, nil
}

func (e *Emulator) putDevice(id string, d Device, ifMatch string) (Device, *APIError) {
	if d.DeviceID == "" {
		d.DeviceID = id
	}
	if d.DeviceID != id {
		return d, badRequest(400004, "deviceId %q in the body differs from %q in the path", d.DeviceID, id)
	}
	if aerr := checkDeviceID(id); aerr != nil {
		return d, aerr
	}
	switch d.Status {
	case "":
		d.Status = StatusEnabled
	case StatusEnabled, StatusDisabled:
	default:
		return d, badRequest(400004, "status %q must be \"enabled\" or \"disabled\"", d.Status)
	}
	a := &d.Authentication
	if a.Type == "" {
		a.Type = AuthSAS
		if a.X509Thumbprint.PrimaryThumbprint != nil && *a.X509Thumbprint.PrimaryThumbprint != "" {
			a.Type = AuthSelfSigned
		}
	}
	switch a.Type {
	case AuthSAS:
		if a.SymmetricKey.PrimaryKey == nil || *a.SymmetricKey.PrimaryKey == "" {
			a.SymmetricKey.PrimaryKey = ptr(randKey())
		}
		if a.SymmetricKey.SecondaryKey == nil || *a.SymmetricKey.SecondaryKey == "" {
			a.SymmetricKey.SecondaryKey = ptr(randKey())
		}
		for _, k := range []*string{a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey} {
			if _, err := decodeKey(*k); err != nil {
				return d, badRequest(400004, "symmetric keys must be base64")
			}
		}
		a.X509Thumbprint = X509Thumbprint{}
	case AuthSelfSigned:
		p := a.X509Thumbprint.PrimaryThumbprint
		if p == nil || !isThumbprint(*p) {
			return d, badRequest(400004, "a selfSigned device needs authentication.x509Thumbprint.primaryThumbprint (40 or 64 hex digits)")
		}
		if s := a.X509Thumbprint.SecondaryThumbprint; s != nil && *s != "" && !isThumbprint(*s) {
			return d, badRequest(400004, "secondaryThumbprint must be 40 or 64 hex digits")
		}
		a.SymmetricKey = SymmetricKey{}
	case AuthCA, AuthNone:
		a.SymmetricKey, a.X509Thumbprint = SymmetricKey{}, X509Thumbprint{}
	default:
		return d, badRequest(400004, "authentication.type %q must be sas, selfSigned, certificateAuthority or none", a.Type)
	}
	now := time.Now().UTC()
	var out Device
	var aerr *APIError
	var created, disabled bool
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr, created, disabled = nil, false, false
		cur, exists, err := getJSON[Device](tx, bucketDevices, id)
		if err != nil {
			return err
		}
		if strings.TrimSpace(ifMatch) == "" && exists {
			aerr = &APIError{Status: 409, Code: 409001, HubCode: "DeviceAlreadyExists", Message: fmt.Sprintf("A device with ID '%s' is already registered.", id)}
			return nil
		}
		if strings.TrimSpace(ifMatch) != "" && !exists {
			aerr = deviceNotFound(id)
			return nil
		}
		if aerr = checkIfMatch(ifMatch, cur.ETag, exists, "device "+id); aerr != nil {
			return nil
		}
		n := d
		n.ETag = newDeviceETag()
		if exists {
			n.GenerationID = cur.GenerationID
			n.StatusUpdatedTime = cur.StatusUpdatedTime
			if cur.Status != n.Status {
				n.StatusUpdatedTime = now
			}
			disabled = cur.Status == StatusEnabled && n.Status == StatusDisabled
		} else {
			n.GenerationID = newGenerationID()
			n.StatusUpdatedTime = now
			created = true
			if err := putJSON(tx, bucketTwins, id, twinRecord{DesiredVersion: 1, ReportedVersion: 1, Version: 1, DesiredUpdated: now, ReportedUpdated: now}); err != nil {
				return err
			}
		}
		out = n
		return putJSON(tx, bucketDevices, id, n)
	})
	if err != nil {
		return out, internalError(err)
	}
	if aerr != nil {
		return out, aerr
	}
	switch {
	case created:
		e.event(EventRegistry, id, "created ("+out.Authentication.Type+")")
	case disabled:
		e.event(EventRegistry, id, "disabled")
		e.kickDevice(id, "device disabled in the registry")
	default:
		e.event(EventRegistry, id, "updated")
	}
	return e.withRuntime(out), nil
}

func isThumbprint(s string) bool {
	s = strings.ReplaceAll(s, ":", "")
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// DeleteDevice deletes a device identity and its twin, closes its
// connection and drops its queued messages and MQTT session.
func (e *Emulator) DeleteDevice(id, ifMatch string) error {
	if aerr := e.deleteDevice(id, ifMatch); aerr != nil {
		return aerr
	}
	return nil
}

func (e *Emulator) deleteDevice(id, ifMatch string) *APIError {
	var aerr *APIError
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr = nil
		cur, exists, err := getJSON[Device](tx, bucketDevices, id)
		if err != nil {
			return err
		}
		if !exists {
			aerr = deviceNotFound(id)
			return nil
		}
		if aerr = checkIfMatch(ifMatch, cur.ETag, true, "device "+id); aerr != nil {
			return nil
		}
		if err := deleteKey(tx, bucketTwins, id); err != nil {
			return err
		}
		return deleteKey(tx, bucketDevices, id)
	})
	if err != nil {
		return internalError(err)
	}
	if aerr != nil {
		return aerr
	}
	e.event(EventRegistry, id, "deleted")
	e.kickDevice(id, "device deleted from the registry")
	e.forgetSession(id)
	e.purgeC2D(id)
	e.mu.Lock()
	delete(e.activity, id)
	e.mu.Unlock()
	return nil
}

func (e *Emulator) getTwinRecord(id string) (twinRecord, *APIError) {
	tr, ok, err := viewGet[twinRecord](e, bucketTwins, id)
	if err != nil {
		return tr, internalError(err)
	}
	if !ok {
		return tr, deviceNotFound(id)
	}
	return tr, nil
}

// Twin returns a device twin as the service API shows it.
func (e *Emulator) Twin(id string) (Twin, error) {
	t, aerr := e.getTwin(id)
	if aerr != nil {
		return t, aerr
	}
	return t, nil
}

func (e *Emulator) getTwin(id string) (Twin, *APIError) {
	var d Device
	var tr twinRecord
	var ok bool
	err := e.store.view(func(tx *bolt.Tx) error {
		var err error
		if d, ok, err = getJSON[Device](tx, bucketDevices, id); err != nil || !ok {
			return err
		}
		tr, _, err = getJSON[twinRecord](tx, bucketTwins, id)
		return err
	})
	if err != nil {
		return Twin{}, internalError(err)
	}
	if !ok {
		return Twin{}, deviceNotFound(id)
	}
	return renderTwin(e.withRuntime(d), tr), nil
}

func renderTwin(d Device, tr twinRecord) Twin {
	meta := func(t time.Time, v int64) map[string]any {
		return map[string]any{"$lastUpdated": t, "$lastUpdatedVersion": v}
	}
	desired := withVersion(tr.Desired, tr.DesiredVersion)
	desired["$metadata"] = meta(tr.DesiredUpdated, tr.DesiredVersion)
	reported := withVersion(tr.Reported, tr.ReportedVersion)
	reported["$metadata"] = meta(tr.ReportedUpdated, tr.ReportedVersion)
	return Twin{
		DeviceID:                  d.DeviceID,
		ETag:                      twinETag(tr.Version),
		DeviceETag:                d.ETag,
		Status:                    d.Status,
		StatusUpdateTime:          d.StatusUpdatedTime,
		ConnectionState:           d.ConnectionState,
		LastActivityTime:          d.LastActivityTime,
		CloudToDeviceMessageCount: d.CloudToDeviceMessageCount,
		AuthenticationType:        d.Authentication.Type,
		X509Thumbprint:            d.Authentication.X509Thumbprint,
		Version:                   tr.Version,
		Tags:                      tr.Tags,
		Properties:                TwinProperties{Desired: desired, Reported: reported},
		Capabilities:              d.Capabilities,
	}
}

// twinETag renders a twin version like the hub's etags ("AAAAAAAAAAE=").
func twinETag(v int64) string {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return encodeStd(b)
}

// patchReported merges a device's reported-properties patch and returns the
// new reported version.
func (e *Emulator) patchReported(id string, patch map[string]any) (int64, *APIError) {
	now := time.Now().UTC()
	var v int64
	var aerr *APIError
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr = nil
		tr, ok, err := getJSON[twinRecord](tx, bucketTwins, id)
		if err != nil {
			return err
		}
		if !ok {
			aerr = deviceNotFound(id)
			return nil
		}
		tr.Reported = mergePatch(tr.Reported, patch)
		if raw, _ := json.Marshal(tr.Reported); len(raw) > maxTwinSection {
			aerr = badRequest(400004, "reported properties would exceed 32 KiB")
			return nil
		}
		tr.ReportedVersion++
		tr.Version++
		tr.ReportedUpdated = now
		v = tr.ReportedVersion
		return putJSON(tx, bucketTwins, id, tr)
	})
	if err != nil {
		return 0, internalError(err)
	}
	return v, aerr
}

// twinPatch is the body of PATCH and PUT /twins/{id}.
type twinPatch struct {
	Tags       map[string]any `json:"tags"`
	Properties *struct {
		Desired map[string]any `json:"desired"`
	} `json:"properties"`
}

// UpdateTwin applies a service-side twin change (tags and desired
// properties) as PATCH /twins/{id} (replace=false) or PUT (replace=true)
// does, and notifies the device of desired changes.
func (e *Emulator) UpdateTwin(id string, tags, desired map[string]any, ifMatch string, replace bool) (Twin, error) {
	p := twinPatch{Tags: tags}
	if desired != nil {
		p.Properties = &struct {
			Desired map[string]any `json:"desired"`
		}{desired}
	}
	t, aerr := e.updateTwin(id, p, ifMatch, replace)
	if aerr != nil {
		return t, aerr
	}
	return t, nil
}

func (e *Emulator) updateTwin(id string, p twinPatch, ifMatch string, replace bool) (Twin, *APIError) {
	// Desired notifications must reach the device in version order.
	e.twinMu.Lock()
	defer e.twinMu.Unlock()
	now := time.Now().UTC()
	var aerr *APIError
	var tr twinRecord
	var notify map[string]any
	err := e.store.update(func(tx *bolt.Tx) error {
		aerr, notify = nil, nil
		var ok bool
		var err error
		tr, ok, err = getJSON[twinRecord](tx, bucketTwins, id)
		if err != nil {
			return err
		}
		if !ok {
			aerr = deviceNotFound(id)
			return nil
		}
		if aerr = checkIfMatch(ifMatch, twinETag(tr.Version), true, "twin "+id); aerr != nil {
			return nil
		}
		if replace {
			tr.Tags = mergePatch(nil, p.Tags)
		} else if p.Tags != nil {
			tr.Tags = mergePatch(tr.Tags, p.Tags)
		}
		if p.Properties != nil && (p.Properties.Desired != nil || replace) {
			if replace {
				tr.Desired = mergePatch(nil, p.Properties.Desired)
				notify = withVersion(tr.Desired, tr.DesiredVersion+1)
			} else {
				tr.Desired = mergePatch(tr.Desired, p.Properties.Desired)
				notify = withVersion(p.Properties.Desired, tr.DesiredVersion+1)
			}
			if raw, _ := json.Marshal(tr.Desired); len(raw) > maxTwinSection {
				aerr = badRequest(400004, "desired properties would exceed 32 KiB")
				return nil
			}
			tr.DesiredVersion++
			tr.DesiredUpdated = now
		}
		tr.Version++
		return putJSON(tx, bucketTwins, id, tr)
	})
	if err != nil {
		return Twin{}, internalError(err)
	}
	if aerr != nil {
		return Twin{}, aerr
	}
	if notify != nil {
		e.event(EventTwinDesired, id, fmt.Sprintf("version %d", tr.DesiredVersion))
		e.notifyDesired(id, tr.DesiredVersion, notify)
	}
	return e.getTwin(id)
}

// notifyDesired sends a desired-properties notification to the device if it
// is connected and subscribed.
func (e *Emulator) notifyDesired(id string, version int64, body map[string]any) {
	e.mu.Lock()
	s := e.hub[id]
	e.mu.Unlock()
	if s == nil {
		return
	}
	topic := fmt.Sprintf("%s%d", desiredPrefix, version)
	qos, ok := subscribed(s.cl, topic)
	if !ok {
		return
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return
	}
	if err := e.deliver(s, topic, raw, qos); err != nil {
		e.log.Info("desired notification not delivered", "device_id", id, "err", err)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortStrings(s []string) { sort.Strings(s) }
