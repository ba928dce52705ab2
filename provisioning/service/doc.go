// Package service is the operator side of the fleet: REST clients for the
// Azure IoT Hub Device Provisioning Service (DPS) service API (enrollment
// groups, individual enrollments, registration records) and for the IoT Hub
// service API (device identity registry, twins, direct methods and
// cloud-to-device messages), authenticated with shared access signatures
// derived from a service connection string.
//
// # Connection strings and SAS tokens
//
// [ParseConnectionString] reads the "HostName=…;SharedAccessKeyName=…;
// SharedAccessKey=…" strings the Azure portal shows for a shared access
// policy (provisioningserviceowner, iothubowner, registryReadWrite…).
// [SASToken] signs a resource URI with the policy key the way Azure expects:
// HMAC-SHA256 over the URL-encoded resource, a newline and the expiry in
// Unix seconds. Clients renew their token before it expires; tokens and keys
// are never logged and [ConnectionString.String] redacts the key.
//
// # Clients
//
// [NewDPS] and [NewHub] return clients for https://{HostName}; for the
// local emulator, [Options.BaseURL] and [Options.HTTPClient] point them at
// its listener and trust its CA. Failed calls return an *[APIError] carrying
// the HTTP status and the service's error code, message and tracking ID;
// [IsNotFound], [IsPreconditionFailed], [IsConflict] and [IsUnauthorized]
// (or errors.Is with [ErrNotFound] and its siblings) tell the outcomes
// apart. Calls answered with 429 are retried after the Retry-After delay,
// a bounded number of times.
//
// Optimistic concurrency follows the services: objects carry an ETag; a
// PUT or DELETE given an ETag sends it as If-Match and fails with 412
// ([ErrPreconditionFailed]) when the object changed in between.
//
// # Lifecycle operations
//
// [Fleet] combines both clients for the operator's steps that span DPS and
// the hub: [Fleet.Disenroll] (a disabled individual enrollment, which blocks
// one device of a group), [Fleet.Reenroll], [Fleet.Deregister] (hub identity
// and registration record), [Fleet.DeprovisionDevice] (the delivery step:
// ask the device to drain and seal, then disenroll and deregister) and
// [Fleet.DeprovisionGroup]. Each treats objects that are already gone as
// done, so an interrupted operation can simply be run again.
//
// The device is asked by direct method, or, when offline, by a
// cloud-to-device message. [HubClient.SendC2D] uses IoT Hub's HTTPS
// message format, which the local emulator serves; Azure IoT Hub takes
// service-side C2D messages over AMQP only, so against Azure the fallback
// is reported as not sent and deprovisioning goes on.
//
// # Concurrency
//
// Clients are safe for concurrent use. The package never logs and starts no
// goroutines, except [Fleet.DeprovisionGroup], which removes devices from a
// bounded number of goroutines it waits for before returning.
package service
