// Package report turns the telemetry a tracker sent during one shipment
// into the cold-chain record a shipper hands to the customer.
//
// # Input
//
// [Parse] reads telemetry.jsonl as the emulator writes it: one JSON object
// per line shaped like "az iot hub monitor-events --properties all"
// output, whose payload is a [telemetry.Batch]. A line that is a bare Batch
// is accepted too. Messages that carry no batch (a Will message, another
// schema version) are counted and skipped. Records are deduplicated on
// (device, seq): a message resent after a lost PUBACK, or a record sent on
// both publisher lanes, counts once; when two copies differ, the one with a
// trusted timestamp wins.
//
// # Analysis
//
// [Analyze] selects the records of one shipment of one device (a device
// carries many shipments over time; they are never mixed) and computes:
//
//   - loading (the first record) and delivery (the seal record, or the
//     last record when the shipment was never sealed);
//   - excursions: maximal runs of consecutive readings outside the
//     threshold band, per quantity and direction, with start, end,
//     duration and the extreme value; and runs of the alerts the device
//     itself raised (its thresholds come from its twin and may differ);
//   - time above and below each threshold;
//   - data completeness: missing sequence numbers and the buffer's gap
//     events that explain them (evicted records), time gaps between
//     readings, sensor faults, duplicates, and the clock source of every
//     timestamp.
//
// Time is integrated sample-and-hold: a reading stands for the interval
// up to the next record, but for at most [Options.MaxHold]; longer
// intervals count as unobserved, never as in or out of band. An
// excursion starts at its first reading outside the band and ends at the
// end of its last reading's interval (the next reading, normally the first
// one back in band). Its duration is end minus start; the part of it not
// covered by readings is reported as unobserved.
//
// Readings taken while the board's clock was unsynced and never retimed
// carry no trustworthy time: they are excluded from everything on the time
// axis and counted (with how many were outside the band) under
// completeness.
//
// The records carry no thresholds. [DefaultThresholds] (2–8 °C, the usual
// band for refrigerated pharmaceuticals, and 870–1085 hPa, the range of
// sea-level and road-altitude air pressure) apply unless the caller gives
// others.
//
// # Output
//
// [Report.WriteHTML] renders a self-contained HTML page (inline SVG
// charts, no script, no external asset, print-friendly CSS). The output is
// a pure function of the report and [RenderOptions]: no clock is read, so
// golden files stay stable. A [Report] also marshals to JSON for scripts.
//
// Nothing in the package starts goroutines or keeps state between calls;
// a Report is not modified by rendering and may be shared once built.
package report
