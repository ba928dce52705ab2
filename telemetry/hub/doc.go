// Package hub is the Azure IoT Hub device client of the tracker: MQTT 3.1.1
// over TLS with an X.509 device certificate, built on paho.mqtt.golang.
//
// # What it speaks
//
//   - Device-to-cloud telemetry at QoS 1 on devices/{id}/messages/events/,
//     with the system properties ($.mid, $.ct, $.ce, $.cid) and the
//     application properties URL-encoded in the topic's property bag.
//   - Cloud-to-device messages (devices/{id}/messages/devicebound/#).
//   - The device twin: a full GET, reported-property PATCHes and
//     desired-property notifications.
//   - Direct methods, answered on $iothub/methods/res/{status}/?$rid=.
//
// # Connections and acknowledgements
//
// [Client.Run] owns the connection. It connects, subscribes, and when the
// connection ends it waits a jittered exponential backoff and connects again,
// until its context is cancelled or the hub refuses the device's identity
// several times in a row ([ErrUnauthorized]; the caller then provisions
// again through DPS). paho's own automatic reconnect is off and every
// connection uses a fresh paho client: paho can report a publish as complete
// across a reconnect without a PUBACK (upstream issue 563), so here a
// [Client.Publish] returns nil only after the PUBACK arrived on the very
// connection that carried the message. When that connection ends first,
// Publish returns [ErrConnectionLost] and the caller keeps the record and
// sends it again later: delivery is at least once, and the message id lets
// the cloud side deduplicate.
//
// At most [Config.MaxInFlight] publishes wait for their PUBACK at a time;
// further calls block until a slot frees or their context ends.
//
// # Sessions
//
// [Config.CleanSession] defaults to false like the Azure device SDKs: the hub
// then keeps the device's subscriptions and queues cloud-to-device messages
// while it is offline. The client does not resend unacknowledged publishes
// after a reconnect (a new paho client starts with an empty store); the
// caller does, under a new packet id.
//
// # Callbacks and goroutines
//
// Callbacks ([Client.OnDesired], [Client.OnC2D], [Client.OnMethod]) are set
// before Run and never run on paho's goroutines: Run owns one dispatcher
// goroutine that delivers desired-property updates and cloud-to-device
// messages in order, and a few method workers. All of them have stopped
// when Run returns, and the last connection has been closed with a
// DISCONNECT (paho's goroutines for it end with it).
// A callback may call Publish, GetTwin and UpdateReported.
//
// All methods of [Client] are safe for concurrent use; Run must not be called
// twice at the same time.
package hub
