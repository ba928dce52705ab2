// Package agent is trackerd: it owns the daemon's components and their
// goroutines.
//
// [Agent.Run] starts, under one errgroup, and stops them all when its
// context ends:
//
//   - the sampler reads the environment sensor on its own ticker, keeps the
//     latest GPS fix, and appends a [telemetry.Record] to the durable buffer
//     every telemetry interval, and at once for an alert;
//   - the GPS reader feeds fixes and GPS time (to the clock);
//   - the provisioner uses the cached DPS assignment, or registers with DPS
//     when there is none or the hub refuses the identity, with backoff, and
//     runs the IoT Hub connection for the assignment;
//   - the publisher moves committed records from the buffer to the hub and
//     acknowledges them in the buffer only after a PUBACK;
//   - the local API serves trackerd status and the technician's commands;
//   - the watchdog supervisor feeds systemd only while all of them make
//     progress.
//
// Desired twin properties (telemetryInterval, thresholds, shipmentId) are
// applied live; direct methods and cloud-to-device commands (status, flush,
// reprovision, deprovision) are handled in control.go.
package agent
