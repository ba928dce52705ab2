// Package telemetry defines what a tracker sends: the [Record] captured at
// every sample, and the [Batch] message that carries one or more records to
// IoT Hub.
//
// # Wire format
//
// A device-to-cloud message body is a JSON [Batch] (content type
// application/json, encoding utf-8, so IoT Hub routing can query the body).
// Every record carries the device's sequence number, which only goes up and
// is never reused, its capture time and the clock source of that time, and
// the shipment it belongs to. The message id ($.mid) is derived from the
// device and the sequence numbers it carries ([MessageID]), so a retried
// message is recognisable downstream; a consumer deduplicates on
// (device, seq) for records.
//
// Subpackages: buffer (the durable offline buffer), hub (the IoT Hub device
// client) and publisher (which moves records from the buffer to the hub).
package telemetry
