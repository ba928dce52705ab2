// Package buffer is trackerd's durable offline buffer: an append-only queue
// of telemetry records in one bbolt file that survives power loss, stays
// under a byte budget, and never refuses to start.
//
// # Records and sequence numbers
//
// [Buffer.Append] assigns every record a sequence number (seq) that is
// strictly increasing and never reused, across restarts, crashes and even
// the loss of the buffer file. Three things keep it so:
//
//   - the file's state record holds the highest seq ever committed and a
//     reservation: in SyncBatch mode each commit reserves 2×BatchRecords
//     seqs ahead, and an Append that reaches the reservation commits
//     before it returns, so no seq handed out is above the durable
//     reservation;
//   - a separate high-water file (<path>.seq, written atomically with
//     fsync) holds a floor 4096 seqs ahead, rewritten before any seq at or
//     above it is handed out; it is what numbering resumes from when the
//     buffer file is damaged or deleted;
//   - Close records the exact next seq, so a clean restart leaves no hole.
//
// After a power cut in SyncBatch mode numbering resumes above the
// reservation, so the seqs of the lost batch window (if any) are skipped,
// not reused, and a gap event names the range.
//
// Every stored record carries a CRC-32C over its key, header and data; a
// record that fails it is never returned.
//
// # Sync policy and the loss bound
//
// SyncAlways: Append returns after the record is committed (bbolt writes
// the pages, fdatasync, writes the meta page, fdatasync). Concurrent
// Appends share one commit (group commit). A power cut loses nothing
// Append returned.
//
// SyncBatch: records are committed when BatchRecords of them are pending
// (the Append that fills the batch commits before it returns) or when the
// flusher's BatchInterval ticker fires. A power cut loses at most the
// records appended since the last commit: with a single appending
// goroutine fewer than BatchRecords records, and with several fewer than
// 2×BatchRecords; and no record older than BatchInterval (plus the
// duration of one commit). After a failed commit, Appends commit
// synchronously until a commit succeeds, so write errors reach the caller.
//
// Acknowledgements are committed with the next commit, or by the flusher
// every BatchInterval. An acknowledgement lost in a crash means the record
// is delivered again: delivery is at-least-once, and consumers deduplicate
// on (device, seq).
//
// Only committed records are ever returned by the Peek methods, so nothing
// a publisher has sent can vanish in a crash.
//
// # Byte cap and eviction
//
// [Options.MaxBytes] is the budget for the file on disk. Live records (key,
// value and bbolt's 16-byte element header each: [Stats].Bytes) are capped
// at a third of it ([Options.LiveLimit]). The rest absorbs what bbolt needs
// beyond the live data: pages left half empty by thinning, copy-on-write
// copies of the pages a commit touches, and the file's growth step
// (MaxBytes/16, at most 4 MiB). bbolt never shrinks its file but reuses
// freed pages, so the file stays at its high-water mark, below MaxBytes.
//
// When a commit takes live bytes over the cap, the same transaction evicts
// routine records until live bytes are at most 7/8 of the cap:
//
//  1. Alerts and events are never evicted.
//  2. The newest routine records, a quarter of the cap's worth, keep full
//     resolution.
//  3. Older routine records are thinned, oldest region first: a pass
//     removes every other routine record of the region (keeping the
//     first), and a region is thinned again, up to three times (one record
//     in eight left), before the next newer region is touched.
//  4. Only when every region older than the protected window has been
//     thinned three times are the oldest routine records dropped outright
//     (from the protected window too, if alerts and events alone leave no
//     room).
//
// Each kind of removal in a commit is reported by one gap event (class
// Event, a telemetry.Record of kind "gap" with the first and last seq and
// the exact count) so the cloud learns what is missing and why. The
// reasons are the Gap* constants. Events are never evicted, so a long time
// offline against a small cap would fill it with gap events; once 16
// undelivered thinned/dropped events exist, the next eviction folds them
// (ranges and counts) into the one it writes. A consumer that had already
// received a folded event sees its range again inside a wider one.
//
// If bbolt reports its MaxSize reached (or the disk reports ENOSPC), the
// commit is retried once after a transaction that only deletes
// (acknowledged records and an extra eighth of the cap; it may exceed the
// budget by the few pages a delete needs, so acknowledgements can always be
// recorded); if it still fails, Append returns an error wrapping [ErrFull].
// That happens only when alerts and events alone fill the budget, or the
// file system is full.
//
// Lowering MaxBytes between sessions does not shrink an existing file; it
// stops its growth, and Open's first commit evicts down to the new cap.
//
// # Recovery
//
// Open never refuses to start because of damage. Before bbolt maps the
// file, Open walks it with ordinary reads and checks every page bbolt will
// touch (meta checksums, page ids and types, element bounds, key order):
// bbolt trusts its file, and a garbled page can otherwise crash the
// process inside bbolt. A file that fails is
// renamed to <path>.corrupt-<UTC time> and kept for forensics (the two
// newest such files are kept, older ones deleted), its intact records are
// salvaged into a new file, numbering resumes above the high-water file,
// and the loss is reported in the returned [Recovery] and as a gap event.
// A record whose checksum fails in an otherwise sound file is removed and
// reported the same way. A damaged meta page in an otherwise sound file
// means bbolt may have fallen back to the previous commit: Open reports
// it, and numbering resumes above the high-water file so that the seqs
// of a rolled-back commit are not handed out again. A truncated file, a garbled page, a zero-length
// file and a missing file all open.
//
// A second process opening the same buffer gets [ErrLocked] (an flock on
// <path>.lock, and bbolt's own flock with a timeout).
//
// # Concurrency and ownership
//
// All methods are safe for concurrent use. The Buffer owns one goroutine,
// the flusher, started by Open and stopped (and waited for) by Close.
// [Buffer.Changed] lets a publisher wait for new committed records without
// polling. The package does not log; Open's Recovery and [Stats] carry
// what the owner should report.
package buffer
