// Package emulator is a local Azure IoT Hub Device Provisioning Service and
// IoT Hub for tests and demos: the device side speaks MQTT 3.1.1 over mutual
// TLS, the service side speaks the REST APIs of the Azure service SDKs, and
// the state survives restarts.
//
// # Endpoints
//
// One MQTT listener (mochi-mqtt) serves both services; the CONNECT username
// tells them apart:
//
//   - DPS: "{idScope}/registrations/{registrationId}/api-version=...".
//     Register and poll on $dps/registrations/PUT|GET/..., answers on
//     $dps/registrations/res/{status}/?$rid=...; the registration ID comes
//     from the connection (client ID = username ID = certificate CN), so an
//     empty register body is fine. Individual enrollments are matched first
//     (a disabled one blocks the device even when its group is enabled), then
//     enrollment groups whose signing certificate the presented chain leads
//     to. An assignment creates the device in the hub registry
//     (selfSigned with thumbprints for individual enrollments,
//     certificateAuthority for groups) and records the registration with an
//     etag and a substatus.
//   - IoT Hub: "{host}/{deviceId}/?api-version=...". Unknown or disabled
//     devices are refused at CONNECT; a second connection of a device closes
//     the first; only the documented topics are accepted (telemetry with
//     URL-decoded property bags, C2D, twin GET and reported PATCH with
//     versions, desired-property notifications, direct methods). QoS 2,
//     another device's topics and unknown topics close the connection.
//
// One HTTPS listener serves the DPS service API (/enrollmentGroups,
// /enrollments, /registrations), the IoT Hub service API (/devices, /twins,
// /twins/{id}/methods, and /devices/{id}/messages/deviceBound for C2D, which
// Azure offers over AMQP only), both authenticated with the SAS tokens of the
// connection strings in emulator.json, and the emulator's control API under
// /emulator/ (faults, status, events; hub owner SAS; /emulator/health is
// open). Errors have Azure's bodies: DPS's {errorCode, trackingId, message,
// timestampUtc}, the hub's {Message: "ErrorCode:...;...", ExceptionMessage}.
//
// # Web console
//
// The HTTPS listener also serves a web console under [ConsolePath]: plain
// HTML, JavaScript and inline SVG embedded in the binary, with a JSON API
// under ConsolePath+"api/" and a server-sent events stream of telemetry and
// events for the live charts and routes. The operator logs in with
// [Info.ConsoleToken] (new on every start) or the hub connection string;
// the session is an HttpOnly, Secure, SameSite=Strict cookie and every
// action (flush, disenroll, deprovision, logout) needs the session's CSRF
// token in a header. The stream runs on its request's goroutine and ends
// with the request, the session or the emulator. To disenroll devices that
// went offline, the console keeps the certificates it saw on live
// connections in the state database.
//
// # State directory
//
// DIR/state.db (bbolt) holds the identity (ID scope, service keys),
// enrollments, registrations, hub devices and twins. DIR/ca/ holds the CA of
// the server certificate DIR/server.pem (SANs localhost, 127.0.0.1 and the
// configured host), created on first run. DIR/emulator.json (mode 0600, it
// holds the service keys) lists the endpoints, the ID scope, both
// connection strings and the server CA file. DIR/telemetry.jsonl gets every
// device-to-cloud message in the shape of "az iot hub monitor-events
// --properties all", written before the message's PUBACK and fsynced in
// batches.
//
// # Faults
//
// [Faults] drops connections, refuses CONNECTs, answers DPS with 429/5xx and
// a retry-after, withholds PUBACKs, adds latency and throttles D2C messages;
// the same is reachable over POST /emulator/faults and from the
// trackerctl emulator flags.
//
// # Use in tests
//
// Tests of other packages run the emulator in-process: New with a
// t.TempDir() state and "127.0.0.1:0" addresses, Start, then Info for the
// endpoints and connection strings (and Close in a cleanup). The emulator
// exposes what such tests assert on: WaitTelemetry and Telemetry for
// device-to-cloud messages, WaitEvent and Events for what happened
// (connections, registrations, kicks, faults), RegistrationCount for how
// often a device registered (across restarts), ConnectedDevices and
// IsConnected, and Go equivalents of the service calls (PutEnrollmentGroup,
// PutEnrollment, Registration, Device, PutDevice, DeleteDevice, Twin,
// UpdateTwin, InvokeMethod, SendC2D). Set Config.DPSPollAfter to a negative
// value so devices poll DPS at once.
//
// # Concurrency and ownership
//
// An Emulator's methods are safe for concurrent use. Start starts the
// broker's and the HTTPS server's goroutines, a housekeeping goroutine and
// the request handlers; Close stops all of them and waits for them. The
// emulator never publishes from inside a broker hook: replies are written
// after the PUBACK from goroutines it owns, straight to the one client they
// are for.
package emulator
