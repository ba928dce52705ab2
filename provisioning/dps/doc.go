// Package dps is the device side of the Azure IoT Hub Device Provisioning
// Service: it registers a device that attests with an X.509 certificate and
// returns the IoT hub and device ID DPS assigns it.
//
// It speaks DPS's MQTT 3.1.1 device API as the service does
// (azure-protocol.md §1): ClientId = registration ID, user name
// "{idScope}/registrations/{registrationId}/api-version=2019-03-31" with an
// optional "&ClientVersion=...", clean session, no password (the TLS client
// certificate is the credential), a QoS 1 subscription to
// $dps/registrations/res/#, a QoS 1 register request carrying
// {"registrationId":..., "payload":...}, then operation-status polls until
// the operation is assigned, failed or disabled. Responses are matched to
// requests by $rid. The client waits retry-after seconds between requests,
// never less than Config.MinPollInterval (2 s, DPS's limit of 5 polls in
// 10 s), and disconnects when done.
//
// # Errors
//
// Register's error tells the caller what to do next:
//   - ErrUnauthorized (CONNACK 2/4/5, a TLS alert about the device
//     certificate, a 401): the certificate or the enrollment must change;
//   - ErrDisabled: the operator disabled the enrollment;
//   - ErrServerUntrusted (a *TLSError): fix the trust bundle or the clock;
//   - *ThrottledError: wait at least RetryAfter, then try again;
//   - *FailedError: DPS refused or failed the registration, with its error
//     code and tracking ID;
//   - anything else (network errors, ErrTimeout, ErrConnectionLost,
//     ErrProtocol, ErrStillAssigning): transient, retry with backoff.
//
// # Resources
//
// Register owns everything it starts: the paho client, its goroutines and
// the TLS connection end before it returns, whatever the outcome, including
// when its context is cancelled. Automatic reconnection is off (a token may
// report success across a reconnect without a PUBACK, paho issue 563), and
// every wait on a paho token is bounded. Register is safe to call from
// several goroutines at once (each call has its own connection).
package dps
