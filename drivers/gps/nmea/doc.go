// Package nmea turns raw GNSS receiver output into position fixes.
//
// It has three layers, each usable on its own and none of which touches a
// serial port or the clock:
//
//   - [Framer] cuts an io.Reader into NMEA 0183 sentence lines. Receivers
//     interleave binary protocol frames (u-blox UBX, SiRF OSP, …) with their
//     NMEA output, reset mid-line and sometimes emit lines far longer than the
//     standard's 82 characters. The framer resynchronises on every '$' or '!',
//     drops a line that a non-printable byte interrupts, drops lines longer
//     than its limit, and never holds more than one line in memory.
//   - [Tracker] parses sentences with github.com/adrianmo/go-nmea and merges
//     the RMC, GGA, GNS, GSA (one per constellation), VTG, GLL and ZDA
//     sentences of one receiver epoch into one [Fix]. An epoch is the set of
//     sentences that carry the same UTC time of day; sentences without a time
//     (GSA, VTG) belong to the epoch that is open when they arrive. Sentences
//     that report no fix (GGA quality 0, RMC/GLL status V, FAA mode N) never
//     contribute a position: go-nmea parses them as 0°, 0°.
//   - [Decoder] joins the two for whole streams (files, stdin, replay).
//
// Talker IDs do not matter (GP, GN, GL, GA, BD, GB, …): receivers switch
// between them when constellations come and go.
//
// None of the types are safe for concurrent use; each belongs to the one
// goroutine that reads the stream.
package nmea
