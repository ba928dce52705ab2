// Package gps provides position sources for the agent: a GNSS receiver on
// a serial port ([Serial]), a replayed NMEA capture ([Replay]) and a
// synthetic route ([Sim]). All three implement [Source]: Run calls emit
// with one [Fix] per receiver epoch until its context ends.
//
// Parsing and merging sentences is package nmea's job; this package owns
// ports, timing and reconnection. [Serial] reopens a port that disappears
// (a USB receiver unplugged, a UART driver reset) with exponential backoff,
// and never returns an error for hardware trouble: it reports it in
// [Serial.Stats] and keeps trying until its context ends.
//
// Goroutines: Serial.Run starts one reader goroutine per open port and
// stops and waits for it before it reopens the port or returns. Replay and
// Sim start none. Stats and Latest are safe to call from any goroutine.
package gps
